// gozero-consul-watcher runs zero-contrib's consul resolver (what a go-zero zrpc client
// dialling a consul:// target uses), or go-zero's own resolvers (k8s://, etcd://,
// discov://, direct://, registered as a zrpc client registers them), against a printing
// resolver.ClientConn and prints the sorted address set as one line each time the
// resolver pushes a different one: what gRPC's balancer would be handed, when it would
// be handed it. The first line (possibly empty) means the first answer arrived. The
// propagation benchmarks compare it with the Rust resolvers on the same registry.
//
//	gozero-consul-watcher -target 'consul://127.0.0.1:8500/echo.rpc?wait=14s'
//	gozero-consul-watcher -target 'k8s://ns/echo:8080'   (in-cluster credentials only, as go-zero)
package main

import (
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

func (p *printer) ReportError(err error) { fmt.Fprintln(os.Stderr, "resolver:", err) }

func (p *printer) NewAddress(addrs []resolver.Address) {
	_ = p.UpdateState(resolver.State{Addresses: addrs})
}

func (p *printer) ParseServiceConfig(string) *serviceconfig.ParseResult { return nil }

func main() {
	target := flag.String("target", "", "a go-zero consul target, e.g. consul://127.0.0.1:8500/echo.rpc?wait=14s")
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
	r, err := builder.Build(resolver.Target{URL: *u}, &printer{}, resolver.BuildOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
	defer r.Close()
	select {} // until killed
}
