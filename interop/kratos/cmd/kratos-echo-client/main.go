// kratos-echo-client resolves discovery:///<service> through kratos' own etcd or consul
// registry and its gRPC discovery resolver, calls the echo service (proto/echo.proto)
// and prints the name of each server that answered, one a line. Interop tests run it
// to check that kratos clients find and call services registered by Rust.
//
//	kratos-echo-client -etcd 127.0.0.1:2379 -service busi -n 3
//
// With -tls-ca (a PEM CA file) it dials with TLS (kratos' grpc.Dial), so kratos'
// resolver takes only grpcs:// endpoints. Server certificates must carry the service
// name: kratos' resolver sets it as every address's ServerName, which grpc-go checks
// (it overrides tls.Config.ServerName).
//
// With -watch it instead follows the registry's watcher (the one kratos' resolver
// uses) for -for and prints one JSON line per change:
// {"unix_nanos":N,"endpoints":["grpc://…",…]}.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	consulreg "github.com/go-kratos/kratos/contrib/registry/consul/v2"
	etcdreg "github.com/go-kratos/kratos/contrib/registry/etcd/v2"
	"github.com/go-kratos/kratos/v2/log"
	"github.com/go-kratos/kratos/v2/registry"
	"github.com/go-kratos/kratos/v2/transport/grpc"
	consulapi "github.com/hashicorp/consul/api"
	clientv3 "go.etcd.io/etcd/client/v3"

	"dtmdriver-rs/interop/echopb"
)

func main() {
	etcdHosts := flag.String("etcd", "", "etcd hosts, comma separated (kratos' etcd registry)")
	consulAddr := flag.String("consul", "", "consul agent host:port (kratos' consul registry)")
	service := flag.String("service", "", "the kratos service name to resolve")
	n := flag.Int("n", 1, "number of calls")
	watch := flag.Bool("watch", false, "print registry changes instead of calling")
	watchFor := flag.Duration("for", 30*time.Second, "how long -watch runs")
	tlsCA := flag.String("tls-ca", "", "PEM CA file: dial with TLS (grpcs:// endpoints only)")
	flag.Parse()
	log.SetLogger(log.NewFilter(log.DefaultLogger, log.FilterLevel(log.LevelError)))

	var d registry.Discovery
	switch {
	case *etcdHosts != "":
		cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*etcdHosts, ","), DialTimeout: 3 * time.Second})
		if err != nil {
			fmt.Fprintln(os.Stderr, "etcd:", err)
			os.Exit(2)
		}
		d = etcdreg.New(cli)
	case *consulAddr != "":
		cli, err := consulapi.NewClient(&consulapi.Config{Address: *consulAddr})
		if err != nil {
			fmt.Fprintln(os.Stderr, "consul:", err)
			os.Exit(2)
		}
		d = consulreg.New(cli)
	default:
		fmt.Fprintln(os.Stderr, "give -etcd or -consul")
		os.Exit(2)
	}
	if *watch {
		watchChanges(d, *service, *watchFor)
		return
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	opts := []grpc.ClientOption{
		grpc.WithEndpoint("discovery:///" + *service),
		grpc.WithDiscovery(d),
		grpc.WithTimeout(5 * time.Second),
	}
	dial := grpc.DialInsecure
	if *tlsCA != "" {
		pem, err := os.ReadFile(*tlsCA)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tls:", err)
			os.Exit(2)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fmt.Fprintln(os.Stderr, "tls: no certificate in", *tlsCA)
			os.Exit(2)
		}
		opts = append(opts, grpc.WithTLSConfig(&tls.Config{RootCAs: pool}))
		dial = grpc.Dial
	}
	conn, err := dial(ctx, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(1)
	}
	defer conn.Close()
	client := echopb.NewEchoClient(conn)
	for i := 0; i < *n; i++ {
		callCtx, callCancel := context.WithTimeout(context.Background(), 5*time.Second)
		reply, err := client.Say(callCtx, &echopb.SayRequest{Message: "hi"})
		callCancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "call:", err)
			os.Exit(1)
		}
		fmt.Println(reply.Server)
	}
}

func watchChanges(d registry.Discovery, service string, duration time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	w, err := d.Watch(ctx, service)
	if err != nil {
		fmt.Fprintln(os.Stderr, "watch:", err)
		os.Exit(1)
	}
	defer w.Stop()
	enc := json.NewEncoder(os.Stdout)
	for ctx.Err() == nil {
		instances, err := w.Next()
		now := time.Now().UnixNano()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			fmt.Fprintln(os.Stderr, "next:", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		endpoints := []string{}
		for _, in := range instances {
			endpoints = append(endpoints, in.Endpoints...)
		}
		sort.Strings(endpoints)
		_ = enc.Encode(map[string]any{"unix_nanos": now, "endpoints": endpoints})
	}
}
