// grpcgo-spread is the Go peer of `cargo bench -p dtmdriver-core --bench endpoints`
// (its calls table): calls/s of one grpc-go client with the round_robin balancer over
// N ready endpoints, each an echo server (proto/echo.proto) of its own in this process
// on its own loopback port, with -conc closed-loop callers, -secs seconds a cell split
// over -rounds rounds in which the cells take turns. It prints, for each N, calls/s
// and the CPU µs per call of the whole process (callers, client and servers), then the
// figure at the largest N over the one at 32.
//
//	grpcgo-spread -sizes 32,4000 -conc 32 -secs 4 -rounds 4
//
// With -idle it is the peer of the bench's idle table instead: for each N, a client
// with keepalive Time 30 s and PermitWithoutStream connected to N servers (which
// permit that), left idle for -secs seconds, and the process's CPU in ms a second.
//
//	grpcgo-spread -idle -sizes 1000,4000 -secs 4
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"dtmdriver-rs/interop/echopb"
)

func cpu() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func load() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

// dial connects a round_robin client to addrs and waits until every subchannel is
// ready (bounded).
func dial(addrs []string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	r := manual.NewBuilderWithScheme("spread")
	state := resolver.State{}
	for _, a := range addrs {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(state)
	opts = append(opts, grpc.WithResolvers(r), grpc.WithTransportCredentials(insecure.NewCredentials()))
	cc, err := grpc.NewClient("spread:///echo",
		append(opts, grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))...)
	if err != nil {
		return nil, err
	}
	cc.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for cc.GetState() != connectivity.Ready {
		if !cc.WaitForStateChange(ctx, cc.GetState()) {
			return nil, fmt.Errorf("not ready after 60 s")
		}
	}
	// Calls until every server has answered once: every subchannel is up.
	seen := map[string]bool{}
	client := echopb.NewEchoClient(cc)
	for i := 0; len(seen) < len(addrs) && i < 100*len(addrs); i++ {
		reply, err := client.Say(ctx, &echopb.SayRequest{Message: "warm"})
		if err == nil {
			seen[reply.Server] = true
		}
	}
	if len(seen) < len(addrs) {
		return nil, fmt.Errorf("%d of %d servers answered", len(seen), len(addrs))
	}
	return cc, nil
}

type cell struct {
	calls float64
	secs  float64
	cpu   time.Duration
}

func run(cc *grpc.ClientConn, conc int, d time.Duration) (cell, error) {
	var calls, failed atomic.Int64
	var recording, stop atomic.Bool
	var wg sync.WaitGroup
	client := echopb.NewEchoClient(cc)
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				_, err := client.Say(context.Background(), &echopb.SayRequest{Message: "bench"})
				if recording.Load() {
					calls.Add(1)
					if err != nil {
						failed.Add(1)
					}
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	recording.Store(true)
	started, cpu0 := time.Now(), cpu()
	time.Sleep(d)
	recording.Store(false)
	c := cell{secs: time.Since(started).Seconds(), cpu: cpu() - cpu0}
	stop.Store(true)
	wg.Wait()
	c.calls = float64(calls.Load())
	if failed.Load() > 0 {
		return c, fmt.Errorf("%d calls failed", failed.Load())
	}
	return c, nil
}

func main() {
	sizesFlag := flag.String("sizes", "32,4000", "numbers of endpoints, comma separated")
	conc := flag.Int("conc", 32, "closed-loop callers")
	secs := flag.Float64("secs", 4, "seconds a cell (split over the rounds)")
	rounds := flag.Int("rounds", 4, "rounds in which the cells take turns")
	idle := flag.Bool("idle", false, "measure idle connections pinging while idle instead")
	flag.Parse()
	var sizes []int
	most := 0
	for _, s := range strings.Split(*sizesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintln(os.Stderr, "bad -sizes:", s)
			os.Exit(2)
		}
		sizes = append(sizes, n)
		if n > most {
			most = n
		}
	}
	addrs := make([]string, 0, most)
	for i := 0; i < most; i++ {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, "listen:", err)
			os.Exit(1)
		}
		s := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime: 10 * time.Second, PermitWithoutStream: true}))
		echopb.RegisterEchoServer(s, &echopb.Server{Name: fmt.Sprintf("ep-%d", i)})
		go s.Serve(lis)
		addrs = append(addrs, lis.Addr().String())
	}
	if *idle {
		idleTable(addrs, sizes, time.Duration(*secs*float64(time.Second)))
		return
	}
	conns := make([]*grpc.ClientConn, len(sizes))
	for k, n := range sizes {
		cc, err := dial(addrs[:n])
		if err != nil {
			fmt.Fprintf(os.Stderr, "dial %d endpoints: %v\n", n, err)
			os.Exit(1)
		}
		conns[k] = cc
	}
	totals := make([]cell, len(sizes))
	per := time.Duration(*secs / float64(*rounds) * float64(time.Second))
	for r := 0; r < *rounds; r++ {
		for j := range sizes {
			k := j
			if r%2 == 1 {
				k = len(sizes) - 1 - j
			}
			c, err := run(conns[k], *conc, per)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			totals[k].calls += c.calls
			totals[k].secs += c.secs
			totals[k].cpu += c.cpu
		}
	}
	fmt.Printf("grpc-go round_robin: calls/s over N ready endpoints (%d callers, %g s a cell, %d echo servers in this process)\n", *conc, *secs, most)
	fmt.Printf("%6s | %10s | %12s | %5s\n", "N", "rr/s", "CPU µs/call", "load")
	rate := map[int]float64{}
	for k, n := range sizes {
		t := totals[k]
		rate[n] = t.calls / t.secs
		fmt.Printf("%6d | %10.0f | %12.1f | %5s\n", n, rate[n], t.cpu.Seconds()*1e6/t.calls, load())
	}
	if small, ok := rate[32]; ok && most != 32 {
		fmt.Printf("%6s | %10.2f |\n", fmt.Sprintf("%d/32", most), rate[most]/small)
	}
}

// idleTable prints, for each N, the process's CPU while a client pinging idle
// connections every 30 s holds N idle connections.
func idleTable(addrs []string, sizes []int, d time.Duration) {
	fmt.Printf("grpc-go: N idle connections pinging while idle (keepalive Time 30 s, PermitWithoutStream), %g s idle each\n", d.Seconds())
	fmt.Printf("%6s | %17s | %5s\n", "N", "process CPU ms/s", "load")
	for _, n := range sizes {
		cc, err := dial(addrs[:n], grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time: 30 * time.Second, Timeout: 20 * time.Second, PermitWithoutStream: true}))
		if err != nil {
			fmt.Fprintf(os.Stderr, "dial %d endpoints: %v\n", n, err)
			os.Exit(1)
		}
		time.Sleep(500 * time.Millisecond)
		started, cpu0 := time.Now(), cpu()
		time.Sleep(d)
		used := cpu() - cpu0
		fmt.Printf("%6d | %17.2f | %5s\n", n, float64(used.Milliseconds())/time.Since(started).Seconds(), load())
		cc.Close()
	}
}
