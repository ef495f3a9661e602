// gozero-subscriber follows an etcd key with go-zero's own discov.Subscriber (what a
// zrpc client uses) and prints the sorted value set as one line each time it changes.
// The first line (possibly empty) means subscribed. The propagation benchmark
// compares it with the Rust resolver on the same etcd.
//
//	gozero-subscriber -etcd 127.0.0.1:2379 -key echo.rpc
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/zeromicro/go-zero/core/discov"
	"github.com/zeromicro/go-zero/core/logx"
)

func main() {
	hosts := flag.String("etcd", "", "etcd hosts, comma separated")
	key := flag.String("key", "", "the go-zero key")
	flag.Parse()
	logx.Disable()

	sub, err := discov.NewSubscriber(strings.Split(*hosts, ","), *key)
	if err != nil {
		fmt.Fprintln(os.Stderr, "subscribe:", err)
		os.Exit(1)
	}
	var mu sync.Mutex
	last := "\x00" // never a value set: the first call always prints
	print := func() {
		values := sub.Values()
		sort.Strings(values)
		line := strings.Join(values, ",")
		mu.Lock()
		defer mu.Unlock()
		if line != last {
			last = line
			fmt.Println(line)
		}
	}
	sub.AddListener(print)
	print()
	select {} // until killed
}
