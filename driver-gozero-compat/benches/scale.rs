//! Discovery at scale, side by side with go-zero in one run (issue #12).
//!
//! ```sh
//! bash interop/build.sh   # once: builds interop/bin/gozero-scale (go-zero's side)
//! cargo bench -p dtmdriver-gozero --bench scale
//! # SCALE_SIZES=100,1000,10000,100000  SCALE_CHANGES=60  SCALE_ROUNDS=3  SCALE_TARGETS=1000
//! ```
//!
//! One etcd; every side is its own process, so CPU and memory are each side's alone
//! (read from `/proc/PID`: CPU as the sum of its threads' `schedstat` run time, in ns;
//! RSS as `VmRSS`). The sides:
//!
//! - `go-zero`: `interop/bin/gozero-scale`, go-zero v1.10.3's `discov.Subscriber`, the
//!   watcher under every zrpc client, reading the value set on each change as the zrpc
//!   resolver does;
//! - `rs-resolver`: `dtm-driver-gozero`'s resolver for `etcd://HOST/KEY?subset=0` (every
//!   change publishes a snapshot);
//! - `rs-channel`: our balancing `Channel` on the same target: the resolver plus the
//!   balancer's table, the set a call is picked from;
//! - `rs-subset`: the resolver with go-zero's default 32-server subset (CPU only: a change
//!   outside its subset publishes nothing, so it has no latency to time).
//!
//! Part 1, one key with N instances (go-zero's format, `KEY/ID` → `HOST:PORT`): the time
//! from a side's start to its first full set, then SCALE_ROUNDS rounds of SCALE_CHANGES
//! changes (one instance added, then removed again), each timed from the start of the
//! etcd write to the line in which a side reports the new size; CPU per change is the
//! side's CPU over a round divided by its changes (median of the rounds); RSS at the end.
//! Part 2, SCALE_TARGETS keys of 3 instances each, one side at a time: time to resolve
//! them all, RSS per target (growth from start to all resolved, divided by the targets),
//! and etcd's own count of Watch streams and watchers while the side runs.
//!
//! The bench binary is also the Rust side's program: run with `SCALE_PROBE=resolver|
//! channel|subset` it follows a target and speaks the same line protocol as
//! gozero-scale (`hello`, `set N`, `ready`; it exits when its stdin closes).

#![allow(clippy::print_stdout)] // a bench prints its table

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use dtmdriver_core::resolve::{SnapshotSender, resolver_for};
use dtmdriver_core::{Target, use_driver};
use dtmdriver_gozero as _;
use etcd_client::{Client, Txn, TxnOp};
use test_support::EtcdServer;
use test_support::{interop_binary, read_lines, synthetic_addr as addr};

/// How long any one step may take before the bench gives up on a side.
const STEP_LIMIT: Duration = Duration::from_secs(120);

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().parse().unwrap_or_else(|_| panic!("{name}: `{s}`")))
        .collect()
}

fn env_num(name: &str, default: usize) -> usize {
    env_list(name, &default.to_string())[0]
}

fn main() {
    if let Ok(mode) = std::env::var("SCALE_PROBE") {
        return probe(&mode);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(orchestrate());
}

// ---------------------------------------------------------------------------------
// The sides

/// One side's process and its time-stamped stdout lines.
struct Side {
    name: &'static str,
    child: Child,
    lines: Receiver<(Instant, String)>,
    timed: bool,
}

impl Side {
    fn go(args: &[&str]) -> Side {
        Side::spawn(
            "go-zero",
            Command::new(interop_binary("gozero-scale")),
            args,
            true,
        )
    }

    fn rust(name: &'static str, mode: &str, args: &[&str], timed: bool) -> Side {
        let mut cmd = Command::new(std::env::current_exe().expect("own path"));
        cmd.env("SCALE_PROBE", mode).env("RUST_LOG", "off");
        Side::spawn(name, cmd, args, timed)
    }

    fn spawn(name: &'static str, mut cmd: Command, args: &[&str], timed: bool) -> Side {
        let mut child = cmd
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let lines = read_lines(child.stdout.take().expect("stdout"));
        Side {
            name,
            child,
            lines,
            timed,
        }
    }

    /// Waits for a line satisfying `want`; the instant it was read.
    fn wait(&self, what: &str, want: impl Fn(&str) -> bool) -> Instant {
        let until = Instant::now() + STEP_LIMIT;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) if want(&line) => return at,
                Ok(_) => {}
                Err(e) => panic!("{}: no `{what}` within {STEP_LIMIT:?}: {e}", self.name),
            }
        }
    }

    fn wait_set(&self, n: usize) -> Instant {
        let want = format!("set {n}");
        self.wait(&want, |l| l == want)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time of all its threads so far, in ns.
    fn cpu_ns(&self) -> u64 {
        let dir = format!("/proc/{}/task", self.pid());
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// Resident memory in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // the polite way: the side exits on EOF
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------
// The Rust side's program

fn probe(mode: &str) {
    // Exit when the bench closes our stdin.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let args: Vec<String> = std::env::args().skip(1).collect();
    let target = args.first().expect("target").clone();
    let count: usize = args.get(1).map_or(0, |c| c.parse().expect("count"));
    let expect: usize = args.get(2).map_or(1, |c| c.parse().expect("expect"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        use_driver("dtm-driver-gozero").expect("driver linked");
        say("hello");
        if count == 0 {
            follow_one(mode, &target).await;
        } else {
            follow_many(mode, &target, count, expect).await;
        }
        std::future::pending::<()>().await;
    });
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Resolves `target` with its scheme's resolver; the receiver of its snapshots.
fn resolve(target: &str) -> dtmdriver_core::resolve::SnapshotReceiver {
    let target = Target::parse(target).expect("target");
    let (tx, rx) = SnapshotSender::channel();
    resolver_for(&target)
        .expect("resolver")
        .resolve(&target, tx)
        .expect("resolve");
    rx
}

/// Reports the size of the set each time it changes.
async fn follow_one(mode: &str, target: &str) {
    let mut last = usize::MAX;
    let mut report = |n: Option<usize>| {
        if let Some(n) = n.filter(|&n| n != last) {
            last = n;
            say(&format!("set {n}"));
        }
    };
    if mode == "channel" {
        let channel = dtmdriver_core::connect(target).expect("connect");
        let snapshots = channel.snapshots();
        let mut updates = channel.updates();
        loop {
            // `updates` ticks once the balancer's table holds the resolver's newest set.
            report(snapshots.borrow().endpoints.as_ref().map(|e| e.len()));
            if updates.changed().await.is_err() {
                return;
            }
        }
    }
    let mut rx = resolve(target);
    loop {
        report(rx.borrow_and_update().endpoints.as_ref().map(|e| e.len()));
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Follows `count` targets `TARGET.i` and says `ready` once each has `expect` endpoints.
async fn follow_many(mode: &str, target: &str, count: usize, expect: usize) {
    let pending = Arc::new(AtomicUsize::new(count));
    let (base, query) = target.split_once('?').unwrap_or((target, ""));
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let mut keep = Vec::with_capacity(count);
    for i in 0..count {
        let target = format!("{base}.{i}{query}");
        let (snapshots, updates) = if mode == "channel" {
            let channel = dtmdriver_core::connect(&target).expect("connect");
            let pair = (channel.snapshots(), Some(channel.updates()));
            keep.push(Some(channel));
            pair
        } else {
            keep.push(None);
            (resolve(&target), None)
        };
        let pending = pending.clone();
        tokio::spawn(async move {
            let mut snapshots = snapshots;
            let mut updates = updates;
            loop {
                let n = snapshots
                    .borrow_and_update()
                    .endpoints
                    .as_ref()
                    .map_or(0, |e| e.len());
                if n >= expect {
                    if pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                        say("ready");
                    }
                    // Keep the receiver (and so the watch) alive.
                    std::future::pending::<()>().await;
                }
                let changed = match updates.as_mut() {
                    Some(u) => u.changed().await.is_ok(),
                    None => snapshots.changed().await.is_ok(),
                };
                if !changed {
                    return;
                }
            }
        });
    }
    std::mem::forget(keep); // the channels live as long as the process
}

// ---------------------------------------------------------------------------------
// The bench

/// Writes `keys` (key, value) with etcd's default limit of 128 operations a transaction.
async fn put_all(client: &mut Client, keys: impl Iterator<Item = (String, String)>) {
    let keys: Vec<_> = keys.collect();
    for batch in keys.chunks(128) {
        let ops: Vec<TxnOp> = batch
            .iter()
            .map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None))
            .collect();
        client.txn(Txn::new().and_then(ops)).await.expect("txn");
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// One side's figures for one N.
struct Row {
    side: &'static str,
    first_ms: f64,
    lat_med_ms: Option<f64>,
    lat_p99_ms: Option<f64>,
    cpu_us: f64,
    rss_kib: u64,
}

async fn orchestrate() {
    let sizes = env_list("SCALE_SIZES", "100,1000,10000,100000");
    let changes = env_num("SCALE_CHANGES", 60);
    let rounds = env_num("SCALE_ROUNDS", 3);
    let targets = env_num("SCALE_TARGETS", 1000);
    let etcd = EtcdServer::start();
    let ep = etcd.endpoint();
    let mut client = Client::connect([ep.clone()], None)
        .await
        .expect("etcd client");

    println!("# Part 1: one key with N instances; {rounds} rounds of {changes} changes");
    println!("load at start: {}", load());
    let mut table = Vec::new();
    for &n in &sizes {
        let key = format!("scale{n}.rpc");
        put_all(&mut client, (0..n).map(|i| (format!("{key}/{i}"), addr(i)))).await;
        let target = format!("etcd://{ep}/{key}");
        let full = format!("{target}?subset=0");
        let sides = [
            Side::go(&["-etcd", &ep, "-key", &key]),
            Side::rust("rs-resolver", "resolver", &[&full], true),
            Side::rust("rs-channel", "channel", &[&full], true),
            Side::rust("rs-subset", "resolver", &[&target], false),
        ];
        let mut first = Vec::new();
        for side in &sides {
            let hello = side.wait("hello", |l| l == "hello");
            let expected = if side.timed { n } else { n.min(32) };
            first.push(ms(side.wait_set(expected) - hello));
        }
        let extra = format!("{key}/extra");
        let mut lat: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
        let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
        for _ in 0..rounds {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before: Vec<u64> = sides.iter().map(Side::cpu_ns).collect();
            for c in 0..changes {
                let start = Instant::now();
                let size = if c % 2 == 0 {
                    client
                        .put(extra.as_str(), addr(n), None)
                        .await
                        .expect("put");
                    n + 1
                } else {
                    client.delete(extra.as_str(), None).await.expect("delete");
                    n
                };
                for (i, side) in sides.iter().enumerate().filter(|(_, s)| s.timed) {
                    lat[i].push(ms(side.wait_set(size) - start));
                }
            }
            // Let the untimed side finish its last change before reading its CPU.
            tokio::time::sleep(Duration::from_millis(200)).await;
            for (i, side) in sides.iter().enumerate() {
                let spent = side.cpu_ns() - before[i];
                cpu[i].push(spent as f64 / 1e3 / changes as f64);
            }
        }
        for (i, side) in sides.iter().enumerate() {
            table.push((
                n,
                Row {
                    side: side.name,
                    first_ms: first[i],
                    lat_med_ms: side.timed.then(|| median(lat[i].clone())),
                    lat_p99_ms: side.timed.then(|| percentile(lat[i].clone(), 0.99)),
                    cpu_us: median(cpu[i].clone()),
                    rss_kib: side.rss_kib(),
                },
            ));
        }
        drop(sides);
        println!("N = {n} done, load {}", load());
    }
    println!();
    println!(
        "| N | side | first set ms | change→set median ms | p99 ms | CPU µs/change | RSS KiB | CPU vs go-zero | median vs go-zero |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for (n, row) in &table {
        let go = table
            .iter()
            .find(|(m, r)| m == n && r.side == "go-zero")
            .map(|(_, r)| r)
            .expect("go-zero row");
        let opt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.3}"));
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "–".into(),
        };
        println!(
            "| {n} | {} | {:.1} | {} | {} | {:.0} | {} | {} | {} |",
            row.side,
            row.first_ms,
            opt(row.lat_med_ms),
            opt(row.lat_p99_ms),
            row.cpu_us,
            row.rss_kib,
            ratio(Some(row.cpu_us), Some(go.cpu_us)),
            ratio(row.lat_med_ms, go.lat_med_ms),
        );
    }
    println!("load at end of part 1: {}", load());

    if targets == 0 {
        return;
    }
    println!();
    println!("# Part 2: {targets} targets of 3 instances each, one side at a time");
    let prefix = "scalek";
    put_all(
        &mut client,
        (0..targets)
            .flat_map(|t| (0..3).map(move |j| (format!("{prefix}.{t}/{j}"), addr(t * 3 + j)))),
    )
    .await;
    let target = format!("etcd://{ep}/{prefix}");
    let count = targets.to_string();
    println!(
        "| side | resolve all ms | RSS start KiB | RSS all KiB | RSS/target KB | Watch streams | watchers |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let streams = || {
        etcd.metric("etcd_debugging_mvcc_watch_stream_total")
            .unwrap_or(f64::NAN)
    };
    let watchers = || {
        etcd.metric("etcd_debugging_mvcc_watcher_total")
            .unwrap_or(f64::NAN)
    };
    for which in ["go-zero", "rs-resolver", "rs-channel"] {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (s0, w0) = (streams(), watchers());
        let side = match which {
            "go-zero" => Side::go(&[
                "-etcd", &ep, "-key", prefix, "-count", &count, "-expect", "3",
            ]),
            "rs-resolver" => Side::rust("rs-resolver", "resolver", &[&target, &count, "3"], true),
            _ => Side::rust("rs-channel", "channel", &[&target, &count, "3"], true),
        };
        let hello = side.wait("hello", |l| l == "hello");
        let rss0 = side.rss_kib();
        let ready = side.wait("ready", |l| l == "ready");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss1 = side.rss_kib();
        println!(
            "| {which} | {:.0} | {rss0} | {rss1} | {:.1} | {} | {} |",
            ms(ready - hello),
            (rss1.saturating_sub(rss0)) as f64 * 1.024 / targets as f64,
            streams() - s0,
            watchers() - w0,
        );
    }
    println!("load at end: {}", load());
}
