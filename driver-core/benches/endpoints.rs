//! How the balancing channel scales with the size of its endpoint set.
//!
//! `cargo bench -p dtmdriver-core --bench endpoints` prints two tables, each row with the
//! machine's load (`/proc/loadavg`, 1-minute figure) beside it:
//!
//! 1. **calls/s over N ready endpoints**, N = 1 / 32 / 1,000 / 4,000: one in-process
//!    echo server per endpoint (real servers on their own loopback ports, a real
//!    HTTP/2 connection each), a closed loop of `BENCH_CONC` callers (default 32) for
//!    `BENCH_SECS` seconds (default 4) per cell, under each policy, split over
//!    `BENCH_ROUNDS` rounds (default 4) in which the cells take turns. The last row is
//!    the figure at 4,000 over the one at 32. A second table gives the CPU time of the
//!    whole process (callers, channel and servers) per call, which a busy machine
//!    disturbs less than the rate. Then the Go peer, `interop/bin/grpcgo-spread`
//!    (grpc-go's `round_robin` over the same number of in-process echo servers, same
//!    callers and cells; `bash interop/build.sh` builds it), runs after the Rust cells
//!    and prints its own table, so the two ratios come from one run
//!    (`BENCH_GO=0` leaves it out). Every endpoint takes three file
//!    descriptors (listener, client and server side of its connection); sizes that do
//!    not fit the process's open-file limit are skipped, saying so.
//! 2. **applying one change to a set of N endpoints**, N = 100 / 1,000 / 10,000 /
//!    100,000: a channel on a hand-fed resolver (nothing dialled: the channel is never
//!    called), one endpoint removed or added back per change, `BENCH_CHANGES` changes
//!    (default 21) per size, on a single-threaded runtime; the median time of the
//!    resolver's keyed `apply` call (what the etcd engine publishes: the changed key;
//!    de-duplication, subset bookkeeping and the new persistent set, in `resolve`), of
//!    the channel's apply (from the end of that call until the channel publishes the
//!    new table, task switch included), of the two together, and, beside them, of a
//!    whole-set `update` with the same change (what a resolver that only knows whole
//!    sets pays: consul, Kubernetes); and "behind µs": the channel's apply when it was
//!    woken once for two changes (two keyed calls back to back, two endpoints removed
//!    or put back), so that it finds a version skipped; and "discover behind µs": the
//!    same for a `discover::Changes` stream (tower's `Discover`), its poll that takes
//!    the newest state and yields the first change.
//! 3. **one connection entering or leaving the rotation**, same sizes (part `apply`):
//!    the median time (`BENCH_CHANGES` changes) of the next pick's update of the list of
//!    ready endpoints, caught up from the channel's log of what changed, beside reading
//!    every endpoint's flag (what the list did before the log), caches cooled before
//!    each (`dtmdriver_core::__private::ready_list_costs`); and the carrying of that
//!    list over one apply of `BENCH_BATCH` changes (default 1,000, at most N / 2; half
//!    removals, half new endpoints) with every endpoint ready (`carry_costs`).
//!    Then **one change to a weighted round robin channel** (same sizes and changes),
//!    all endpoints ready, weighing 1, 1 to 4 and 1 to 40 (`i % K + 1`): the median
//!    time of applying one change (an endpoint removed, then put back) and the first
//!    pick after it (`weighted_change_costs`): picks take turns over weight groups kept
//!    as changes come (classes of one weight up to 32 distinct weights, power-of-two
//!    bands beyond); and the mean time of a weighted pick while a quarter of the
//!    endpoints, weighing 100, are out of rotation and the rest weigh 1
//!    (`weighted_outage_pick`, 200 picks), where most turns land out of rotation and
//!    the pick falls back to walking the ready list by weight.
//! 4. **calls failing in a total outage** (`BENCH_PART=outage`, not run by default), N =
//!    100 / 1,000 / 10,000 (`BENCH_OUTAGE_SIZES`): a channel over N addresses nobody
//!    listens on (`127.0.x.y:1`, refused at once), dialled until every one is ejected,
//!    then `BENCH_OUTAGE_CALLS` (default 200) calls one after another, each failing
//!    `UNAVAILABLE` at once: the median time of a call, the process CPU per call, and the
//!    length of the status message.
//!
//! 5. **idle connections that ping while idle** (`BENCH_PART=idle`, not run by
//!    default), N = 1,000 / 4,000 (`BENCH_IDLE_SIZES`): a channel over N echo servers
//!    with `keepalive(30 s)` and `keepalive_while_idle`, every endpoint connected,
//!    then left idle for `BENCH_SECS`: the liveness sweeper's connection checks a
//!    second, its thread's CPU and the whole process's, in ms a second. Then the Go
//!    peer, `grpcgo-spread -idle`: grpc-go with keepalive `Time` 30 s and
//!    `PermitWithoutStream` over the same number of idle connections, its process's
//!    CPU in ms a second.
//!
//! `BENCH_SIZES` (e.g. `1,32`) and `BENCH_APPLY_SIZES` (e.g. `100,1000`) choose the
//! sizes; `BENCH_PART` (`calls` or `apply`) runs one table only. `BENCH_WEIGHTS`
//! (e.g. `1,2`) gives the calls table's endpoints these weights in turn (default all
//! 1), for weighted round robin with unequal weights. With
//! `BENCH_SERVERS=apart` the echo servers run on a runtime of their own (two threads
//! named `bench-server`) and a third table gives the CPU per call of everything else:
//! the callers, the channel and its connections, the client side alone.
#![allow(clippy::print_stdout)] // a bench binary: its output is the table

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dtmdriver_core::discover::Changes;
use dtmdriver_core::resolve::SnapshotSender;
use dtmdriver_core::{Channel, Endpoint, Policy};
use futures_util::{FutureExt, StreamExt};
use test_support::bench::{env_list, load, median};
use test_support::{EchoClient, EchoServer, ManualResolver, SayRequest, synthetic_addr};

fn env_num(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The soft limit on open files, from `/proc/self/limits`.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Resident memory of this process in MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A channel over `addrs` with `policy`, every endpoint connected, the endpoints
/// weighing `weights` in turn (`BENCH_WEIGHTS`, default all 1).
async fn ready_channel(name: &str, addrs: &[String], policy: Policy, weights: &[usize]) -> Channel {
    let resolver = Arc::new(ManualResolver::default());
    let channel = Channel::builder(&format!("bench:///{name}"))
        .resolver(resolver.clone())
        .policy(policy)
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .expect("channel");
    resolver.sender().update(
        (addrs.iter().enumerate())
            .map(|(i, a)| Endpoint::new(a).with_weight(weights[i % weights.len()] as u32))
            .collect(),
    );
    channel.warm_up();
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let status = channel.status();
        let ready = status
            .endpoints
            .iter()
            .filter(|e| e.state == "ready")
            .count();
        if ready == addrs.len() {
            return channel;
        }
        assert!(
            Instant::now() < until,
            "{name}: only {ready} of {} endpoints connected within 120 s",
            addrs.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The command name and the CPU time (user and system) of a `/proc/…/stat` line, in
/// clock ticks of 10 ms: utime and stime are the 12th and 13th fields after the
/// command name, which is in parentheses.
fn stat_cpu(stat: &str) -> Option<(&str, Duration)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1;
    let ticks: u64 = (rest.split_whitespace().skip(11).take(2))
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Some((comm, Duration::from_millis(ticks * 10)))
}

/// CPU time this process used so far (all threads), from `/proc/self/stat`.
fn cpu_used() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    stat_cpu(&stat).map_or(Duration::ZERO, |(_, cpu)| cpu)
}

/// CPU time of this process's threads whose name `counts`
/// (`/proc/self/task/*/stat`); `None` if no thread's does.
fn threads_cpu_used(counts: impl Fn(&str) -> bool) -> Option<Duration> {
    let mut found = None;
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten() {
        let Some(stat) = task
            .ok()
            .and_then(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        else {
            continue;
        };
        if let Some((_, cpu)) = stat_cpu(&stat).filter(|(comm, _)| counts(comm)) {
            *found.get_or_insert(Duration::ZERO) += cpu;
        }
    }
    found
}

/// The thread-name prefix of the servers' runtime with `BENCH_SERVERS=apart`.
const SERVER_THREADS: &str = "bench-server";

/// CPU time of this process's threads not named [`SERVER_THREADS`]: the client side
/// when the servers run apart.
fn client_cpu_used() -> Duration {
    threads_cpu_used(|comm| !comm.starts_with(SERVER_THREADS)).unwrap_or_default()
}

/// One cell's result: calls, and the process's CPU time (and the client side's) while
/// they ran.
#[derive(Clone, Copy, Default)]
struct Cell {
    calls: f64,
    secs: f64,
    cpu: f64,
    client_cpu: f64,
}

impl Cell {
    fn add(&mut self, other: Cell) {
        self.calls += other.calls;
        self.secs += other.secs;
        self.cpu += other.cpu;
        self.client_cpu += other.client_cpu;
    }

    fn per_sec(&self) -> f64 {
        self.calls / self.secs
    }

    /// CPU µs of the whole process (client and servers) per call.
    fn cpu_us(&self) -> f64 {
        self.cpu * 1e6 / self.calls
    }

    /// CPU µs of the client side per call (meaningful with the servers apart).
    fn client_cpu_us(&self) -> f64 {
        self.client_cpu * 1e6 / self.calls
    }
}

/// Calls of `concurrency` closed-loop callers on `channel` for `secs`.
async fn calls_per_sec(channel: &Channel, concurrency: usize, secs: Duration) -> Cell {
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let mut client = EchoClient::new(channel.clone());
        let (recording, stop, calls, errors) = (
            recording.clone(),
            stop.clone(),
            calls.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let ok = client
                    .say(SayRequest {
                        message: "bench".into(),
                    })
                    .await
                    .is_ok();
                if recording.load(Ordering::Relaxed) {
                    calls.fetch_add(1, Ordering::Relaxed);
                    errors.fetch_add(u64::from(!ok), Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    recording.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let cpu_before = cpu_used();
    let client_before = client_cpu_used();
    tokio::time::sleep(secs).await;
    recording.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let cpu = cpu_used().saturating_sub(cpu_before);
    let client_cpu = client_cpu_used().saturating_sub(client_before);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("bench task");
    }
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "calls failed during the benchmark"
    );
    Cell {
        calls: calls.load(Ordering::Relaxed) as f64,
        secs: elapsed.as_secs_f64(),
        cpu: cpu.as_secs_f64(),
        client_cpu: client_cpu.as_secs_f64(),
    }
}

/// `servers`: the runtime the echo servers run on (this one when `None`).
/// Runs the Go peer (grpc-go's round_robin) over the same sizes and cells, printing its
/// table; see the module docs.
fn go_peer(sizes: &[usize], concurrency: usize, secs: Duration, rounds: usize) {
    let sizes: Vec<String> = sizes.iter().map(usize::to_string).collect();
    let args = [
        "-sizes".to_string(),
        sizes.join(","),
        "-conc".to_string(),
        concurrency.to_string(),
        "-secs".to_string(),
        secs.as_secs_f64().to_string(),
        "-rounds".to_string(),
        rounds.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let limit = secs * (sizes.len() as u32 + 2) + Duration::from_secs(180);
    for line in test_support::run_interop("grpcgo-spread", &args, limit) {
        println!("{line}");
    }
}

async fn calls_table(servers_on: Option<tokio::runtime::Handle>) {
    let mut sizes = env_list("BENCH_SIZES", &[1, 32, 1000, 4000]);
    let concurrency = env_num("BENCH_CONC", 32.0) as usize;
    let weights = env_list("BENCH_WEIGHTS", &[1]);
    assert!(
        weights.iter().all(|&w| w > 0),
        "BENCH_WEIGHTS: weights of 1 or more"
    );
    let secs = Duration::from_secs_f64(env_num("BENCH_SECS", 4.0));
    if let Some(limit) = open_file_limit() {
        let fits = |n: usize| 3 * n + 200 <= limit;
        for n in sizes.iter().filter(|&&n| !fits(n)) {
            println!(
                "skipped N = {n}: {} file descriptors needed, the open-file limit is {limit} (raise it with `ulimit -n`)",
                3 * n + 200
            );
        }
        sizes.retain(|&n| fits(n));
    }
    let most = sizes.iter().copied().max().unwrap_or(0);
    let ports = test_support::free_ports(most);
    let mut servers = Vec::with_capacity(most);
    for (i, port) in ports.iter().enumerate() {
        let (name, port) = (format!("ep-{i}"), *port);
        let start = async move { EchoServer::start_on(&name, port).await };
        servers.push(match &servers_on {
            Some(rt) => rt.spawn(start).await.expect("server start"),
            None => start.await,
        });
    }
    let addrs: Vec<String> = servers.iter().map(EchoServer::addr).collect();
    println!(
        "calls/s over N ready endpoints ({concurrency} callers, {} s a cell, {} echo servers in this process; RSS and load at the end)",
        secs.as_secs_f64(),
        servers.len()
    );
    println!(
        "{:>6} | {:>10} | {:>10} | {:>10} | {:>8} | {:>5}",
        "N", "rr/s", "wrr/s", "p2c/s", "RSS MiB", "load"
    );
    let policies = [
        ("rr", Policy::RoundRobin),
        ("wrr", Policy::WeightedRoundRobin),
        ("p2c", Policy::PeakEwma),
    ];
    // Every channel first (they share the connections, one per address), then the
    // cells in rounds, in reverse order every other round, so that a change of the
    // (shared) machine's load hits every cell alike.
    let mut channels = Vec::new();
    for &n in &sizes {
        for (name, policy) in policies {
            let name = format!("{name}-{n}");
            channels.push(ready_channel(&name, &addrs[..n], policy, &weights).await);
        }
    }
    let rounds = env_num("BENCH_ROUNDS", 4.0) as usize;
    let mut totals = vec![Cell::default(); channels.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..channels.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            totals[i].add(calls_per_sec(&channels[i], concurrency, secs / rounds as u32).await);
        }
    }
    let mut rows = Vec::new();
    for (k, &n) in sizes.iter().enumerate() {
        let rates: Vec<f64> = (0..3).map(|p| totals[k * 3 + p].per_sec()).collect();
        println!(
            "{:>6} | {:>10.0} | {:>10.0} | {:>10.0} | {:>8.0} | {:>5}",
            n,
            rates[0],
            rates[1],
            rates[2],
            rss_mib(),
            load()
        );
        rows.push((n, rates));
    }
    let at = |n: usize| rows.iter().find(|(m, _)| *m == n).map(|(_, r)| r.clone());
    if let (Some(small), Some(large)) = (at(32), at(4000)) {
        println!(
            "{:>6} | {:>10.2} | {:>10.2} | {:>10.2} |",
            "4k/32",
            large[0] / small[0],
            large[1] / small[1],
            large[2] / small[2]
        );
    }
    println!("CPU µs per call (the whole process: callers, channel, servers; /proc/self/stat)");
    println!("{:>6} | {:>10} | {:>10} | {:>10}", "N", "rr", "wrr", "p2c");
    for (k, &n) in sizes.iter().enumerate() {
        let us: Vec<f64> = (0..3).map(|p| totals[k * 3 + p].cpu_us()).collect();
        println!(
            "{:>6} | {:>10.1} | {:>10.1} | {:>10.1}",
            n, us[0], us[1], us[2]
        );
    }
    if servers_on.is_some() {
        println!(
            "client-side CPU µs per call (callers, channel, its connections; the servers' threads apart)"
        );
        println!("{:>6} | {:>10} | {:>10} | {:>10}", "N", "rr", "wrr", "p2c");
        for (k, &n) in sizes.iter().enumerate() {
            let us: Vec<f64> = (0..3).map(|p| totals[k * 3 + p].client_cpu_us()).collect();
            println!(
                "{:>6} | {:>10.1} | {:>10.1} | {:>10.1}",
                n, us[0], us[1], us[2]
            );
        }
    }
    drop(channels);
    drop(servers);
    if std::env::var("BENCH_GO").map_or(true, |v| v != "0") {
        println!();
        tokio::task::block_in_place(|| go_peer(&sizes, concurrency, secs, rounds));
    }
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

async fn apply_table() {
    let sizes = env_list("BENCH_APPLY_SIZES", &[100, 1000, 10_000, 100_000]);
    let changes = env_num("BENCH_CHANGES", 21.0) as usize;
    println!("applying one change to a channel's set of N endpoints (median of {changes} changes)");
    println!(
        "{:>7} | {:>12} | {:>12} | {:>12} | {:>11} | {:>11} | {:>16} | {:>14} | {:>14} | {:>5}",
        "N",
        "keyed µs",
        "apply µs",
        "total µs",
        "behind µs",
        "discover µs",
        "whole set µs",
        "first keyed ms",
        "first table ms",
        "load"
    );
    for n in sizes {
        // Loopback addresses that are never dialled: the channel is never called.
        let all: Vec<Endpoint> = (0..n).map(|i| Endpoint::new(synthetic_addr(i))).collect();
        let key = |i: usize| format!("svc/{i:08}");
        let resolver = Arc::new(ManualResolver::default());
        let channel = Channel::builder(&format!("bench:///apply-{n}"))
            .resolver(resolver.clone())
            .connect()
            .expect("channel");
        let sender = resolver.sender();
        let mut updates = channel.updates();
        updates.borrow_and_update();
        let started = Instant::now();
        sender.apply(
            all.iter()
                .enumerate()
                .map(|(i, e)| (key(i), Some(e.clone()))),
        );
        let first_keyed = started.elapsed();
        updates.changed().await.expect("channel alive");
        let first_table = started.elapsed() - first_keyed;
        let mut lagging = Changes::new(sender.subscribe());
        while lagging.next().now_or_never().flatten().is_some() {}
        // A resolver that publishes whole sets, on its own (no channel behind it).
        let (whole, _whole_rx) = SnapshotSender::channel();
        whole.update(all.clone());
        let (mut keyed, mut apply, mut total, mut set) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for k in 0..changes {
            // Alternately remove an endpoint from the middle and put it back.
            let middle = (key(n / 2), (k % 2 == 1).then(|| all[n / 2].clone()));
            updates.borrow_and_update();
            let started = Instant::now();
            sender.apply([middle]);
            let updated = Instant::now();
            updates.changed().await.expect("channel alive");
            let done = Instant::now();
            keyed.push(updated - started);
            apply.push(done - updated);
            total.push(done - started);
        }
        // Two changes before the channel runs (this runtime has one thread): it skips one.
        let (mut behind, mut discover) = (Vec::new(), Vec::new());
        for k in 0..changes {
            let back = k % 2 == 1;
            let toggle = |i: usize| (key(i), back.then(|| all[i].clone()));
            updates.borrow_and_update();
            sender.apply([toggle(n / 3)]);
            sender.apply([toggle(2 * n / 3)]);
            let updated = Instant::now();
            updates.changed().await.expect("channel alive");
            behind.push(updated.elapsed());
            let started = Instant::now();
            let first = lagging.next().now_or_never().flatten();
            discover.push(started.elapsed());
            assert!(first.is_some(), "a change for the stream");
            while lagging.next().now_or_never().flatten().is_some() {}
        }
        // Apart, so that the whole sets' copies (made here, freed by `update`) do not
        // load the allocator under the changes above.
        for k in 0..changes {
            let mut next = all.clone();
            if k % 2 == 0 {
                next.remove(n / 2);
            }
            let started = Instant::now();
            whole.update(next);
            set.push(started.elapsed());
        }
        println!(
            "{:>7} | {:>12} | {:>12} | {:>12} | {:>11} | {:>11} | {:>16} | {:>14.1} | {:>14.1} | {:>5}",
            n,
            us(median(&mut keyed)),
            us(median(&mut apply)),
            us(median(&mut total)),
            us(median(&mut behind)),
            us(median(&mut discover)),
            us(median(&mut set)),
            first_keyed.as_secs_f64() * 1e3,
            first_table.as_secs_f64() * 1e3,
            load()
        );
    }
}

async fn ready_table() {
    let sizes = env_list("BENCH_APPLY_SIZES", &[100, 1000, 10_000, 100_000]);
    let changes = env_num("BENCH_CHANGES", 21.0) as usize;
    println!(
        "one connection entering or leaving the rotation: the ready list's update (median of {changes})"
    );
    println!(
        "{:>7} | {:>14} | {:>18} | {:>7} | {:>5}",
        "N", "caught up µs", "every flag read µs", "ratio", "load"
    );
    for &n in &sizes {
        let (caught_up, every) = dtmdriver_core::__private::ready_list_costs(n, changes).await;
        println!(
            "{:>7} | {:>14} | {:>18} | {:>7.3} | {:>5}",
            n,
            us(caught_up),
            us(every),
            caught_up.as_secs_f64() / every.as_secs_f64().max(1e-9),
            load()
        );
    }
    let batch = env_num("BENCH_BATCH", 1000.0) as usize;
    println!();
    println!("carrying the ready list over one apply of a batch of changes (median of {changes})");
    println!(
        "{:>7} | {:>6} | {:>10} | {:>5}",
        "N", "batch", "carry µs", "load"
    );
    for n in sizes {
        let batch = batch.min(n / 2).max(1);
        let carry = dtmdriver_core::__private::carry_costs(n, batch, changes).await;
        println!(
            "{:>7} | {:>6} | {:>10} | {:>5}",
            n,
            batch,
            us(carry),
            load()
        );
    }
}

/// One change to a weighted round robin channel and its first pick after it, by the
/// number of distinct weights (1: round robin; 4: turns over weight classes; 40: over
/// power-of-two bands).
async fn weighted_table() {
    let sizes = env_list("BENCH_APPLY_SIZES", &[100, 1000, 10_000, 100_000]);
    let changes = env_num("BENCH_CHANGES", 21.0) as usize;
    println!(
        "one change to a weighted round robin channel, up to its first pick (median of {changes})"
    );
    println!(
        "{:>7} | {:>16} | {:>16} | {:>17} | {:>19} | {:>5}",
        "N", "1 weight µs", "4 weights µs", "40 weights µs", "heavy out, pick µs", "load"
    );
    for n in sizes {
        let mut cells = Vec::new();
        for distinct in [1, 4, 40] {
            cells
                .push(dtmdriver_core::__private::weighted_change_costs(n, distinct, changes).await);
        }
        let outage = dtmdriver_core::__private::weighted_outage_pick(n, 200).await;
        println!(
            "{:>7} | {:>16} | {:>16} | {:>17} | {:>19} | {:>5}",
            n,
            us(cells[0]),
            us(cells[1]),
            us(cells[2]),
            us(outage),
            load()
        );
    }
}

async fn outage_table() {
    let sizes = env_list("BENCH_OUTAGE_SIZES", &[100, 1000, 10_000]);
    let calls = env_num("BENCH_OUTAGE_CALLS", 200.0) as usize;
    println!(
        "calls failing while every one of N endpoints is unreachable ({calls} calls one after another)"
    );
    println!(
        "{:>7} | {:>12} | {:>14} | {:>14} | {:>5}",
        "N", "call µs", "CPU µs/call", "message bytes", "load"
    );
    for n in sizes {
        let addrs: Vec<String> = (0..n)
            .map(|i| format!("127.0.{}.{}:1", 1 + i / 250, 1 + i % 250))
            .collect();
        let resolver = Arc::new(ManualResolver::default());
        let channel = Channel::builder(&format!("bench:///outage-{n}"))
            .resolver(resolver.clone())
            .connect()
            .expect("channel");
        resolver.push(&addrs.iter().map(String::as_str).collect::<Vec<_>>());
        channel.warm_up();
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            let status = channel.status();
            if status.endpoints.len() == n && status.endpoints.iter().all(|e| e.state == "ejected")
            {
                break;
            }
            assert!(
                Instant::now() < until,
                "the {n} endpoints were not all ejected in 120 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut client = EchoClient::new(channel.clone());
        let mut times = Vec::with_capacity(calls);
        let mut length = 0;
        let cpu_before = cpu_used();
        for _ in 0..calls {
            let started = Instant::now();
            let err = client
                .say(SayRequest {
                    message: "outage".into(),
                })
                .await
                .expect_err("nothing is reachable");
            times.push(started.elapsed());
            assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
            length = err.message().len();
        }
        let cpu = cpu_used().saturating_sub(cpu_before);
        println!(
            "{:>7} | {:>12} | {:>14.1} | {:>14} | {:>5}",
            n,
            us(median(&mut times)),
            cpu.as_secs_f64() * 1e6 / calls as f64,
            length,
            load()
        );
    }
}

async fn idle_table() {
    let sizes = env_list("BENCH_IDLE_SIZES", &[1000, 4000]);
    let secs = Duration::from_secs_f64(env_num("BENCH_SECS", 4.0));
    let most = sizes.iter().copied().max().unwrap_or(0);
    if let Some(limit) = open_file_limit() {
        assert!(
            3 * most + 200 <= limit,
            "{} file descriptors needed, the open-file limit is {limit} (raise it with `ulimit -n`)",
            3 * most + 200
        );
    }
    let mut servers = Vec::with_capacity(most);
    for (i, port) in test_support::free_ports(most).into_iter().enumerate() {
        servers.push(EchoServer::start_on(&format!("idle-{i}"), port).await);
    }
    let addrs: Vec<String> = servers.iter().map(EchoServer::addr).collect();
    println!(
        "N idle connections pinging while idle (keepalive 30 s), {} s idle each",
        secs.as_secs_f64()
    );
    println!(
        "{:>6} | {:>9} | {:>17} | {:>17} | {:>5}",
        "N", "checks/s", "sweeper CPU ms/s", "process CPU ms/s", "load"
    );
    for &n in &sizes {
        let resolver = Arc::new(ManualResolver::default());
        let channel = Channel::builder(&format!("bench:///idle-{n}"))
            .resolver(resolver.clone())
            .keepalive(Duration::from_secs(30))
            .keepalive_while_idle(true)
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .expect("channel");
        resolver.push(&addrs[..n].iter().map(String::as_str).collect::<Vec<_>>());
        channel.warm_up();
        let until = Instant::now() + Duration::from_secs(120);
        while channel
            .status()
            .endpoints
            .iter()
            .filter(|e| e.state == "ready")
            .count()
            < n
        {
            assert!(
                Instant::now() < until,
                "{n} endpoints not ready within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The first checks after the handshakes, then nothing is due for 30 s.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sweeper =
            || threads_cpu_used(|comm| comm.starts_with("dtmdriver-liven")).unwrap_or_default();
        let (checks, swept, cpu) = (
            dtmdriver_core::__private::liveness_checks(),
            sweeper(),
            cpu_used(),
        );
        let started = Instant::now();
        tokio::time::sleep(secs).await;
        let elapsed = started.elapsed().as_secs_f64();
        let checks = dtmdriver_core::__private::liveness_checks() - checks;
        let ms = |d: Duration| d.as_secs_f64() * 1e3 / elapsed;
        println!(
            "{:>6} | {:>9.0} | {:>17.2} | {:>17.2} | {:>5}",
            n,
            checks as f64 / elapsed,
            ms(sweeper().saturating_sub(swept)),
            ms(cpu_used().saturating_sub(cpu)),
            load()
        );
        drop(channel);
    }
    drop(servers);
    if std::env::var("BENCH_GO").is_ok_and(|v| v == "0") {
        return;
    }
    let sizes: Vec<String> = sizes.iter().map(usize::to_string).collect();
    let secs_arg = secs.as_secs_f64().to_string();
    let args = ["-idle", "-sizes", &sizes.join(","), "-secs", &secs_arg];
    let limit = secs * (sizes.len() as u32 + 2) + Duration::from_secs(180);
    for line in test_support::run_interop("grpcgo-spread", &args, limit) {
        println!("{line}");
    }
}

fn main() {
    let part = std::env::var("BENCH_PART").unwrap_or_default();
    if part == "idle" {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(idle_table());
        return;
    }
    if part == "outage" {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(outage_table());
        return;
    }
    if part.is_empty() || part == "apply" {
        // One thread: the channel's updater runs only once `update` has returned and
        // the bench waits, so the two times do not overlap.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(apply_table());
        println!();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(ready_table());
        println!();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(weighted_table());
        println!();
    }
    if part.is_empty() || part == "calls" {
        let apart = std::env::var("BENCH_SERVERS").is_ok_and(|v| v == "apart");
        let servers = apart.then(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name(SERVER_THREADS)
                .enable_all()
                .build()
                .expect("servers' runtime")
        });
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(calls_table(servers.as_ref().map(|rt| rt.handle().clone())));
        // The servers' runtime ends here, outside any runtime.
        drop(servers);
    }
}
