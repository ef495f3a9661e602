// Package resolver is the seed article's gRPC resolver: scheme `registry`, built on a
// registry.Registry; it lists the service when built and again on every event of its
// subscription, and hands grpc every instance with its weight and group as address
// attributes.
package resolver

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"

	"dtmdriver-rs/interop/seedregistry/registry"
)

// Scheme is the target scheme: registry://NAME.
const Scheme = "registry"

// Builder builds resolvers for registry://NAME targets.
type Builder struct {
	reg     *registry.Registry
	timeout time.Duration
}

// NewBuilder returns a builder whose list calls are bounded by timeout. It names the
// service and the call authority after the target's host when its path is empty (see
// ServiceName); AsWritten returns one that behaves exactly as the article's.
func NewBuilder(reg *registry.Registry, timeout time.Duration) resolver.Builder {
	return &hostAware{Builder{reg: reg, timeout: timeout}}
}

// AsWritten returns the article's builder unchanged: the service is
// target.Endpoint(), the authority grpc's default (the endpoint too). Since grpc-go
// 1.5x, registry://NAME has an empty Endpoint() (NAME is the URL host), so such a
// client lists every service under /micro and sends an empty :authority, which HTTP/2
// servers built on Rust's h2 (tonic) refuse with RST_STREAM PROTOCOL_ERROR; only
// registry:///NAME works with it.
func AsWritten(reg *registry.Registry, timeout time.Duration) resolver.Builder {
	return &Builder{reg: reg, timeout: timeout}
}

// Scheme implements resolver.Builder.
func (b *Builder) Scheme() string { return Scheme }

// ServiceName is the service a target names: its endpoint (the path), or when that is
// empty, as in registry://NAME, its host.
func ServiceName(t resolver.Target) string {
	if e := t.Endpoint(); e != "" {
		return e
	}
	return t.URL.Host
}

// hostAware is the builder of NewBuilder.
type hostAware struct{ Builder }

// Build implements resolver.Builder for ServiceName(t).
func (h *hostAware) Build(t resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	return h.build(ServiceName(t), cc)
}

// OverrideAuthority implements resolver.AuthorityOverrider: the service name.
func (h *hostAware) OverrideAuthority(t resolver.Target) string { return ServiceName(t) }

// Build implements resolver.Builder for t.Endpoint(), as the article does.
func (b *Builder) Build(t resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	return b.build(t.Endpoint(), cc)
}

func (b *Builder) build(name string, cc resolver.ClientConn) (resolver.Resolver, error) {
	r := &Resolver{name: name, b: b, cc: cc, done: make(chan struct{})}
	events, err := b.reg.Subscribe(r.name)
	if err != nil {
		return nil, err
	}
	r.resolve()
	go r.watch(events)
	return r, nil
}

// Resolver follows one service.
type Resolver struct {
	name string
	b    *Builder
	cc   resolver.ClientConn
	done chan struct{}
	once sync.Once
	mu   sync.Mutex
}

type attrKey string

func (r *Resolver) watch(events <-chan registry.Event) {
	for {
		select {
		case <-events:
			r.resolve()
		case <-r.done:
			return
		}
	}
}

func (r *Resolver) resolve() {
	r.mu.Lock()
	defer r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), r.b.timeout)
	defer cancel()
	instances, err := r.b.reg.ListServices(ctx, r.name)
	if err != nil {
		r.cc.ReportError(err)
		return
	}
	addrs := make([]resolver.Address, 0, len(instances))
	for _, si := range instances {
		addrs = append(addrs, resolver.Address{
			Addr: si.Address,
			Attributes: attributes.New(attrKey("weight"), si.Weight).
				WithValue(attrKey("group"), si.Group),
		})
	}
	if err := r.cc.UpdateState(resolver.State{Addresses: addrs}); err != nil {
		r.cc.ReportError(err)
	}
}

// ResolveNow lists the service again.
func (r *Resolver) ResolveNow(resolver.ResolveNowOptions) { r.resolve() }

// Close stops following the service.
func (r *Resolver) Close() { r.once.Do(func() { close(r.done) }) }
