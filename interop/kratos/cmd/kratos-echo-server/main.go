// kratos-echo-server is a kratos v2 gRPC server of the echo service (proto/echo.proto)
// that registers itself through kratos' own etcd or consul registry, as every kratos
// app does. Interop tests run it to check that Rust clients find and call kratos
// services. It deregisters on SIGINT/SIGTERM (kratos' App does).
//
//	kratos-echo-server -etcd 127.0.0.1:2379 -service busi -listen 127.0.0.1:9000 -name go1
//	kratos-echo-server -consul 127.0.0.1:8500 -service busi -listen 127.0.0.1:9000 -name go1
//
// With -tls-cert and -tls-key (PEM files) it serves TLS, and kratos registers the
// instance's endpoint as grpcs://host:port.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	consulreg "github.com/go-kratos/kratos/contrib/registry/consul/v2"
	etcdreg "github.com/go-kratos/kratos/contrib/registry/etcd/v2"
	"github.com/go-kratos/kratos/v2"
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
	service := flag.String("service", "", "the kratos service name to register as")
	listen := flag.String("listen", "127.0.0.1:9000", "address to serve on")
	name := flag.String("name", "go", "name carried by replies")
	version := flag.String("version", "v1", "the instance version")
	weight := flag.String("weight", "", "metadata weight, if any")
	tlsCert := flag.String("tls-cert", "", "PEM certificate to serve TLS with (needs -tls-key)")
	tlsKey := flag.String("tls-key", "", "PEM private key of -tls-cert")
	flag.Parse()
	log.SetLogger(log.NewFilter(log.DefaultLogger, log.FilterLevel(log.LevelWarn)))

	var r registry.Registrar
	switch {
	case *etcdHosts != "":
		cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*etcdHosts, ","), DialTimeout: 3 * time.Second})
		if err != nil {
			fmt.Fprintln(os.Stderr, "etcd:", err)
			os.Exit(2)
		}
		r = etcdreg.New(cli)
	case *consulAddr != "":
		cli, err := consulapi.NewClient(&consulapi.Config{Address: *consulAddr})
		if err != nil {
			fmt.Fprintln(os.Stderr, "consul:", err)
			os.Exit(2)
		}
		r = consulreg.New(cli)
	default:
		fmt.Fprintln(os.Stderr, "give -etcd or -consul")
		os.Exit(2)
	}
	md := map[string]string{"server": *name}
	if *weight != "" {
		md["weight"] = *weight
	}
	opts := []grpc.ServerOption{grpc.Address(*listen)}
	if *tlsCert != "" || *tlsKey != "" {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tls:", err)
			os.Exit(2)
		}
		opts = append(opts, grpc.TLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}}))
	}
	srv := grpc.NewServer(opts...)
	echopb.RegisterEchoServer(srv, &echopb.Server{Name: *name})
	app := kratos.New(
		kratos.Name(*service),
		kratos.Version(*version),
		kratos.Metadata(md),
		kratos.Server(srv),
		kratos.Registrar(r),
		kratos.AfterStart(func(context.Context) error {
			fmt.Println("serving", *listen)
			return nil
		}),
	)
	if err := app.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		os.Exit(1)
	}
}
