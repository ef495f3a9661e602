// gozero-echo-server is a go-zero zrpc server of the echo service (proto/echo.proto)
// that registers itself in etcd the way every go-zero service does, or in consul through
// zero-contrib's consul registry (consul.RegisterService, as dtm's go-zero driver does).
// Interop tests run it to check that Rust clients find and call go-zero services.
//
//	gozero-echo-server -etcd 127.0.0.1:2379 -key echo.rpc -listen 127.0.0.1:9000 -name go1
//	gozero-echo-server -consul 127.0.0.1:8500 -key echo.rpc -tags tag,rpc -meta Protocol=grpc \
//	    -listen 127.0.0.1:9000 -name go1
//
// -delay 10ms makes each call take that long, as a service waiting on its own I/O.
// SIGUSR1 makes every call fail with UNAVAILABLE (as a service whose database is down)
// until SIGUSR2.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/zeromicro/go-zero/core/conf"
	"github.com/zeromicro/go-zero/core/logx"
	"github.com/zeromicro/go-zero/zrpc"
	"github.com/zeromicro/zero-contrib/zrpc/registry/consul"
	"google.golang.org/grpc"

	"dtmdriver-rs/interop/echopb"
)

func main() {
	hosts := flag.String("etcd", "", "etcd hosts, comma separated")
	agent := flag.String("consul", "", "consul agent host:port (instead of -etcd)")
	key := flag.String("key", "", "the etcd key or consul service name to register under")
	tags := flag.String("tags", "", "consul tags, comma separated (with -consul)")
	meta := flag.String("meta", "", "consul meta K=V pairs, comma separated (with -consul)")
	listen := flag.String("listen", "127.0.0.1:9000", "address to serve on")
	name := flag.String("name", "go", "name carried by replies")
	delay := flag.Duration("delay", 0, "how long each call takes, e.g. 10ms (default: answer at once)")
	flag.Parse()

	var c zrpc.RpcServerConf
	if err := conf.FillDefault(&c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	c.Name = *name
	c.ListenOn = *listen
	if *hosts != "" {
		c.Etcd.Hosts = strings.Split(*hosts, ",")
		c.Etcd.Key = *key
	}
	c.Log.Mode = "console"
	c.Log.Level = "error"
	c.Mode = "test"
	// go-zero turns its dev server on by default, on :6060 of every interface: the
	// second echo server of a run logged "address already in use", and a test binary
	// has no business listening beyond the address it is given.
	c.DevServer.Enabled = false
	// A call in progress when the fault suite SIGSTOPs the process ends 10 s later and
	// go-zero logs it as a "slowcall" (past 500 ms), one line per call: the freeze is
	// the point of the test, the lines are noise.
	c.Middlewares.StatConf.SlowThreshold = time.Minute
	// go-zero sheds calls (ResourceExhausted "service overloaded") when the machine's CPU
	// passes 90% and the server is busy by its own count, which a server whose calls take
	// -delay is at 16 callers: on a shared machine under other load, the frozen-instance
	// fault scenarios then failed about 2,000 calls a run that the channel had nothing
	// to do with.
	c.CpuThreshold = 0
	// go-zero's server-side breaker, once SIGUSR1 has failed every call for a while,
	// goes on refusing calls (UNAVAILABLE) for seconds after SIGUSR2: the
	// instance-failing fault scenarios measure the channel, not that breaker.
	c.Middlewares.Breaker = false
	logx.MustSetup(c.Log)

	echo := &echopb.Server{Name: *name, Delay: *delay}
	toggles := make(chan os.Signal, 1)
	signal.Notify(toggles, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		for sig := range toggles {
			echo.Failing.Store(sig == syscall.SIGUSR1)
		}
	}()
	s := zrpc.MustNewServer(c, func(g *grpc.Server) {
		echopb.RegisterEchoServer(g, echo)
	})
	defer s.Stop()
	if *agent != "" {
		cc := consul.Conf{Host: *agent, Key: *key, Meta: map[string]string{}}
		if *tags != "" {
			cc.Tag = strings.Split(*tags, ",")
		}
		for _, kv := range strings.Split(*meta, ",") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				cc.Meta[k] = v
			}
		}
		if err := consul.RegisterService(*listen, cc); err != nil {
			fmt.Fprintln(os.Stderr, "consul:", err)
			os.Exit(1)
		}
	}
	fmt.Println("serving", *listen)
	s.Start()
}
