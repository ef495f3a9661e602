// Package echopb is proto/echo.proto compiled for Go (protoc-gen-go v1.36.12,
// protoc-gen-go-grpc v1.6.2): the echo service of the go-zero and kratos interop
// programs, which take it by a replace directive, and Server (server.go, written by
// hand), the echo service every interop server registers. Its own module, below interop/shared/,
// so interop/build.sh (which builds interop/*/) does not try to build it alone.
package echopb
