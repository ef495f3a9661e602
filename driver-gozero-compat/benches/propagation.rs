//! How fast an etcd write reaches a client's endpoint set: the Rust channel through
//! `dtm-driver-gozero` beside go-zero's own `discov.Subscriber` (interop/bin/
//! gozero-subscriber), on the same etcd, in the same run, for the same writes.
//!
//! `cargo bench -p driver-gozero-compat --bench propagation` prints median and p99 of the
//! time from the start of each write to each side seeing the new set.

#![allow(clippy::print_stdout)] // a bench prints its table

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use driver_gozero_compat as _;
use test_support::EtcdServer;

const WRITES: usize = 200;

fn set_of(line: &str) -> BTreeSet<String> {
    line.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<32} n={:<4} median {:>8.3} ms   p99 {:>8.3} ms   max {:>8.3} ms",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../interop/bin/gozero-subscriber");
    assert!(
        bin.exists(),
        "{} is missing: run `bash interop/build.sh`",
        bin.display()
    );
    let etcd = EtcdServer::start();
    let key = "prop.rpc";

    // go-zero's subscriber, its lines time-stamped as they arrive.
    let mut go = Command::new(&bin)
        .args(["-etcd", &etcd.endpoint(), "-key", key])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start gozero-subscriber");
    let (go_tx, go_rx) = mpsc::channel::<(Instant, BTreeSet<String>)>();
    let stdout = go.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if go_tx.send((Instant::now(), set_of(&line))).is_err() {
                return;
            }
        }
    });
    go_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("go-zero subscriber ready");

    // The Rust channel, its endpoint sets time-stamped by a watcher task.
    driver_core::use_driver("dtm-driver-gozero").expect("driver linked");
    let channel =
        driver_core::connect(&format!("etcd://{}/{key}", etcd.endpoint())).expect("connect");
    let (rs_tx, rs_rx) = mpsc::channel::<(Instant, BTreeSet<String>)>();
    let watched = channel.clone();
    tokio::spawn(async move {
        let mut updates = watched.updates();
        loop {
            let status = watched.status();
            if status.resolved {
                let set = status
                    .endpoints
                    .iter()
                    .map(|e| e.endpoint.addr.clone())
                    .collect();
                if rs_tx.send((Instant::now(), set)).is_err() {
                    return;
                }
            }
            if updates.changed().await.is_err() {
                return;
            }
        }
    });

    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .expect("etcd client");
    let mut expected = BTreeSet::new();
    let (mut rust, mut gozero) = (Vec::new(), Vec::new());
    for i in 0..WRITES {
        // Alternate: add an instance, then (every other step) remove the oldest.
        let start = Instant::now();
        if i % 2 == 0 || expected.is_empty() {
            let addr = format!("127.0.0.1:{}", 20000 + i);
            client
                .put(format!("{key}/{i}"), addr.clone(), None)
                .await
                .expect("put");
            expected.insert(addr);
        } else {
            let j = i - 1;
            client
                .delete(format!("{key}/{j}"), None)
                .await
                .expect("delete");
            expected.remove(&format!("127.0.0.1:{}", 20000 + j));
        }
        for (rx, samples) in [(&rs_rx, &mut rust), (&go_rx, &mut gozero)] {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let (at, set) = rx
                    .recv_timeout(left)
                    .expect("a side missed a change for 5 s");
                if set == expected {
                    samples.push(at.saturating_duration_since(start));
                    break;
                }
            }
        }
    }
    println!("etcd write -> client endpoint set, {WRITES} writes, same etcd, same run");
    report("rust channel (dtm-driver-gozero)", rust);
    report("go-zero discov.Subscriber", gozero);
    let _ = go.kill();
    let _ = go.wait();
}
