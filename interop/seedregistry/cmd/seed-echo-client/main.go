// seed-echo-client dials registry://NAME through the seed article's resolver
// (interop/seedregistry/resolver over its etcd registry) and calls the echo service.
// Interop tests run it to check that the seed's registry reads what Rust registers.
//
//	seed-echo-client -etcd 127.0.0.1:2379 -target registry://seed -n 3
//	seed-echo-client -etcd 127.0.0.1:2379 -target registry://seed -n 0 -every 100ms
//
// Each answer is printed as the name of the server that answered, one a line. With
// -n 0 it calls every -every until killed and a failed call prints "error: …" instead
// of ending the program (instances come and go while it runs). The article's client
// keeps grpc's default pick_first policy; this one asks for round_robin so that every
// resolved instance is called (weights and groups travel as address attributes, which
// round_robin does not read). It names the service and the call authority after NAME;
// -as-written takes the article's resolver unchanged, which needs registry:///NAME
// (see resolver.AsWritten).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"dtmdriver-rs/interop/echopb"
	"dtmdriver-rs/interop/seedregistry/registry"
	"dtmdriver-rs/interop/seedregistry/resolver"
)

func main() {
	hosts := flag.String("etcd", "127.0.0.1:2379", "etcd hosts, comma separated")
	target := flag.String("target", "", "registry://NAME")
	n := flag.Int("n", 1, "number of calls; 0 calls until killed")
	every := flag.Duration("every", 0, "pause between calls")
	asWritten := flag.Bool("as-written", false, "use the article's resolver exactly (see resolver.AsWritten)")
	flag.Parse()

	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*hosts, ","), DialTimeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcd:", err)
		os.Exit(1)
	}
	reg, err := registry.New(cli)
	if err != nil {
		fmt.Fprintln(os.Stderr, "session:", err)
		os.Exit(1)
	}
	defer reg.Close()
	builder := resolver.NewBuilder(reg, 10*time.Second)
	if *asWritten {
		builder = resolver.AsWritten(reg, 10*time.Second)
	}
	conn, err := grpc.NewClient(*target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithResolvers(builder),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(1)
	}
	defer conn.Close()
	client := echopb.NewEchoClient(conn)
	for i := 0; *n == 0 || i < *n; i++ {
		if i > 0 {
			time.Sleep(*every)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		reply, err := client.Say(ctx, &echopb.SayRequest{Message: "hi"}, grpc.WaitForReady(true))
		cancel()
		switch {
		case err == nil:
			fmt.Println(reply.Server)
		case *n == 0:
			fmt.Println("error:", err)
		default:
			fmt.Fprintln(os.Stderr, "call:", err)
			os.Exit(1)
		}
	}
}
