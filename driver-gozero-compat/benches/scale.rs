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
//! Part 1, one key with N instances (go-zero's format, `KEY/ID` → `HOST:PORT`), a key of
//! its own for each side: the sides started one at a time, each side's time from its
//! start to its first full set and its CPU until then (the next side starts once the
//! last one has its set), then SCALE_ROUNDS rounds in which each side in turn sees SCALE_CHANGES changes of its key
//! (one instance added, then removed again) while the others idle, each timed from the
//! start of the etcd write to the line in which the side reports the new size; CPU per
//! change is the side's CPU over its changes of a round divided by their number (median
//! of the rounds); RSS at the end.
//! Part 2, SCALE_TARGETS keys of 3 instances each, one side at a time: time to resolve
//! them all, RSS per target (growth from start to all resolved, divided by the targets),
//! and etcd's own count of Watch streams and watchers while the side runs.
//!
//! The bench binary is also the Rust side's program: run with `SCALE_PROBE=resolver|
//! channel` it follows a target and speaks the same line protocol as gozero-scale
//! (`hello`, `set N`, `ready`; it exits when its stdin closes); see `sides`, which the
//! consul bench (`scale_consul`) shares.

#![allow(clippy::print_stdout)] // a bench prints its table

mod sides;

use std::time::Duration;

use dtmdriver_gozero as _;
use etcd_client::{Client, Txn, TxnOp};
use sides::{Side, env_list, env_num, load, measure, ms, print_table};
use test_support::EtcdServer;
use test_support::synthetic_addr as addr;

fn main() {
    sides::main(orchestrate);
}

/// go-zero's side: `interop/bin/gozero-scale ARGS`.
fn go(args: &[&str]) -> Side {
    Side::go("go-zero", "gozero-scale", args)
}

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

async fn orchestrate() {
    let sizes = env_list("SCALE_SIZES", &[100, 1000, 10_000, 100_000]);
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
        // Each side follows its own key of n instances (see `sides::measure`).
        let key = |side: usize| format!("scale{n}-{side}.rpc");
        for side in 0..4 {
            let key = key(side);
            put_all(&mut client, (0..n).map(|i| (format!("{key}/{i}"), addr(i)))).await;
        }
        let target = |side: usize| format!("etcd://{ep}/{}", key(side));
        let full = |side: usize| format!("{}?subset=0", target(side));
        let (k0, f1, f2, t3) = (key(0), full(1), full(2), target(3));
        let sides: [&dyn Fn() -> Side; 4] = [
            &|| go(&["-etcd", &ep, "-key", &k0]),
            &|| Side::rust("rs-resolver", "resolver", &[&f1], true),
            &|| Side::rust("rs-channel", "channel", &[&f2], true),
            &|| Side::rust("rs-subset", "resolver", &[&t3], false),
        ];
        let client = &mut client;
        table.extend(
            measure(&sides, n, rounds, changes, async |side, c| {
                let extra = format!("{}/extra", key(side));
                if c % 2 == 0 {
                    client
                        .put(extra.as_str(), addr(n), None)
                        .await
                        .expect("put");
                    n + 1
                } else {
                    client.delete(extra.as_str(), None).await.expect("delete");
                    n
                }
            })
            .await,
        );
        println!("N = {n} done, load {}", load());
    }
    println!();
    print_table(&table, "go-zero");
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
            "go-zero" => go(&[
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
