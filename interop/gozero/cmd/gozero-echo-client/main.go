// gozero-echo-client calls the echo service (proto/echo.proto) through a go-zero zrpc
// client and prints the name of each server that answered, one a line. Interop tests
// run it to check that go-zero finds and calls Rust services.
//
//	gozero-echo-client -target etcd://127.0.0.1:2379/echo.rpc -n 3
//	gozero-echo-client -etcd 127.0.0.1:2379 -key echo.rpc   (go-zero builds the target)
//	gozero-echo-client -target 'consul://127.0.0.1:8500/echo.rpc?wait=14s' -n 3
//
// consul targets resolve through zero-contrib's consul resolver (imported for its init).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/zeromicro/go-zero/core/conf"
	"github.com/zeromicro/go-zero/core/logx"
	"github.com/zeromicro/go-zero/zrpc"
	_ "github.com/zeromicro/zero-contrib/zrpc/registry/consul"

	"dtmdriver-rs/interop/echopb"
)

func main() {
	target := flag.String("target", "", "a zrpc target, e.g. etcd://127.0.0.1:2379/echo.rpc")
	hosts := flag.String("etcd", "", "etcd hosts, comma separated (instead of -target)")
	key := flag.String("key", "", "the etcd key (with -etcd)")
	n := flag.Int("n", 1, "number of calls")
	flag.Parse()
	logx.Disable()

	var c zrpc.RpcClientConf
	if err := conf.FillDefault(&c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	c.Target = *target
	if *hosts != "" {
		c.Etcd.Hosts = strings.Split(*hosts, ",")
		c.Etcd.Key = *key
	}
	c.NonBlock = false
	c.Timeout = 5000
	cli, err := zrpc.NewClient(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(1)
	}
	client := echopb.NewEchoClient(cli.Conn())
	for i := 0; i < *n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		reply, err := client.Say(ctx, &echopb.SayRequest{Message: "hi"})
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "call:", err)
			os.Exit(1)
		}
		fmt.Println(reply.Server)
	}
}
