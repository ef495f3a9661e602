//go:build tools

// Package tools pins the interop server's package in go.mod (go mod tidy keeps its
// dependencies); the binary itself is built from build-packages.
package tools

import _ "google.golang.org/grpc/interop/server"
