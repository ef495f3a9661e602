// gozero-echo-client calls the echo service (proto/echo.proto) through a go-zero zrpc
// client and prints the name of each server that answered, one a line. Interop tests
// run it to check that go-zero finds and calls Rust services.
//
//	gozero-echo-client -target etcd://127.0.0.1:2379/echo.rpc -n 3
//	gozero-echo-client -etcd 127.0.0.1:2379 -key echo.rpc   (go-zero builds the target)
//	gozero-echo-client -target 'consul://127.0.0.1:8500/echo.rpc?wait=14s' -n 3
//
// consul targets resolve through zero-contrib's consul resolver (imported for its init).
//
// -load 20s runs closed-loop load instead (-workers callers, each call with a 1 s
// deadline, a failed call followed by a 5 ms pause, as the fault suite's load): it
// prints "load" when the load starts and, at its end, one line per 50 ms bucket: "BUCKET OK FAILED WATCHED", WATCHED counting the
// successful calls answered by the server named -watch. The fault suite runs it to set
// go-zero's own client beside ours through the same fault.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
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
	load := flag.Duration("load", 0, "run closed-loop load this long and print counts per 50 ms")
	workers := flag.Int("workers", 16, "concurrent callers (with -load)")
	watch := flag.String("watch", "", "the server whose successful calls to count apart (with -load)")
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
	if *load > 0 {
		runLoad(client, *load, *workers, *watch)
		return
	}
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

// bucket is 50 ms, as the fault suite's load counts.
const bucket = 50 * time.Millisecond

// runLoad runs workers closed-loop callers for d and prints the counts per bucket.
func runLoad(client echopb.EchoClient, d time.Duration, workers int, watch string) {
	fmt.Println("load")
	start := time.Now()
	var mu sync.Mutex
	counts := make([][3]int, int(d/bucket)+1)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < d {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				reply, err := client.Say(ctx, &echopb.SayRequest{Message: "load"})
				cancel()
				i := int(time.Since(start) / bucket)
				mu.Lock()
				if i < len(counts) {
					switch {
					case err != nil:
						counts[i][1]++
					case reply.Server == watch:
						counts[i][0]++
						counts[i][2]++
					default:
						counts[i][0]++
					}
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	for i, c := range counts {
		fmt.Println(i, c[0], c[1], c[2])
	}
}
