module dtmdriver-rs/interop/echopb

go 1.26.8

require (
	google.golang.org/grpc v1.80.0
	google.golang.org/protobuf v1.36.11
)
