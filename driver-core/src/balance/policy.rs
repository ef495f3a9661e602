//! [`Policy`]: which ready endpoint a call goes to, and the peak-EWMA load it reads.
//!
//! Contract: every policy picks only endpoints whose connection is ready (neither
//! connecting, ejected nor unresponsive), returns `None` only when none is, and never
//! blocks on I/O. Round robin gives each ready endpoint its turn; weighted round robin
//! gives each its weight's share, smoothly interleaved; both pass the turn of an
//! endpoint whose recent calls mostly failed ([`Load::failing`]) to the next, up to
//! [`TURNS`] turns, unless every endpoint they meet is failing; peak-EWMA draws two at
//! random and takes the cheaper by [`Load::cost`], with a probe for one passed over for
//! a second (go-zero's p2c).
//!
//! Why round robin skips failing endpoints: one of three instances answering every call
//! with an error at once (its database down) failed a third of the calls under round
//! robin, as under grpc-go's `round_robin` and go-zero's own p2c client; passing its
//! turns on failed 0.45% (`faults -- instance-failing-rr`). The failure rate fades
//! within a second, so the passed-over endpoint is tried again about five times a
//! second, and is back in its turns at its first successes.
//!
//! Cost of a pick, whatever the number of ready endpoints: O(1) for round robin and
//! p2c, which index the table's list of ready slots (kept by `table`, brought up to
//! date by the connections that entered or left the rotation). Weighted round robin
//! takes turns whose order does not depend on readiness, and skips the turns of slots
//! out of rotation, which keeps the ready slots' shares; with equal weights (the
//! channel's index keeps the slots by weight as changes come, so knowing it costs
//! nothing) it is round robin, otherwise smooth WRR over at most 32 weight groups,
//! then each group's members in turn (`weights`): O(1) a pick, and a change costs a
//! weighted channel what it costs any other. Why not nginx's smooth WRR over the slots
//! (what this used first, and then the fallback when slots out of rotation hold most
//! of the weight): it visits every ready endpoint on every pick, so its cost grows with
//! the set; nor a precomputed schedule of every slot's turns (what it used next): that
//! costs O(total weight) to build after every change. When the turns keep landing on
//! slots out of rotation (they hold most of the weight), a pick walks the ready list
//! by weight instead (`weights::WeightWalk`: O(log ready) a pick, built once per
//! ready list). A pick always checks the ready
//! flag of what it chose: a connection that left the rotation since the list was built
//! is never handed a call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::channel::ChannelInner;
use super::ready::Ready;
use super::table::{Slot, Table};
use super::weights::WeightWalk;
use crate::error::{Error, Result};

/// How a channel spreads calls over ready endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Policy {
    /// Each ready endpoint in turn (the default); one whose recent calls mostly failed
    /// passes its turn on while others do not.
    #[default]
    RoundRobin,
    /// Smooth weighted round robin over the endpoints' [`weight`](crate::resolve::Endpoint::weight)s;
    /// failing endpoints pass their turns on as under round robin.
    WeightedRoundRobin,
    /// Power of two choices over a peak-EWMA latency estimate times pending calls,
    /// with a recent failure rate (fading within seconds once calls succeed) raising
    /// the cost of an endpoint that fails, however fast it fails;
    /// an endpoint passed over for a second gets one probe call (go-zero's choice).
    PeakEwma,
}

impl std::str::FromStr for Policy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "round_robin" | "rr" => Ok(Self::RoundRobin),
            "weighted_round_robin" | "wrr" => Ok(Self::WeightedRoundRobin),
            "p2c" | "p2c_peak_ewma" | "peak_ewma" => Ok(Self::PeakEwma),
            other => Err(Error::BadSetting {
                setting: "balancing policy",
                value: other.to_string(),
                reason: "use round_robin (rr), weighted_round_robin (wrr) or p2c".into(),
            }),
        }
    }
}

impl ChannelInner {
    /// Picks one ready slot by the channel's policy, without allocating (but for the
    /// update of the ready list after a readiness change, see `table`).
    pub(super) fn choose(&self, table: &Table) -> Option<Arc<Slot>> {
        let ready = table.ready(&self.ready_log, &self.index);
        let n = ready.slots.len();
        let at = |k: usize| &table.slots[ready.slots[k] as usize];
        let chosen = match n {
            0 => return None,
            1 => Some(at(0)),
            n => match self.policy {
                Policy::RoundRobin => {
                    first_not_failing(|| Some(at(self.rr.fetch_add(1, Ordering::Relaxed) % n)))
                }
                Policy::WeightedRoundRobin => first_not_failing(|| self.choose_turn(table, &ready)),
                Policy::PeakEwma => {
                    let a = rand::random_range(0..n);
                    let mut b = rand::random_range(0..n - 1);
                    if b >= a {
                        b += 1;
                    }
                    let (x, y) = (at(a), at(b));
                    match (x.conn.is_ready(), y.conn.is_ready()) {
                        (true, true) => Some(choose_cheaper(x, y)),
                        (true, false) => Some(x),
                        (false, true) => Some(y),
                        (false, false) => None,
                    }
                }
            },
        };
        // A connection may leave the rotation between the list's update and the
        // pick: take the first of the list still ready. Not a scan of every slot: in a
        // large set mostly idle or failing, that is O(N) a call in such a storm; a
        // slot that came up after the list was caught up is the slow path's (`gate`).
        match chosen {
            Some(s) if s.conn.is_ready() => Some(s.clone()),
            _ => (0..n).map(at).find(|s| s.conn.is_ready()).cloned(),
        }
    }

    /// Weighted round robin: with equal weights, the next ready slot; otherwise the
    /// next ready slot whose turn it is by weight group, or, when most of the weight is
    /// out of rotation, the next step of the ready list's walk by weight.
    fn choose_turn<'a>(&self, table: &'a Table, ready: &Ready) -> Option<&'a Arc<Slot>> {
        let at = |k: usize| &table.slots[ready.slots[k] as usize];
        if table.uniform_weight() {
            // Equal weights: each ready slot in turn.
            return Some(at(
                self.wrr_cursor.fetch_add(1, Ordering::Relaxed) % ready.slots.len()
            ));
        }
        let ready_turn = (table.weighted.iter())
            .flat_map(|turns| (0..TURN_PROBES).map(|_| turns.next()))
            .find(|s| s.conn.is_ready());
        ready_turn.or_else(|| {
            let walk = (ready.walk).get_or_init(|| {
                WeightWalk::new(
                    ready
                        .slots
                        .iter()
                        .map(|&i| table.slots[i as usize].endpoint.weight),
                )
            });
            walk.at(self.wrr_cursor.fetch_add(1, Ordering::Relaxed) as u64)
                .map(at)
        })
    }
}

/// Turns a round-robin pick takes at most: an endpoint out of rotation or failing
/// passes its turn to the next, and after that many the first ready one is taken,
/// failing or not.
const TURNS: usize = 3;

/// The first of up to [`TURNS`] turns (`next`) that is ready and not failing
/// ([`Load::failing`]), else one of the ready ones at random: a failing endpoint is
/// passed over while the turns find others, and keeps its share when every endpoint
/// fails alike (at random, not the first: a pick that takes all its turns moves the
/// turns on by [`TURNS`], which over three endpoints is always the same one first).
fn first_not_failing<'a>(mut next: impl FnMut() -> Option<&'a Arc<Slot>>) -> Option<&'a Arc<Slot>> {
    let mut failing = [None; TURNS];
    let mut found = 0;
    for _ in 0..TURNS {
        let Some(s) = next() else { break };
        if !s.conn.is_ready() {
            continue;
        }
        if !s.conn.load.failing() {
            return Some(s);
        }
        failing[found] = Some(s);
        found += 1;
    }
    match found {
        0 => None,
        n => failing[rand::random_range(0..n)],
    }
}

/// Turns a weighted pick tries before it falls back to the ready list's walk by
/// weight: with all slots ready the first one is taken; the fallback runs only when
/// out-of-rotation slots hold most of the weight.
const TURN_PROBES: usize = 8;

/// Peak-EWMA's choice of two: the cheaper one, unless the other was passed over long
/// enough to be owed a probe.
fn choose_cheaper<'a>(x: &'a Arc<Slot>, y: &'a Arc<Slot>) -> &'a Arc<Slot> {
    let (cheap, dear) = if y.conn.load.cost(y.conn.activity.pending())
        < x.conn.load.cost(x.conn.activity.pending())
    {
        (y, x)
    } else {
        (x, y)
    };
    if dear.conn.load.claim_forced_pick() {
        return dear;
    }
    cheap.conn.load.mark_picked();
    cheap
}

/// The peak-EWMA numbers of one address (kept on its pooled connection, so every
/// channel using the address shares them): the latency estimate, the recent failure
/// rate and when the policy last picked it.
///
/// The cost of an endpoint is its latency estimate times its pending calls plus one,
/// scaled up by its failure rate, and never below [`ERROR_PENALTY`] times that rate:
/// a failing endpoint costs hundreds of times a healthy one, however fast it fails.
/// The failure rate moves by [`FAILURE_ALPHA`] a call and decays with time
/// ([`FAILURE_DECAY`]), and failures never enter the latency estimate unless slower
/// than it, so an endpoint that fails fast is not mistaken for a fast one, and one
/// that has stopped failing is back in use within seconds of it, although the policy
/// sends it only one probe a second ([`FORCE_PICK`]) meanwhile. Before this, each
/// failure counted as a 1 s latency sample and the rate fell only with calls: an
/// instance that had failed every call for 8 s was still passed over 15 s after it
/// healed (`faults -- instance-failing-p2c`).
#[derive(Debug)]
pub(crate) struct Load {
    /// Peak-EWMA round-trip estimate in nanoseconds, as `f64` bits.
    rtt_ns: AtomicU64,
    /// When `rtt_ns` was last updated, in nanoseconds since `epoch`; 0 until the
    /// first sample, which replaces the default outright.
    updated_ns: AtomicU64,
    /// When the policy last picked this connection, in nanoseconds since `epoch`.
    picked_ns: AtomicU64,
    /// Share of recent calls that failed, an EWMA over calls, as `f64` bits, as of
    /// `failed_ns`.
    failure_rate: AtomicU64,
    /// When `failure_rate` was last updated, in nanoseconds since `epoch`.
    failed_ns: AtomicU64,
    epoch: Instant,
}

/// Time constant of the EWMA: how fast the estimate follows new samples, and how fast
/// it decays towards zero while no samples arrive.
const DECAY: Duration = Duration::from_secs(10);
/// The estimate a fresh endpoint starts with, until its first call returns.
const DEFAULT_RTT: Duration = Duration::from_millis(10);
/// The least cost of a failing endpoint, as a latency, at a failure rate of 1; it
/// scales with the rate.
const ERROR_PENALTY: Duration = Duration::from_secs(1);
/// An endpoint the policy passed over this long gets one call anyway (go-zero's
/// "force pick"), so an estimate made bad by errors or a slow spell is refreshed.
const FORCE_PICK: Duration = Duration::from_secs(1);
/// The least weight one sample has in the estimate, however close it follows the last.
const MIN_SAMPLE_WEIGHT: f64 = 0.05;
/// Weight of the newest call in the failure rate: a few failures in a row are enough.
const FAILURE_ALPHA: f64 = 0.25;
/// Time constant of the failure rate's decay while no calls end. With one probe a
/// second failing, the rate stays above 0.13 (a cost over a hundred times a healthy
/// one's); with the probes answered, it falls below 1% within 3 s.
const FAILURE_DECAY: Duration = Duration::from_secs(1);
/// The failure rate above which round robin passes an endpoint's turn on: most of its
/// recent calls failed. Passed over, it gets no call until the rate has faded below
/// this (about 0.2 s after a failure in a row of them), which is its probe.
const FAILING: f64 = 0.5;
/// How much a failure rate of 1 multiplies the cost. Latency alone cannot tell a
/// failing endpoint from a busy one when every estimate is high (a loaded host); the
/// rate can.
const FAILURE_COST: f64 = 1000.0;

impl Load {
    pub(crate) fn new() -> Self {
        Self {
            rtt_ns: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            updated_ns: AtomicU64::new(0),
            picked_ns: AtomicU64::new(0),
            failure_rate: AtomicU64::new(0f64.to_bits()),
            failed_ns: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn now_ns(&self) -> u64 {
        // Offset by one so that 0 always means "never".
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_nanos() as u64
            + 1
    }

    /// The stored estimate, the decay weight `e^(-elapsed/DECAY)` since it was set,
    /// and whether any sample was recorded yet.
    fn stored(&self, now_ns: u64) -> (f64, f64, bool) {
        let rtt = f64::from_bits(self.rtt_ns.load(Ordering::Relaxed));
        let updated = self.updated_ns.load(Ordering::Relaxed);
        if updated == 0 {
            return (rtt, 1.0, false); // the default does not decay
        }
        let elapsed = now_ns.saturating_sub(updated) as f64;
        (rtt, (-elapsed / DECAY.as_nanos() as f64).exp(), true)
    }

    /// The failure rate at `now_ns`: the stored one decayed since it was set.
    fn failures(&self, now_ns: u64) -> f64 {
        let rate = f64::from_bits(self.failure_rate.load(Ordering::Relaxed));
        if rate == 0.0 {
            return 0.0; // never failed, or not for thousands of calls: no `exp`
        }
        let elapsed = now_ns.saturating_sub(self.failed_ns.load(Ordering::Relaxed)) as f64;
        rate * (-elapsed / FAILURE_DECAY.as_nanos() as f64).exp()
    }

    /// Whether most recent calls failed (the failure rate, fading with time, above
    /// [`FAILING`]): round robin passes such an endpoint's turn on. One atomic load
    /// for an endpoint that has not failed for thousands of calls.
    pub fn failing(&self) -> bool {
        f64::from_bits(self.failure_rate.load(Ordering::Relaxed)) > FAILING
            && self.failures(self.now_ns()) > FAILING
    }

    /// Records a finished call's outcome alone, in the failure rate (round robin's
    /// calls, whose latency no pick reads): nothing to do for a success on an endpoint
    /// that has not failed for thousands of calls.
    pub fn record_outcome(&self, failed: bool) {
        if !failed && self.failure_rate.load(Ordering::Relaxed) == 0f64.to_bits() {
            return;
        }
        self.add_outcome(self.now_ns(), failed);
    }

    fn add_outcome(&self, now_ns: u64, failed: bool) {
        let rate = self.failures(now_ns);
        let outcome = if failed { 1.0 } else { 0.0 };
        let rate = rate + (outcome - rate) * FAILURE_ALPHA;
        self.failure_rate.store(rate.to_bits(), Ordering::Relaxed);
        self.failed_ns.store(now_ns, Ordering::Relaxed);
    }

    /// Whether any call was timed yet.
    pub fn sampled(&self) -> bool {
        self.updated_ns.load(Ordering::Relaxed) != 0
    }

    /// The current round-trip estimate, decayed towards zero while no samples arrive
    /// so that an endpoint once slow is tried again later.
    pub fn rtt_estimate(&self) -> Duration {
        let (rtt, weight, _) = self.stored(self.now_ns());
        Duration::from_nanos((rtt * weight) as u64)
    }

    /// Cost for peak-EWMA: the estimate (at least [`ERROR_PENALTY`] times the failure
    /// rate) × (pending + 1), scaled up by the failure rate.
    pub fn cost(&self, pending: u32) -> f64 {
        let now_ns = self.now_ns();
        let (rtt, weight, _) = self.stored(now_ns);
        let failures = self.failures(now_ns);
        let latency = (rtt * weight).max(ERROR_PENALTY.as_nanos() as f64 * failures);
        latency * f64::from(pending.saturating_add(1)) * (1.0 + failures * FAILURE_COST)
    }

    /// Records a finished call. Races between concurrent samples lose one sample at
    /// worst, which an estimate can afford.
    pub fn record(&self, rtt: Duration, failed: bool) {
        let sample = rtt.as_nanos() as f64;
        let now_ns = self.now_ns();
        let (stored, weight, sampled) = self.stored(now_ns);
        if sample > stored * weight || !sampled && !failed {
            // A peak (a failure too: a timeout), or the first answer: take it at once.
            self.rtt_ns.store(sample.to_bits(), Ordering::Relaxed);
            self.updated_ns.store(now_ns, Ordering::Relaxed);
        } else if !failed {
            // Move from the stored estimate towards the sample, more the longer the
            // gap, and at least by MIN_SAMPLE_WEIGHT: a busy endpoint recovers from an
            // outlier (a stall of the host) within a few dozen calls, not seconds. A
            // failure faster than the estimate says nothing of the endpoint's speed.
            let weight = weight.min(1.0 - MIN_SAMPLE_WEIGHT);
            let next = stored * weight + sample * (1.0 - weight);
            self.rtt_ns.store(next.to_bits(), Ordering::Relaxed);
            self.updated_ns.store(now_ns, Ordering::Relaxed);
        }
        self.add_outcome(now_ns, failed);
    }

    /// Claims this connection's forced pick if the policy passed it over for
    /// [`FORCE_PICK`]; at most one caller wins each period.
    pub fn claim_forced_pick(&self) -> bool {
        let now = self.now_ns();
        let last = self.picked_ns.load(Ordering::Relaxed);
        now.saturating_sub(last) > FORCE_PICK.as_nanos() as u64
            && self
                .picked_ns
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Notes that the policy picked this connection.
    pub fn mark_picked(&self) {
        self.picked_ns.store(self.now_ns(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_policy_is_named_as_a_policy_not_a_target() {
        assert_eq!("wrr".parse::<Policy>().unwrap(), Policy::WeightedRoundRobin);
        let err = "fastest".parse::<Policy>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown balancing policy `fastest`: use round_robin (rr), weighted_round_robin (wrr) or p2c"
        );
    }

    use crate::balance::channel::{ChannelInner, test_channel};
    use crate::resolve::{Endpoint, ResolverState, SetChange};

    /// A channel of `policy` over `endpoints` (unique addresses, never dialled), all
    /// ready.
    fn ready_channel(policy: Policy, endpoints: Vec<Endpoint>) -> Arc<ChannelInner> {
        let inner = test_channel(policy);
        inner.apply(&ResolverState::with_endpoints(endpoints));
        for s in &inner.table().slots {
            s.conn.set_ready_by_hand(true);
        }
        inner
    }

    fn picks(inner: &ChannelInner, n: usize) -> std::collections::BTreeMap<String, usize> {
        let table = inner.table();
        let mut m = std::collections::BTreeMap::new();
        for _ in 0..n {
            let s = inner.choose(&table).expect("a ready endpoint");
            *m.entry(s.endpoint.addr.clone()).or_default() += 1;
        }
        m
    }

    #[tokio::test]
    async fn round_robin_passes_a_failing_endpoints_turns_on_unless_all_fail() {
        for (net, policy) in [(66, Policy::RoundRobin), (67, Policy::WeightedRoundRobin)] {
            let set = weighed(net, 0..3, |_| 1);
            let inner = ready_channel(policy, set.clone());
            let table = inner.table();
            let failing = &table.slots[0];
            for _ in 0..8 {
                failing.conn.load.record_outcome(true);
            }
            let m = picks(&inner, 300);
            assert_eq!(m.get(&failing.endpoint.addr), None, "{policy:?}: {m:?}");
            assert_eq!(m.values().sum::<usize>(), 300);
            // Every endpoint failing alike: each keeps its share.
            for s in table.slots.iter().skip(1) {
                for _ in 0..8 {
                    s.conn.load.record_outcome(true);
                }
            }
            let m = picks(&inner, 3000);
            let even = |n: &usize| (800..1200).contains(n);
            assert!(m.len() == 3 && m.values().all(even), "{policy:?}: {m:?}");
            // Successes bring the first one back.
            for _ in 0..4 {
                failing.conn.load.record_outcome(false);
            }
            assert!(!failing.conn.load.failing());
        }
    }

    #[tokio::test]
    async fn round_robin_is_fair_over_a_changing_ready_set() {
        let addrs: Vec<String> = (1..=4).map(|i| format!("10.2.0.{i}:80")).collect();
        let inner = ready_channel(
            Policy::RoundRobin,
            addrs.iter().map(Endpoint::new).collect(),
        );
        // Three ready, then the fourth joins: each gets its exact share.
        let table = inner.table();
        table.slots[3].conn.set_ready_by_hand(false);
        let m = picks(&inner, 300);
        assert_eq!(m.get(&addrs[3]), None);
        assert!(m.values().all(|&n| n == 100), "{m:?}");
        table.slots[3].conn.set_ready_by_hand(true);
        let m = picks(&inner, 400);
        assert!(m.len() == 4 && m.values().all(|&n| n == 100), "{m:?}");
        // One leaves the rotation: the others share its turns exactly.
        table.slots[1].conn.set_ready_by_hand(false);
        let m = picks(&inner, 300);
        assert_eq!(m.get(&addrs[1]), None);
        assert!(m.values().all(|&n| n == 100), "{m:?}");
        // It comes back; another leaves.
        table.slots[1].conn.set_ready_by_hand(true);
        table.slots[3].conn.set_ready_by_hand(false);
        let m = picks(&inner, 300);
        assert_eq!(m.get(&addrs[3]), None);
        assert!(m.values().all(|&n| n == 100), "{m:?}");
        // None ready: no pick.
        for s in &table.slots {
            s.conn.set_ready_by_hand(false);
        }
        assert!(inner.choose(&table).is_none());
    }

    #[tokio::test]
    async fn weighted_round_robin_is_exact_over_a_cycle() {
        let inner = ready_channel(
            Policy::WeightedRoundRobin,
            vec![
                Endpoint::new("10.3.0.1:80").with_weight(3),
                Endpoint::new("10.3.0.2:80").with_weight(1),
            ],
        );
        let table = inner.table();
        // Smooth: the light one's turn falls between the heavy one's.
        let order: Vec<String> = (0..4)
            .map(|_| inner.choose(&table).unwrap().endpoint.addr.clone())
            .collect();
        assert_eq!(
            order,
            ["10.3.0.1:80", "10.3.0.1:80", "10.3.0.2:80", "10.3.0.1:80"]
        );
        let m = picks(&inner, 400);
        assert_eq!(m.values().copied().collect::<Vec<_>>(), [300, 100]);
        // The heavy one leaves the rotation: everything goes to the other.
        table.slots[0].conn.set_ready_by_hand(false);
        assert_eq!(picks(&inner, 50).get("10.3.0.2:80"), Some(&50));
        // Ready slots keep their exact shares when others are out: 1:2 of 1:2:6.
        let inner = ready_channel(
            Policy::WeightedRoundRobin,
            vec![
                Endpoint::new("10.3.1.1:80").with_weight(1),
                Endpoint::new("10.3.1.2:80").with_weight(2),
                Endpoint::new("10.3.1.3:80").with_weight(6),
            ],
        );
        inner.table().slots[2].conn.set_ready_by_hand(false);
        let m = picks(&inner, 300);
        assert_eq!(m.values().copied().collect::<Vec<_>>(), [100, 200]);
    }

    #[tokio::test]
    async fn equal_weights_are_round_robin_until_one_differs() {
        let all: Vec<Endpoint> = (0..40)
            .map(|i| Endpoint::new(format!("10.5.0.{i}:80")).with_weight(100))
            .collect();
        let inner = ready_channel(Policy::WeightedRoundRobin, all.clone());
        let m = picks(&inner, 400);
        assert!(m.len() == 40 && m.values().all(|&n| n == 10), "{m:?}");
        assert!(inner.table().weighted.is_none(), "no weight groups");
        // One out of rotation: the others share its turns.
        inner.table().slots[7].conn.set_ready_by_hand(false);
        let m = picks(&inner, 390);
        assert!(m.len() == 39 && m.values().all(|&n| n == 10), "{m:?}");
        // One weight differs: the weight classes give it its share.
        let mut changed = all.clone();
        changed[7] = Endpoint::new("10.5.0.7:80").with_weight(4100);
        inner.apply(&ResolverState {
            version: 5,
            ..ResolverState::with_endpoints(changed)
        });
        let table = inner.table();
        assert!(!table.uniform_weight());
        table.slots[7].conn.set_ready_by_hand(true);
        let m = picks(&inner, 8000);
        assert_eq!(m.get("10.5.0.7:80"), Some(&4100), "{m:?}");
        assert!(table.weighted.is_some());
        // Back to equal weights: round robin again.
        inner.apply(&ResolverState {
            version: 7,
            ..ResolverState::with_endpoints(all)
        });
        assert!(inner.table().uniform_weight() && inner.table().weighted.is_none());
        let m = picks(&inner, 400);
        assert!(m.len() == 40 && m.values().all(|&n| n == 10), "{m:?}");
    }

    /// Endpoints `10.NET.x.y:80` for `range`, weighing `weight(i)`. Connections are
    /// pooled by address across the process, and tests mark them out of rotation by
    /// hand: each test takes its own `net`, or one running beside it sees its marks.
    fn weighed(
        net: u8,
        range: std::ops::Range<usize>,
        weight: impl Fn(usize) -> u32,
    ) -> Vec<Endpoint> {
        range
            .map(|i| {
                Endpoint::new(format!("10.{net}.{}.{}:80", i / 250, i % 250)).with_weight(weight(i))
            })
            .collect()
    }

    /// Picks `cycles` whole cycles (the total weight each) and checks that each
    /// endpoint got its weight's share to within `slack` picks.
    fn assert_shares(inner: &ChannelInner, endpoints: &[Endpoint], cycles: usize, slack: usize) {
        let total: usize = endpoints.iter().map(|e| e.weight.max(1) as usize).sum();
        let m = picks(inner, total * cycles);
        for e in endpoints {
            let want = e.weight.max(1) as usize * cycles;
            let got = m.get(&e.addr).copied().unwrap_or(0);
            assert!(
                got.abs_diff(want) <= slack,
                "{}: {got} picks, {want} due",
                e.addr
            );
        }
    }

    #[tokio::test]
    async fn a_change_to_a_weighted_set_keeps_exact_shares() {
        // 1,000 endpoints weighing 1 or 3: turns over two weight classes.
        let mut set = weighed(61, 0..1000, |i| if i % 2 == 0 { 1 } else { 3 });
        let inner = ready_channel(Policy::WeightedRoundRobin, set.clone());
        assert_shares(&inner, &set, 1, 0);
        // One leaves, one changes weight, one of a third weight joins (keyed changes).
        let gone = set.remove(1);
        set[10] = set[10].clone().with_weight(3);
        let joined = weighed(61, 5000..5001, |_| 7).remove(0);
        set.push(joined.clone());
        inner.apply(&ResolverState {
            endpoints: Some(set.iter().cloned().collect()),
            changes: Some(
                vec![
                    SetChange::Remove(gone.addr.clone()),
                    SetChange::Put(set[10].clone()),
                    SetChange::Put(joined),
                ]
                .into(),
            ),
            last_error: None,
            version: 1,
        });
        let table = inner.table();
        table
            .slots
            .iter()
            .for_each(|s| s.conn.set_ready_by_hand(true));
        assert_eq!(table.slots.len(), 1000);
        assert_shares(&inner, &set, 2, 0);
        inner.index.lock().unwrap().classes.check();
    }

    #[tokio::test]
    async fn many_distinct_weights_share_bands_and_keep_their_shares() {
        // 40 distinct weights: more than the classes, turns by power-of-two band.
        let set = weighed(62, 0..400, |i| (i % 40) as u32 + 1);
        let inner = ready_channel(Policy::WeightedRoundRobin, set.clone());
        assert_shares(&inner, &set, 10, 2);
        // Smooth: the heaviest (weight 40 of 8,200) never takes two turns in a row.
        let table = inner.table();
        let heavy = "10.62.0.39:80";
        let mut last = String::new();
        for _ in 0..8200 {
            let s = inner.choose(&table).unwrap().endpoint.addr.clone();
            assert!(!(s == heavy && last == heavy), "two turns in a row");
            last = s;
        }
        // A third out of rotation: the others keep their shares among themselves.
        for s in table.slots.iter().filter(|s| s.endpoint.weight % 3 == 0) {
            s.conn.set_ready_by_hand(false);
        }
        let ready: Vec<Endpoint> = set.iter().filter(|e| e.weight % 3 != 0).cloned().collect();
        assert_shares(&inner, &ready, 10, 3);
    }

    #[tokio::test]
    async fn with_most_weight_out_of_rotation_picks_walk_the_ready_list_by_weight() {
        // A quarter weighing 100, out of rotation; the rest weighing 1 to 3, ready: the
        // turns land out of rotation 97% of the time, so most picks take the walk.
        let set = weighed(63, 0..400, |i| {
            if i.is_multiple_of(4) {
                100
            } else {
                (i % 3) as u32 + 1
            }
        });
        let inner = ready_channel(Policy::WeightedRoundRobin, set.clone());
        let table = inner.table();
        for s in table.slots.iter().filter(|s| s.endpoint.weight == 100) {
            s.conn.set_ready_by_hand(false);
        }
        let ready: Vec<Endpoint> = set.iter().filter(|e| e.weight < 100).cloned().collect();
        assert_shares(&inner, &ready, 20, 4);
        let list = table.ready(&inner.ready_log, &inner.index);
        assert!(
            list.walk.get().is_some(),
            "the fallback walked the ready list"
        );
    }

    #[tokio::test]
    async fn weighted_turns_are_spread_over_the_cycle() {
        // Weights 5, 3, 1, 1: no endpoint gets three turns in a row.
        let set = weighed(64, 0..4, |i| [5, 3, 1, 1][i]);
        let inner = ready_channel(Policy::WeightedRoundRobin, set.clone());
        let table = inner.table();
        let order: Vec<String> = (0..40)
            .map(|_| inner.choose(&table).unwrap().endpoint.addr.clone())
            .collect();
        for w in order.windows(3) {
            assert!(!(w[0] == w[1] && w[1] == w[2]), "{order:?}");
        }
        assert_shares(&inner, &set, 3, 0);
        // One of weight 10 among 49 of weight 1: its turns are about 6 apart.
        let set = weighed(65, 0..50, |i| if i == 0 { 10 } else { 1 });
        let inner = ready_channel(Policy::WeightedRoundRobin, set);
        let table = inner.table();
        let heavy: Vec<bool> = (0..590)
            .map(|_| inner.choose(&table).unwrap().endpoint.addr == "10.65.0.0:80")
            .collect();
        let at: Vec<usize> = (0..heavy.len()).filter(|&k| heavy[k]).collect();
        assert_eq!(at.len(), 100);
        for gap in at.windows(2).map(|w| w[1] - w[0]) {
            assert!((5..=7).contains(&gap), "{at:?}");
        }
    }

    #[tokio::test]
    async fn p2c_picks_among_the_few_ready_of_many() {
        let inner = ready_channel(
            Policy::PeakEwma,
            (0..1000)
                .map(|i| Endpoint::new(format!("10.4.{}.{}:80", i / 250, i % 250)))
                .collect(),
        );
        let table = inner.table();
        for s in table.slots.iter() {
            let addr = s.endpoint.addr.as_str();
            s.conn
                .set_ready_by_hand(addr == "10.4.0.10:80" || addr == "10.4.2.200:80");
        }
        let m = picks(&inner, 200);
        assert_eq!(
            m.keys().collect::<Vec<_>>(),
            ["10.4.0.10:80", "10.4.2.200:80"]
        );
    }

    fn ms(load: &Load) -> f64 {
        load.rtt_estimate().as_secs_f64() * 1000.0
    }

    #[test]
    fn first_sample_replaces_the_default_and_peaks_jump() {
        let load = Load::new();
        assert!((ms(&load) - DEFAULT_RTT.as_secs_f64() * 1000.0).abs() < 0.01);
        load.record(Duration::from_micros(300), false);
        assert!(ms(&load) < 0.31, "{}", ms(&load));
        load.record(Duration::from_millis(20), false);
        assert!(ms(&load) > 19.9, "{}", ms(&load));
        // A fast sample right after moves the estimate only a little...
        load.record(Duration::from_micros(300), false);
        assert!(ms(&load) > 18.0, "{}", ms(&load));
        // ...but a few dozen bring it back down.
        for _ in 0..60 {
            load.record(Duration::from_micros(300), false);
        }
        assert!(ms(&load) < 2.0, "{}", ms(&load));
    }

    #[test]
    fn a_fast_failure_does_not_make_an_endpoint_look_fast() {
        let load = Load::new();
        load.record(Duration::from_micros(100), true);
        assert_eq!(
            load.rtt_estimate(),
            DEFAULT_RTT,
            "a failure faster than the estimate"
        );
        // One failure in four: at least a quarter of the penalty, 251 times over.
        let floor = 2.0 * ERROR_PENALTY.as_nanos() as f64 * FAILURE_ALPHA;
        assert!(load.cost(1) >= floor * (1.0 + FAILURE_ALPHA * FAILURE_COST) * 0.99);
        // A failure slower than the estimate (a timeout) raises it as a peak.
        load.record(Duration::from_millis(900), true);
        assert!(ms(&load) > 899.0, "{}", ms(&load));
    }

    #[test]
    fn a_healed_endpoint_costs_what_it_did_within_seconds_of_its_probes() {
        let mut load = Load::new();
        for _ in 0..20 {
            load.record(Duration::from_millis(10), false);
        }
        let healthy = load.cost(0);
        for _ in 0..20 {
            load.record(Duration::from_micros(100), true);
        }
        assert!(load.cost(0) > 500.0 * healthy, "failing: {}", load.cost(0));
        // Passed over while failing: one probe a second, each failing, keeps it out,
        // even just before the next probe.
        for _ in 0..5 {
            load.epoch -= FORCE_PICK;
            assert!(
                load.cost(0) > 100.0 * healthy,
                "before a probe: {}",
                load.cost(0)
            );
            load.record(Duration::from_micros(100), true);
        }
        // Healed: four probes a second apart, answered, and it costs less than a
        // healthy endpoint with three calls pending.
        for _ in 0..4 {
            load.epoch -= FORCE_PICK;
            load.record(Duration::from_millis(10), false);
        }
        assert!(
            load.cost(0) < 4.0 * healthy,
            "healed: {} against {healthy}",
            load.cost(0)
        );
    }

    #[test]
    fn a_failing_endpoint_costs_more_than_a_slow_healthy_one() {
        let failing = Load::new();
        let slow = Load::new();
        for _ in 0..5 {
            failing.record(Duration::from_micros(100), true);
            slow.record(Duration::from_millis(900), false);
        }
        assert!(failing.cost(0) > 100.0 * slow.cost(0));
        // Recovery: successes bring the rate back down.
        for _ in 0..30 {
            failing.record(Duration::from_micros(100), false);
        }
        assert!(f64::from_bits(failing.failure_rate.load(Ordering::Relaxed)) < 0.01);
    }

    #[test]
    fn a_passed_over_connection_is_owed_one_pick_per_period() {
        let mut load = Load::new();
        // Just created: nothing owed yet.
        assert!(!load.claim_forced_pick());
        load.picked_ns.store(1, Ordering::Relaxed);
        load.epoch = Instant::now() - FORCE_PICK * 2;
        assert!(load.claim_forced_pick());
        assert!(!load.claim_forced_pick(), "one claim per period");
    }
}
