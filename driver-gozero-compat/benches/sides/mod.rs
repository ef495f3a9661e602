//! What the scale benches (`scale`, `scale_consul`) share: the sides under measurement,
//! each its own process, and the Rust side's program.
//!
//! A side speaks one line protocol on stdout: `hello` once it starts, `set N` each time
//! the size of the set it follows changes, `ready` once all of many targets resolved;
//! it exits when its stdin closes. Its CPU is the sum of its threads' run time from
//! `/proc/PID/task/*/schedstat` (ns), its memory `VmRSS`. The bench binary is also the
//! Rust side's program: run with `SCALE_PROBE=resolver|channel` (see [`probe`]).

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use dtmdriver_core::resolve::{ResolverState, SnapshotSender, resolver_for};
use dtmdriver_core::{Target, use_driver};
use test_support::read_lines;

/// How long any one step may take before the bench gives up on a side.
pub const STEP_LIMIT: Duration = Duration::from_secs(120);

pub use test_support::bench::{env_list, load};

/// One number from the environment.
pub fn env_num(name: &str, default: usize) -> usize {
    env_list(name, &[default])[0]
}

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The median.
pub fn median(v: Vec<f64>) -> f64 {
    percentile(v, 0.5)
}

/// The `p` percentile (nearest rank).
pub fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

// ---------------------------------------------------------------------------------
// The sides

/// One side's process and its time-stamped stdout lines.
pub struct Side {
    /// Its name in the tables.
    pub name: &'static str,
    child: Child,
    lines: Receiver<(Instant, String)>,
    /// Whether its changes are timed (else only its CPU is read).
    pub timed: bool,
}

impl Side {
    /// A Go side: `interop/bin/BINARY ARGS`.
    pub fn go(name: &'static str, binary: &str, args: &[&str]) -> Side {
        Side::spawn(
            name,
            Command::new(test_support::interop_binary(binary)),
            args,
            true,
        )
    }

    /// A Rust side: this bench binary as [`probe`] in `mode`.
    pub fn rust(name: &'static str, mode: &str, args: &[&str], timed: bool) -> Side {
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
    pub fn wait(&self, what: &str, want: impl Fn(&str) -> bool) -> Instant {
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

    /// Waits for `set n`.
    pub fn wait_set(&self, n: usize) -> Instant {
        let want = format!("set {n}");
        self.wait(&want, |l| l == want)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time of all its threads so far, in ns.
    pub fn cpu_ns(&self) -> u64 {
        let dir = format!("/proc/{}/task", self.pid());
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
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
// One key with N instances: the figures and the table

/// One side's figures for one N.
pub struct Row {
    /// N.
    pub n: usize,
    /// The side.
    pub side: &'static str,
    /// From `hello` to the first full set.
    pub first_ms: f64,
    /// The side's CPU from its start to the first full set, in ms.
    pub first_cpu_ms: f64,
    /// Change → set changed, median (timed sides).
    pub lat_med_ms: Option<f64>,
    /// Change → set changed, p99 (timed sides).
    pub lat_p99_ms: Option<f64>,
    /// CPU per change, median of the rounds.
    pub cpu_us: f64,
    /// RSS at the end.
    pub rss_kib: u64,
}

/// Measures the sides `starts` start, each following its own set of `n` instances (its
/// own key or service, so that a change wakes only the side it is for): one side at a
/// time, the time from its `hello` to its first full set (`n`, or `min(n, 32)` for an
/// untimed subset side) and its CPU until then, the next side started only once the
/// last one has its set; then
/// `rounds` rounds in which each side in turn sees `changes` changes while the others
/// idle. `change(i, c)` makes change `c` in the set of side `i` and returns the size of
/// that set after it; a timed side's latency runs from just before the call to its `set`
/// line, its CPU over its own changes.
///
/// Why one side at a time: the sides share two cores. When every side followed one key,
/// each change ran all of them at once, and a side's CPU per change grew with the
/// others' work (the wake-ups and cache misses of a contended machine): ours measured
/// 171 → 225 µs from N = 100 to 10,000 beside go-zero (which spends 2 ms a change at
/// 10,000), and 106 → 135 µs alone. The first sets likewise: started together, the
/// sides split the cores and etcd's time between them (at 100,000 instances each
/// listing is a few MB that etcd spends 0.2 s of CPU serving), and a side's first set
/// measured the others as much as itself.
pub async fn measure(
    starts: &[&dyn Fn() -> Side],
    n: usize,
    rounds: usize,
    changes: usize,
    mut change: impl AsyncFnMut(usize, usize) -> usize,
) -> Vec<Row> {
    let mut sides = Vec::new();
    let mut first = Vec::new();
    for start in starts {
        let side = start();
        let hello = side.wait("hello", |l| l == "hello");
        let expected = if side.timed { n } else { n.min(32) };
        let set = side.wait_set(expected);
        first.push((ms(set - hello), side.cpu_ns() as f64 / 1e6));
        sides.push(side);
    }
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
    for _ in 0..rounds {
        for (i, side) in sides.iter().enumerate() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = side.cpu_ns();
            for c in 0..changes {
                let start = Instant::now();
                let size = change(i, c).await;
                if side.timed {
                    lat[i].push(ms(side.wait_set(size) - start));
                }
            }
            // Let an untimed side finish its last change before reading its CPU.
            if !side.timed {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let spent = side.cpu_ns() - before;
            cpu[i].push(spent as f64 / 1e3 / changes as f64);
        }
    }
    sides
        .iter()
        .enumerate()
        .map(|(i, side)| Row {
            n,
            side: side.name,
            first_ms: first[i].0,
            first_cpu_ms: first[i].1,
            lat_med_ms: side.timed.then(|| median(lat[i].clone())),
            lat_p99_ms: side.timed.then(|| percentile(lat[i].clone(), 0.99)),
            cpu_us: median(cpu[i].clone()),
            rss_kib: side.rss_kib(),
        })
        .collect()
}

/// Prints `table` as markdown, with each side's ratios to the side named `base` at the
/// same N.
#[allow(clippy::print_stdout)] // a bench prints its table
pub fn print_table(table: &[Row], base: &str) {
    println!(
        "| N | side | first set ms | first set CPU ms | change→set median ms | p99 ms | CPU µs/change | RSS KiB | CPU vs {base} | median vs {base} |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in table {
        let go = table
            .iter()
            .find(|r| r.n == row.n && r.side == base)
            .unwrap_or_else(|| panic!("no {base} row"));
        let opt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.3}"));
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "–".into(),
        };
        println!(
            "| {} | {} | {:.1} | {:.1} | {} | {} | {:.0} | {} | {} | {} |",
            row.n,
            row.side,
            row.first_ms,
            row.first_cpu_ms,
            opt(row.lat_med_ms),
            opt(row.lat_p99_ms),
            row.cpu_us,
            row.rss_kib,
            ratio(Some(row.cpu_us), Some(go.cpu_us)),
            ratio(row.lat_med_ms, go.lat_med_ms),
        );
    }
}

// ---------------------------------------------------------------------------------
// The Rust side's program

/// Runs the Rust side in `mode` (`resolver`: the scheme's resolver; `channel`: our
/// balancing `Channel`, reporting once its table holds the set) with the arguments
/// `TARGET [COUNT EXPECT]`: one target, reporting `set N`; or COUNT targets
/// `TARGET.i`, reporting `ready` once each has EXPECT endpoints.
/// A scale bench's `main`: the Rust side's program when run with `SCALE_PROBE`, else
/// `orchestrate` on a single-threaded runtime.
pub fn main<F: std::future::Future<Output = ()>>(orchestrate: impl FnOnce() -> F) {
    if let Ok(mode) = std::env::var("SCALE_PROBE") {
        return probe(&mode);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(orchestrate());
}

pub fn probe(mode: &str) {
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

/// The size of a snapshot's set, `None` before the first resolution: the one place
/// the scale benches read `ResolverState::endpoints`.
fn set_size(state: &ResolverState) -> Option<usize> {
    state.endpoints.as_ref().map(|e| e.len())
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
            report(set_size(&snapshots.borrow()));
            if updates.changed().await.is_err() {
                return;
            }
        }
    }
    let mut rx = resolve(target);
    loop {
        report(set_size(&rx.borrow_and_update()));
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
                let n = set_size(&snapshots.borrow_and_update()).unwrap_or(0);
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
