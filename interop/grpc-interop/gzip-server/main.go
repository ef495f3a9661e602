// Command gzip-server serves grpc-go's interop TestService (interop.NewTestServer, the
// implementation behind google.golang.org/grpc/interop/server) with the gzip codec
// registered, which grpc-go's own interop server leaves out, and honours the requests'
// response_compressed flags as the interop test descriptions ask (grpc-go's test service
// ignores them): a UnaryCall with response_compressed, or a StreamingOutputCall with a
// compressed response parameter, is answered gzip-compressed. It also takes requests
// up to 32 MiB (grpc-go's default limit is 4 MiB), for a 16 MiB request. Everything
// else is as the interop server: the same flags, except that it listens on 127.0.0.1
// only.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	_ "google.golang.org/grpc/encoding/gzip" // registers "gzip"
	"google.golang.org/grpc/interop"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

var (
	useTLS   = flag.Bool("use_tls", false, "Connection uses TLS if true, else plain TCP")
	certFile = flag.String("tls_cert_file", "", "The TLS cert file (required with -use_tls)")
	keyFile  = flag.String("tls_key_file", "", "The TLS key file (required with -use_tls)")
	port     = flag.Int("port", 10000, "The server port")
)

func main() {
	flag.Parse()
	lis, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(*port))
	if err != nil {
		log.Fatalf("failed to listen: %v", err)
	}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(32 << 20),
		grpc.UnaryInterceptor(compressUnary),
		grpc.StreamInterceptor(compressStream),
	}
	if *useTLS {
		creds, err := credentials.NewServerTLSFromFile(*certFile, *keyFile)
		if err != nil {
			log.Fatalf("failed to load the TLS key pair: %v", err)
		}
		opts = append(opts, grpc.Creds(creds))
	}
	server := grpc.NewServer(opts...)
	testgrpc.RegisterTestServiceServer(server, interop.NewTestServer())
	if err := server.Serve(lis); err != nil {
		log.Fatalf("serve: %v", err)
	}
}

func compressUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if r, ok := req.(*testgrpc.SimpleRequest); ok && r.GetResponseCompressed().GetValue() {
		if err := grpc.SetSendCompressor(ctx, "gzip"); err != nil {
			return nil, err
		}
	}
	return handler(ctx, req)
}

func compressStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &compressingStream{ss})
}

// compressingStream switches the response to gzip when a received request asks for a
// compressed response.
type compressingStream struct{ grpc.ServerStream }

func (s *compressingStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if r, ok := m.(*testgrpc.StreamingOutputCallRequest); ok {
		for _, p := range r.GetResponseParameters() {
			if p.GetCompressed().GetValue() {
				return grpc.SetSendCompressor(s.Context(), "gzip")
			}
		}
	}
	return nil
}
