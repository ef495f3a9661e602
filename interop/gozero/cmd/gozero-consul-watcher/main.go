// gozero-consul-watcher runs zero-contrib's consul resolver (what a go-zero zrpc client
// dialling a consul:// target uses), or go-zero's own resolvers (k8s://, etcd://,
// discov://, direct://, registered as a zrpc client registers them), against a printing
// resolver.ClientConn and prints the sorted address set as one line each time the
// resolver pushes a different one: what gRPC's balancer would be handed, when it would
// be handed it. The first line (possibly empty) means the first answer arrived. The
// propagation benchmarks compare it with the Rust resolvers on the same registry.
//
// With -sizes it speaks the scale benchmark's line protocol instead
// (driver-gozero-compat/benches/scale_consul.rs): `hello` once before the resolver is
// built, then `set N` each time the number of addresses pushed changes, and it exits
// when its stdin closes; the benchmark reads its CPU time and RSS from /proc.
//
//	gozero-consul-watcher -target 'consul://127.0.0.1:8500/echo.rpc?wait=14s'
//	gozero-consul-watcher -sizes -target 'consul://127.0.0.1:8500/big.rpc?wait=14s'
//	gozero-consul-watcher -target 'k8s://ns/echo:8080'   (in-cluster credentials only, as go-zero)
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/zeromicro/go-zero/core/logx"
	zrpcresolver "github.com/zeromicro/go-zero/zrpc/resolver"
	_ "github.com/zeromicro/zero-contrib/zrpc/registry/consul"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
)

// printer is the resolver's ClientConn: it prints each new address set.
type printer struct {
	mu    sync.Mutex
	first bool
	last  string
}

func (p *printer) UpdateState(s resolver.State) error {
	addrs := make([]string, 0, len(s.Addresses))
	for _, a := range s.Addresses {
		addrs = append(addrs, a.Addr)
	}
	sort.Strings(addrs)
	line := strings.Join(addrs, ",")
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.first || line != p.last {
		p.first, p.last = true, line
		fmt.Println(line)
	}
	return nil
}

// sizer is the resolver's ClientConn with -sizes: it prints the size of each new set.
type sizer struct {
	mu   sync.Mutex
	last int
}

func (z *sizer) UpdateState(s resolver.State) error {
	z.mu.Lock()
	defer z.mu.Unlock()
	if n := len(s.Addresses); n != z.last {
		z.last = n
		fmt.Printf("set %d\n", n)
	}
	return nil
}

func (z *sizer) ReportError(err error) { fmt.Fprintln(os.Stderr, "resolver:", err) }

func (z *sizer) NewAddress(addrs []resolver.Address) {
	_ = z.UpdateState(resolver.State{Addresses: addrs})
}

func (z *sizer) ParseServiceConfig(string) *serviceconfig.ParseResult { return nil }

func (p *printer) ReportError(err error) { fmt.Fprintln(os.Stderr, "resolver:", err) }

func (p *printer) NewAddress(addrs []resolver.Address) {
	_ = p.UpdateState(resolver.State{Addresses: addrs})
}

func (p *printer) ParseServiceConfig(string) *serviceconfig.ParseResult { return nil }

func main() {
	target := flag.String("target", "", "a go-zero consul target, e.g. consul://127.0.0.1:8500/echo.rpc?wait=14s")
	sizes := flag.Bool("sizes", false, "print `hello` and `set N` lines (the scale benchmark's protocol); exit when stdin closes")
	flag.Parse()
	logx.Disable()
	zrpcresolver.Register()

	u, err := url.Parse(*target)
	if err != nil {
		fmt.Fprintln(os.Stderr, "target:", err)
		os.Exit(2)
	}
	builder := resolver.Get(u.Scheme)
	if builder == nil {
		fmt.Fprintln(os.Stderr, "no resolver for scheme", u.Scheme)
		os.Exit(2)
	}
	var cc resolver.ClientConn = &printer{}
	if *sizes {
		fmt.Println("hello")
		cc = &sizer{last: -1}
	}
	r, err := builder.Build(resolver.Target{URL: *u}, cc, resolver.BuildOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
	defer r.Close()
	if *sizes {
		// Until the benchmark closes our stdin.
		_, _ = bufio.NewReader(os.Stdin).ReadString(0)
		return
	}
	select {} // until killed
}
