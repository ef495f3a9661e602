//! Unary throughput and p99 latency of the balancing channel against tonic's own
//! channels, over the same three in-process echo servers.
//!
//! `cargo bench -p dtmdriver-core --bench channel` prints one row per concurrency:
//! (a) our [`Channel`] over the three endpoints, (b) a plain tonic channel to one
//! endpoint, (c) tonic's `balance_channel` over the three, and the ratios a/b, a/c;
//! also (a1) our channel to the one endpoint (b) uses, whose ratio a1/b isolates the
//! per-call cost of our stack from the effect of spreading over three connections.
//! `BENCH_SECS` sets the measured seconds per cell (default 4), split over
//! `BENCH_ROUNDS` rounds (default 8) in which the clients take turns, in reverse order
//! every other round. For profiling one client alone, `BENCH_ONLY` names the columns
//! to run (e.g. `a` or `a,c`) and `BENCH_CONC` the concurrencies (e.g. `64`); the
//! total number of calls made goes to stderr, to divide a profile's totals by.
//! `BENCH_POLICY` (`round_robin`, `weighted_round_robin`, `p2c`) sets (a)'s policy.
#![allow(clippy::print_stdout)] // a bench binary: its output is the table

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dtmdriver_core::Channel;
use test_support::{EchoClient, EchoServer, SayRequest};
use tonic::transport::Endpoint;
use tonic::transport::channel::Change;

/// Every call made, warm-up included, so that a profile's totals can be divided by it.
static CALLS: AtomicU64 = AtomicU64::new(0);

const CONCURRENCY: [usize; 3] = [1, 16, 64];
const WARM_UP: Duration = Duration::from_millis(100);

/// Rounds per cell (`BENCH_ROUNDS`): the clients take turns, so a load spike on the
/// (shared) host, or a run of unlucky thread placement, hits all of them alike
/// instead of skewing one.
const ROUNDS: u32 = 8;

/// Calls, time and latencies of one or more runs.
#[derive(Default)]
struct Sample {
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Sample {
    fn add(&mut self, other: Sample) {
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
    }

    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn p99(&mut self) -> Duration {
        self.latencies.sort_unstable();
        let n = self.latencies.len();
        self.latencies
            .get((n * 99 / 100).min(n.saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    }
}

/// Runs `concurrency` loops of unary calls on `channel` for `secs`.
async fn measure<C>(channel: C, concurrency: usize, secs: Duration) -> Sample
where
    C: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + 'static,
    C::Future: Send,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    C::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <C::ResponseBody as http_body::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let mut client = EchoClient::new(channel.clone());
        let (recording, stop) = (recording.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let ok = client
                    .say(SayRequest {
                        message: "bench".into(),
                    })
                    .await
                    .is_ok();
                CALLS.fetch_add(1, Ordering::Relaxed);
                if recording.load(Ordering::Relaxed) {
                    latencies.push(started.elapsed());
                    errors += u64::from(!ok);
                }
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(WARM_UP).await;
    recording.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(secs).await;
    recording.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (latencies, e) = t.await.expect("bench task");
        all.extend(latencies);
        errors += e;
    }
    assert_eq!(errors, 0, "calls failed during the benchmark");
    Sample {
        elapsed,
        latencies: all,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

async fn run() {
    let rounds = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(ROUNDS);
    let secs = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(4), Duration::from_secs_f64);
    let servers = [
        EchoServer::start("bench-0").await,
        EchoServer::start("bench-1").await,
        EchoServer::start("bench-2").await,
    ];
    let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();

    let policy = std::env::var("BENCH_POLICY").map_or(dtmdriver_core::Policy::default(), |p| {
        p.parse().expect("BENCH_POLICY")
    });
    let ours = Channel::builder(&format!("direct:///{}", addrs.join(",")))
        .policy(policy)
        .connect()
        .expect("our channel");
    ours.warm_up();
    let ours_one = Channel::builder(&format!("direct:///{}", addrs[0]))
        .connect()
        .expect("our channel to one endpoint");
    ours_one.warm_up();
    let single = Endpoint::from_shared(format!("http://{}", addrs[0]))
        .expect("endpoint")
        .connect()
        .await
        .expect("tonic channel");
    let (balanced, changes) = tonic::transport::Channel::balance_channel::<usize>(16);
    for (i, addr) in addrs.iter().enumerate() {
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
        changes
            .send(Change::Insert(i, endpoint))
            .await
            .expect("balance channel");
    }

    println!(
        "{:>5} | {:>10} {:>7} | {:>10} {:>7} | {:>10} {:>7} | {:>10} {:>7} | {:>5} | {:>5} | {:>5}",
        "conc",
        "a ours/s",
        "p99 ms",
        "a1 ours-1/s",
        "p99 ms",
        "b tonic-1/s",
        "p99 ms",
        "c bal/s",
        "p99 ms",
        "a/b",
        "a/c",
        "a1/b"
    );
    let only = std::env::var("BENCH_ONLY").unwrap_or_else(|_| "a,a1,b,c".into());
    let columns: Vec<&str> = only.split(',').map(str::trim).collect();
    let concurrencies: Vec<usize> = match std::env::var("BENCH_CONC") {
        Ok(v) => v
            .split(',')
            .map(|c| {
                c.trim()
                    .parse()
                    .expect("BENCH_CONC: comma-separated numbers")
            })
            .collect(),
        Err(_) => CONCURRENCY.to_vec(),
    };
    for concurrency in concurrencies {
        let (mut a, mut a1, mut b, mut c) = (
            Sample::default(),
            Sample::default(),
            Sample::default(),
            Sample::default(),
        );
        let slice = secs / rounds;
        for round in 0..rounds {
            let mut order = columns.clone();
            if round % 2 == 1 {
                order.reverse();
            }
            for column in &order {
                match *column {
                    "a" => a.add(measure(ours.clone(), concurrency, slice).await),
                    "a1" => a1.add(measure(ours_one.clone(), concurrency, slice).await),
                    "b" => b.add(measure(single.clone(), concurrency, slice).await),
                    "c" => c.add(measure(balanced.clone(), concurrency, slice).await),
                    other => panic!("BENCH_ONLY: unknown column `{other}`; use a, a1, b, c"),
                }
            }
        }
        println!(
            "{:>5} | {:>10.0} {:>7} | {:>10.0} {:>7} | {:>10.0} {:>7} | {:>10.0} {:>7} | {:>5.2} | {:>5.2} | {:>5.2}",
            concurrency,
            a.rate(),
            ms(a.p99()),
            a1.rate(),
            ms(a1.p99()),
            b.rate(),
            ms(b.p99()),
            c.rate(),
            ms(c.p99()),
            a.rate() / b.rate(),
            a.rate() / c.rate(),
            a1.rate() / b.rate()
        );
    }
    drop(changes);
    eprintln!(
        "calls made, warm-up included: {}",
        CALLS.load(Ordering::Relaxed)
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}
