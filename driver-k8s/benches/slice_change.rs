//! What one EndpointSlice change costs a `k8s://` resolver, by the size of the service.
//!
//! `cargo bench -p dtmdriver-k8s --bench slice_change` prints one table: for a service
//! of N ready addresses in slices of 100 (N = 1,000 / 10,000 / 100,000;
//! `BENCH_SIZES=...`), the median over `BENCH_CHANGES` (default 21) changes of one
//! slice (an address removed, or put back) of publishing the change into a
//! `SnapshotSender`: *keyed*, what the resolver does (`keyed_changes` from the index
//! published last, then `SnapshotSender::apply`), beside *whole set*, what it did
//! before (every address of every slice listed, then `SnapshotSender::update`), both
//! on the same indexes in the same run, with the machine's load. The watch and the
//! apiserver are not in it: `propagation_k8s` in `dtmdriver-gozero` times a change end
//! to end against a real kube-apiserver.
#![allow(clippy::print_stdout)] // a bench binary: its output is the table

use std::sync::Arc;
use std::time::{Duration, Instant};

use dtmdriver_core::address::HostPort;
use dtmdriver_core::resolve::{Endpoint, SnapshotSender};
use dtmdriver_k8s::slices::keyed_changes;
use dtmdriver_k8s::{ServiceSlice, SliceIndex};
use test_support::bench::{env_list, load, median};

const PORT: u16 = 8080;
const PER_SLICE: usize = 100;

fn slice(first: usize, count: usize, skip: Option<usize>) -> Arc<ServiceSlice> {
    let ready = (first..first + count)
        .filter(|&i| Some(i) != skip)
        .map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    Arc::new(ServiceSlice {
        ports: vec![Some(PORT)],
        ready,
    })
}

/// Every address of `index` on the port, as the resolver listed them before.
fn whole_set(index: &SliceIndex) -> Vec<Endpoint> {
    index
        .values()
        .flat_map(|s| s.ready.iter())
        .filter_map(|a| HostPort::new(a, PORT).ok())
        .map(|a| Endpoint::new(a.to_string()))
        .collect()
}

/// The median of `v` in µs.
fn median_us(v: &mut [Duration]) -> f64 {
    median(v).as_secs_f64() * 1e6
}

fn main() {
    let sizes = env_list("BENCH_SIZES", &[1000, 10_000, 100_000]);
    let changes = env_list("BENCH_CHANGES", &[21])[0];
    println!(
        "one EndpointSlice change in a service of N addresses (slices of {PER_SLICE}), median of {changes}"
    );
    println!(
        "{:>7} | {:>7} | {:>9} | {:>14} | {:>7} | {:>5}",
        "N", "slices", "keyed µs", "whole set µs", "ratio", "load"
    );
    for n in sizes {
        let mut index = SliceIndex::new();
        for (k, first) in (0..n).step_by(PER_SLICE).enumerate() {
            index.insert(
                format!("svc-{k:05}"),
                slice(first, PER_SLICE.min(n - first), None),
            );
        }
        let (keyed_tx, _keyed_rx) = SnapshotSender::channel();
        let (whole_tx, _whole_rx) = SnapshotSender::channel();
        keyed_tx.apply(keyed_changes(None, &index, PORT).0);
        whole_tx.update(whole_set(&index));
        let (mut keyed, mut whole) = (Vec::new(), Vec::new());
        let middle = n / PER_SLICE / 2;
        for k in 0..changes {
            // The middle slice loses its first address, or gets it back.
            let first = middle * PER_SLICE;
            let skip = (k % 2 == 0).then_some(first);
            let mut next = index.clone();
            next.insert(format!("svc-{middle:05}"), slice(first, PER_SLICE, skip));
            let started = Instant::now();
            keyed_tx.apply(keyed_changes(Some((&index, PORT)), &next, PORT).0);
            keyed.push(started.elapsed());
            let started = Instant::now();
            whole_tx.update(whole_set(&next));
            whole.push(started.elapsed());
            index = next;
        }
        let (keyed, whole) = (median_us(&mut keyed), median_us(&mut whole));
        println!(
            "{:>7} | {:>7} | {:>9.1} | {:>14.1} | {:>7.3} | {:>5}",
            n,
            index.len(),
            keyed,
            whole,
            keyed / whole,
            load()
        );
    }
}
