//! Entry points for `benches/endpoints.rs` into the balancer's internals; not part of
//! the API (re-exported hidden as `dtmdriver_core::__private`).
//!
//! Contract: on a channel over `n` endpoints that are never dialled (their ready flags
//! set by hand), [`ready_list_costs`] measures what bringing the list of ready
//! endpoints up to date costs after one connection left or re-entered the rotation
//! (beside reading every flag), and [`carry_costs`] what carrying that list over a
//! batch of changes costs; [`weighted_change_costs`] what one change to a
//! weighted set costs up to the first weighted pick after it, and
//! [`weighted_outage_pick`] a weighted pick while most of the weight is out of
//! rotation; [`liveness_checks`] counts the liveness sweeper's connection checks. Why a hook: a flag can only change through the
//! transport, and a bench over 100,000 real connections does not fit one machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Policy::{self, RoundRobin, WeightedRoundRobin};
use super::builder::ChannelBuilder;
use super::channel::ChannelInner;
use crate::resolve::{DirectResolver, Endpoint, ResolverState, SetChange, SnapshotSender};

/// How many connection checks the process's liveness sweeper has made so far: what
/// idle connections cost it (`tests/idle_keepalive.rs`, the bench's idle table).
pub fn liveness_checks() -> u64 {
    super::transport::sweeper::checks()
}

/// The time to carry the ready list of a table of `n` endpoints, all ready, over one
/// apply of `batch` changes (half of them removals spread over the set, half new
/// endpoints); the median of `rounds` timings.
pub async fn carry_costs(n: usize, batch: usize, rounds: usize) -> Duration {
    let inner = ready_channel(n);
    let table = inner.table();
    let changes: Vec<SetChange> = (0..batch)
        .map(|k| match k % 2 {
            0 => SetChange::Remove(addr((k * 7919) % n)),
            _ => SetChange::Put(Endpoint::new(addr(n + k))),
        })
        .collect();
    let diff = inner
        .index
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .apply_changes(&table.slots, &changes, |ep| {
            super::transport::connection::Connection::pooled(&ep.addr, &inner.dial)
        });
    let slots = diff.slots.expect("the batch changes the set");
    let mut cool = vec![0u64; 8 << 20];
    let mut times = Vec::new();
    for _ in 0..rounds {
        cool_caches(&mut cool);
        let started = Instant::now();
        let carried = table.ready_after(&diff.moves, &slots);
        times.push(started.elapsed());
        std::hint::black_box(carried.map(|r| r.slots.len()));
    }
    median(&mut times)
}

/// The median time, over `rounds` changes (an endpoint in the middle removed, then put
/// back), of applying one change to a weighted round robin channel over `n` endpoints,
/// all ready, weighing 1 to `distinct` (`i % distinct + 1`), and of the first pick
/// after it: what a change costs the first weighted call that follows it.
pub async fn weighted_change_costs(n: usize, distinct: u32, rounds: usize) -> Duration {
    let all: Vec<Endpoint> = (0..n)
        .map(|i| Endpoint::new(addr(i)).with_weight(i as u32 % distinct + 1))
        .collect();
    let middle = all[n / 2].clone();
    let with: crate::resolve::EndpointSet = all.iter().cloned().collect();
    let without: crate::resolve::EndpointSet = all
        .iter()
        .filter(|e| e.addr != middle.addr)
        .cloned()
        .collect();
    let inner = channel_over(WeightedRoundRobin, all, |_| true);
    std::hint::black_box(inner.choose(&inner.table()).is_some());
    let mut times = Vec::new();
    for k in 0..rounds {
        let (set, change) = match k % 2 {
            0 => (&without, SetChange::Remove(middle.addr.clone())),
            _ => (&with, SetChange::Put(middle.clone())),
        };
        let state = ResolverState {
            endpoints: Some(set.clone()),
            changes: Some(vec![change].into()),
            last_error: None,
            version: k as u64 + 2,
        };
        let started = Instant::now();
        inner.apply(&state);
        std::hint::black_box(inner.choose(&inner.table()).is_some());
        times.push(started.elapsed());
    }
    median(&mut times)
}

/// The mean time of a weighted round robin pick, over `picks` picks, on a channel
/// over `n` endpoints, a quarter of them weighing 100 and out of rotation, the rest
/// weighing 1 and ready: the turns mostly land out of rotation, so most picks take the
/// fallback (the ready list's walk by weight).
pub async fn weighted_outage_pick(n: usize, picks: usize) -> Duration {
    let heavy = |i: usize| i.is_multiple_of(4);
    let endpoints =
        (0..n).map(|i| Endpoint::new(addr(i)).with_weight(if heavy(i) { 100 } else { 1 }));
    let inner = channel_over(WeightedRoundRobin, endpoints.collect(), |e| e.weight == 1);
    let table = inner.table();
    std::hint::black_box(inner.choose(&table).is_some());
    let started = Instant::now();
    for _ in 0..picks {
        std::hint::black_box(inner.choose(&table).is_some());
    }
    started.elapsed() / picks.max(1) as u32
}

/// The address of the `i`-th endpoint of a bench channel (loopback, never dialled).
fn addr(i: usize) -> String {
    format!("127.{}.{}.{}:1", i >> 16, (i >> 8) & 255, i & 255)
}

/// A channel over `n` never-dialled endpoints, every one in rotation, its ready list
/// built.
fn ready_channel(n: usize) -> Arc<ChannelInner> {
    channel_over(
        RoundRobin,
        (0..n).map(|i| Endpoint::new(addr(i))).collect(),
        |_| true,
    )
}

/// A channel of `policy` over `endpoints` (never dialled), those that are `ready` in
/// rotation, its ready list built.
fn channel_over(
    policy: Policy,
    endpoints: Vec<Endpoint>,
    ready: impl Fn(&Endpoint) -> bool,
) -> Arc<ChannelInner> {
    let (_tx, rx) = SnapshotSender::channel();
    let builder = ChannelBuilder::new("bench:///hook").policy(policy);
    let inner = ChannelInner::start(builder, rx, Arc::new(DirectResolver));
    let mut state = ResolverState::with_endpoints(endpoints);
    state.version = 1;
    inner.apply(&state);
    let table = inner.table();
    for s in table.slots.iter() {
        s.conn.set_ready_by_hand(ready(&s.endpoint));
    }
    table.ready(&inner.ready_log, &inner.index);
    inner
}

/// The median time, over `rounds` changes of one connection's ready flag, of the next
/// pick's update of the ready list (caught up from the channel's log of changes), and
/// of reading every slot's flag instead (what the list did before the log). Caches
/// are cooled before each timing (a pass over 64 MiB), as between calls far apart.
pub async fn ready_list_costs(n: usize, rounds: usize) -> (Duration, Duration) {
    let inner = ready_channel(n);
    let table = inner.table();
    let mut cool = vec![0u64; 8 << 20];
    let (mut caught_up, mut every) = (Vec::new(), Vec::new());
    for k in 0..rounds {
        let s = &table.slots[(k * 7919) % n];
        s.conn.set_ready_by_hand(k % 2 == 1);
        cool_caches(&mut cool);
        let started = Instant::now();
        std::hint::black_box(table.ready(&inner.ready_log, &inner.index).slots.len());
        caught_up.push(started.elapsed());
        cool_caches(&mut cool);
        let started = Instant::now();
        std::hint::black_box(table.read_every_flag().len());
        every.push(started.elapsed());
    }
    (median(&mut caught_up), median(&mut every))
}

fn cool_caches(buffer: &mut [u64]) {
    for (i, x) in buffer.iter_mut().enumerate().step_by(8) {
        *x = x.wrapping_add(i as u64);
    }
    std::hint::black_box(&buffer);
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}
