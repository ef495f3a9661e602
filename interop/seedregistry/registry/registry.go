// Package registry keeps service instances in etcd the way the seed article's registry
// does: key /micro/NAME/ADDRESS, value json.Marshal of the untagged ServiceInstance,
// put under the lease of one concurrency.Session per Registry (renewed by the session,
// revoked when it closes).
package registry

import (
	"context"
	"encoding/json"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// ServiceInstance is one instance. It has no JSON tags on purpose: encoding/json then
// writes the Go field names (`{"Name":…,"Address":…,"Weight":…,"Group":…}`) and reads
// any capitalisation of them, as the seed's struct does.
type ServiceInstance struct {
	Name    string
	Address string
	Weight  int32
	Group   string
}

// Event says that something under a watched service changed; it carries nothing.
type Event struct{}

// Registry is the etcd registry.
type Registry struct {
	c       *clientv3.Client
	sess    *concurrency.Session
	mu      sync.Mutex
	cancels []context.CancelFunc
}

// New opens the session whose lease every registration uses.
func New(c *clientv3.Client) (*Registry, error) {
	s, err := concurrency.NewSession(c)
	if err != nil {
		return nil, err
	}
	return &Registry{c: c, sess: s}, nil
}

// ServiceKey is the prefix listed and watched for a service: /micro/NAME. Like the
// seed's, it has no trailing slash, so it also covers /micro/NAMEother/….
func ServiceKey(name string) string { return "/micro/" + name }

// InstanceKey is /micro/NAME/ADDRESS.
func InstanceKey(si ServiceInstance) string { return ServiceKey(si.Name) + "/" + si.Address }

// Register puts the instance under the session's lease.
func (r *Registry) Register(ctx context.Context, si ServiceInstance) error {
	v, err := json.Marshal(si)
	if err != nil {
		return err
	}
	_, err = r.c.Put(ctx, InstanceKey(si), string(v), clientv3.WithLease(r.sess.Lease()))
	return err
}

// UnRegister deletes the instance's key.
func (r *Registry) UnRegister(ctx context.Context, si ServiceInstance) error {
	_, err := r.c.Delete(ctx, InstanceKey(si))
	return err
}

// ListServices reads every instance under the service's prefix; values that do not
// unmarshal are skipped.
func (r *Registry) ListServices(ctx context.Context, name string) ([]ServiceInstance, error) {
	resp, err := r.c.Get(ctx, ServiceKey(name), clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := make([]ServiceInstance, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var si ServiceInstance
		if json.Unmarshal(kv.Value, &si) != nil {
			continue
		}
		out = append(out, si)
	}
	return out, nil
}

// Subscribe watches the service's prefix and sends one Event per etcd event until the
// registry is closed. (The article's version cancels its watch as Subscribe returns;
// this one keeps it until Close.)
func (r *Registry) Subscribe(name string) (<-chan Event, error) {
	ctx, cancel := context.WithCancel(context.Background())
	r.mu.Lock()
	r.cancels = append(r.cancels, cancel)
	r.mu.Unlock()
	watch := r.c.Watch(clientv3.WithRequireLeader(ctx), ServiceKey(name), clientv3.WithPrefix())
	events := make(chan Event)
	go func() {
		for {
			select {
			case resp, ok := <-watch:
				if !ok || resp.Err() != nil || resp.Canceled {
					return
				}
				for range resp.Events {
					select {
					case events <- Event{}:
					case <-ctx.Done():
						return
					}
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return events, nil
}

// Close ends the session (revoking its lease, so every registration goes) and the
// watches.
func (r *Registry) Close() error {
	err := r.sess.Close()
	r.mu.Lock()
	cancels := r.cancels
	r.cancels = nil
	r.mu.Unlock()
	for _, cancel := range cancels {
		cancel()
	}
	return err
}
