// gozero-scale is go-zero's side of the scale benchmark
// (driver-gozero-compat/benches/scale.rs): it follows etcd keys with go-zero's own
// discov.Subscriber, the watcher under every zrpc client, and reports on stdout:
//
//	hello         once, before subscribing
//	set N         single key: each time the number of values changes
//	ready         many keys: once every key has at least -expect values
//
// It exits when its stdin closes. The benchmark reads its CPU time and RSS from /proc,
// as it does for the Rust side.
//
//	gozero-scale -etcd 127.0.0.1:2379 -key scale.rpc
//	gozero-scale -etcd 127.0.0.1:2379 -key scale.k -count 1000 -expect 3
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/zeromicro/go-zero/core/discov"
	"github.com/zeromicro/go-zero/core/logx"
)

var out = struct {
	sync.Mutex
	w *bufio.Writer
}{w: bufio.NewWriter(os.Stdout)}

func say(format string, args ...any) {
	out.Lock()
	defer out.Unlock()
	fmt.Fprintf(out.w, format+"\n", args...)
	out.w.Flush()
}

func main() {
	hosts := flag.String("etcd", "", "etcd hosts, comma separated")
	key := flag.String("key", "", "the go-zero key (with -count: the prefix of KEY.0 … KEY.<count-1>)")
	count := flag.Int("count", 0, "follow this many keys KEY.i instead of KEY")
	expect := flag.Int("expect", 1, "with -count: values each key must have to be ready")
	flag.Parse()
	logx.Disable()
	endpoints := strings.Split(*hosts, ",")

	say("hello")
	if *count == 0 {
		single(endpoints, *key)
	} else {
		many(endpoints, *key, *count, *expect)
	}
	// Until the benchmark closes our stdin.
	_, _ = bufio.NewReader(os.Stdin).ReadString(0)
}

// single reports the size of one key's value set on every change, reading it as the
// zrpc resolver does on every change (Values copies the set).
func single(endpoints []string, key string) {
	sub, err := discov.NewSubscriber(endpoints, key)
	if err != nil {
		fmt.Fprintln(os.Stderr, "subscribe:", err)
		os.Exit(1)
	}
	var mu sync.Mutex
	last := -1
	report := func() {
		n := len(sub.Values())
		mu.Lock()
		defer mu.Unlock()
		if n != last {
			last = n
			say("set %d", n)
		}
	}
	sub.AddListener(report)
	report()
}

// many follows count keys and says ready once each has expect values.
func many(endpoints []string, prefix string, count, expect int) {
	var pending atomic.Int64
	pending.Store(int64(count))
	subs := make([]*discov.Subscriber, count)
	for i := range count {
		sub, err := discov.NewSubscriber(endpoints, fmt.Sprintf("%s.%d", prefix, i))
		if err != nil {
			fmt.Fprintln(os.Stderr, "subscribe:", err)
			os.Exit(1)
		}
		subs[i] = sub
		var done atomic.Bool
		check := func() {
			if len(sub.Values()) >= expect && done.CompareAndSwap(false, true) {
				if pending.Add(-1) == 0 {
					say("ready")
				}
			}
		}
		sub.AddListener(check)
		check()
	}
}
