// Command fds writes the descriptors of grpc-go's interop test protos (grpc/testing
// test.proto, messages.proto, empty.proto, from google.golang.org/grpc/interop/grpc_testing)
// to stdout as a serialized google.protobuf.FileDescriptorSet, dependencies first.
// scripts/gen-grpc-testing.sh feeds it to tonic-prost-build to generate the Rust code in
// test-support/src/grpc_testing/, so the Rust types match the server built here exactly.
package main

import (
	"os"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

func main() {
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := 0; i < imports.Len(); i++ {
			add(imports.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	add(testgrpc.File_grpc_testing_test_proto)
	out, err := proto.Marshal(set)
	if err != nil {
		panic(err)
	}
	if _, err := os.Stdout.Write(out); err != nil {
		panic(err)
	}
}
