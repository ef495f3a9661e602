// gozero-echo-server is a go-zero zrpc server of the echo service (proto/echo.proto)
// that registers itself in etcd the way every go-zero service does. Interop tests run
// it to check that Rust clients find and call go-zero services.
//
//	gozero-echo-server -etcd 127.0.0.1:2379 -key echo.rpc -listen 127.0.0.1:9000 -name go1
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/zeromicro/go-zero/core/conf"
	"github.com/zeromicro/go-zero/core/logx"
	"github.com/zeromicro/go-zero/zrpc"
	"google.golang.org/grpc"

	"dtmdriver-rs/interop/gozero/echopb"
)

type echo struct {
	echopb.UnimplementedEchoServer
	name string
}

func (e *echo) Say(_ context.Context, r *echopb.SayRequest) (*echopb.SayReply, error) {
	return &echopb.SayReply{Message: r.Message, Server: e.name}, nil
}

func main() {
	hosts := flag.String("etcd", "", "etcd hosts, comma separated")
	key := flag.String("key", "", "the etcd key to register under")
	listen := flag.String("listen", "127.0.0.1:9000", "address to serve on")
	name := flag.String("name", "go", "name carried by replies")
	flag.Parse()

	var c zrpc.RpcServerConf
	if err := conf.FillDefault(&c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	c.Name = *name
	c.ListenOn = *listen
	c.Etcd.Hosts = strings.Split(*hosts, ",")
	c.Etcd.Key = *key
	c.Log.Mode = "console"
	c.Log.Level = "error"
	c.Mode = "test"
	logx.MustSetup(c.Log)

	s := zrpc.MustNewServer(c, func(g *grpc.Server) {
		echopb.RegisterEchoServer(g, &echo{name: *name})
	})
	defer s.Stop()
	fmt.Println("serving", *listen)
	s.Start()
}
