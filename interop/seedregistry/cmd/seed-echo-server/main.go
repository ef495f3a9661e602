// seed-echo-server serves the echo service (proto/echo.proto) and registers itself with
// the seed article's etcd registry (interop/seedregistry/registry): the untagged JSON
// under /micro/NAME/ADDRESS with a session lease. Interop tests run it to check that
// Rust clients find and call instances the seed's registry wrote, weights and groups
// included.
//
//	seed-echo-server -etcd 127.0.0.1:2379 -service seed -listen 127.0.0.1:9000 \
//	    -weight 5 -group blue -name go1
//
// It prints "registered ADDRESS" once the key is written, and on SIGINT/SIGTERM closes
// the registry (revoking the lease) and stops.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"dtmdriver-rs/interop/echopb"
	"dtmdriver-rs/interop/seedregistry/registry"
)

func fail(what string, err error) {
	fmt.Fprintln(os.Stderr, what+":", err)
	os.Exit(1)
}

func main() {
	hosts := flag.String("etcd", "127.0.0.1:2379", "etcd hosts, comma separated")
	service := flag.String("service", "", "the service name to register under")
	listen := flag.String("listen", "127.0.0.1:9000", "address to serve on (and register)")
	weight := flag.Int("weight", 0, "the instance's Weight (int32; the seed's default is 0)")
	group := flag.String("group", "", "the instance's Group")
	name := flag.String("name", "go", "name carried by replies")
	flag.Parse()
	if *service == "" {
		fail("flags", fmt.Errorf("-service is required"))
	}

	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		fail("listen", err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*hosts, ","), DialTimeout: 5 * time.Second})
	if err != nil {
		fail("etcd", err)
	}
	reg, err := registry.New(cli)
	if err != nil {
		fail("session", err)
	}
	si := registry.ServiceInstance{
		Name:    *service,
		Address: lis.Addr().String(),
		Weight:  int32(*weight),
		Group:   *group,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err = reg.Register(ctx, si)
	cancel()
	if err != nil {
		fail("register", err)
	}

	s := grpc.NewServer()
	echopb.RegisterEchoServer(s, &echopb.Server{Name: *name})
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		_ = reg.Close()
		s.Stop()
	}()
	fmt.Println("registered", si.Address)
	if err := s.Serve(lis); err != nil {
		fail("serve", err)
	}
}
