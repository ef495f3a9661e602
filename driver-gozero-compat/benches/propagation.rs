//! How fast an etcd write reaches a client's endpoint set: the Rust channel through
//! `dtm-driver-gozero` beside go-zero's own `discov.Subscriber` (interop/bin/
//! gozero-subscriber), on the same etcd, in the same run, for the same writes.
//!
//! `cargo bench -p dtmdriver-gozero --bench propagation` prints median and p99 of the
//! time from the start of each write to each side seeing the new set.

#![allow(clippy::print_stdout)] // a bench prints its table

mod stats;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use dtmdriver_gozero as _;
use stats::{channel_sets, read_sets, report, time_to};
use test_support::{EtcdServer, InteropProcess};

const WRITES: usize = 200;

#[tokio::main]
async fn main() {
    let etcd = EtcdServer::start();
    let key = "prop.rpc";

    // go-zero's subscriber; its first line means subscribed.
    let mut go = InteropProcess::start_piped(
        "gozero-subscriber",
        &["-etcd", &etcd.endpoint(), "-key", key],
    );
    let go_rx = read_sets(go.child().stdout.take().expect("stdout"));
    go_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("go-zero subscriber ready");

    // The Rust channel.
    dtmdriver_core::use_driver("dtm-driver-gozero").expect("driver linked");
    let channel =
        dtmdriver_core::connect(&format!("etcd://{}/{key}", etcd.endpoint())).expect("connect");
    let rs_rx = channel_sets(channel);

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
        rust.push(time_to(&rs_rx, &expected, start));
        gozero.push(time_to(&go_rx, &expected, start));
    }
    println!("etcd write -> client endpoint set, {WRITES} writes, same etcd, same run");
    report("rust channel (dtm-driver-gozero)", rust);
    report("go-zero discov.Subscriber", gozero);
}
