// grpc-go's interop test server (google.golang.org/grpc/interop/server, built as
// bin/grpc-interop-server) and a twin of its test service with gzip (gzip-server), for the
// Rust interop client in driver-core/tests/interop_grpc.rs; build-packages names them, as
// interop/dtm does for dtm. fds writes grpc-go's descriptors of the test protos, from which
// scripts/gen-grpc-testing.sh generates test-support/src/grpc_testing/.
module dtmdriver-rs/interop/grpc-interop

go 1.25

require (
	google.golang.org/grpc v1.80.0
	google.golang.org/protobuf v1.36.11
)

require (
	cloud.google.com/go/compute/metadata v0.9.0 // indirect
	github.com/cncf/xds/go v0.0.0-20251210132809-ee656c7534f5 // indirect
	github.com/envoyproxy/protoc-gen-validate v1.3.0 // indirect
	golang.org/x/net v0.49.0 // indirect
	golang.org/x/oauth2 v0.34.0 // indirect
	golang.org/x/sync v0.19.0 // indirect
	golang.org/x/sys v0.40.0 // indirect
	golang.org/x/text v0.33.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260120221211-b8f7ae30c516 // indirect
)
