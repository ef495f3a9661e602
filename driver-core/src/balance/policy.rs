//! [`Policy`]: which ready endpoint a call goes to, and the peak-EWMA load it reads.
//!
//! Contract: every policy picks only endpoints whose connection is ready (neither
//! connecting, ejected nor unresponsive), returns `None` only when none is, and never
//! blocks on I/O. Round robin gives each ready endpoint its turn; weighted round robin
//! gives each its weight's share, smoothly interleaved (nginx's smooth WRR); peak-EWMA
//! draws two at random and takes the cheaper by [`Load::cost`], with a probe for one
//! passed over for a second (go-zero's p2c).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::channel::ChannelInner;
use super::table::{Slot, Table};
use crate::error::{Error, Result};

/// How a channel spreads calls over ready endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Policy {
    /// Each ready endpoint in turn (the default).
    #[default]
    RoundRobin,
    /// Smooth weighted round robin over the endpoints' [`weight`](crate::resolve::Endpoint::weight)s.
    WeightedRoundRobin,
    /// Power of two choices over a peak-EWMA latency estimate times pending calls,
    /// with failed calls counted as slow and a recent failure rate raising the cost;
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
            other => Err(Error::BadTarget {
                target: other.to_string(),
                reason: "unknown balancing policy; use round_robin, weighted_round_robin or p2c"
                    .into(),
            }),
        }
    }
}

impl ChannelInner {
    /// Picks one ready slot by the channel's policy, without allocating.
    pub(super) fn choose(&self, table: &Table) -> Option<Arc<Slot>> {
        let ready = || table.slots.iter().filter(|s| s.conn.is_ready());
        let n = ready().count();
        let chosen = match n {
            0 => return None,
            1 => ready().next(),
            n => match self.policy {
                Policy::RoundRobin => ready().nth(self.rr.fetch_add(1, Ordering::Relaxed) % n),
                Policy::WeightedRoundRobin => self.choose_weighted(ready()),
                Policy::PeakEwma => {
                    let a = rand::random_range(0..n);
                    let mut b = rand::random_range(0..n - 1);
                    if b >= a {
                        b += 1;
                    }
                    match (ready().nth(a), ready().nth(b)) {
                        (Some(x), Some(y)) => Some(choose_cheaper(x, y)),
                        (x, y) => x.or(y),
                    }
                }
            },
        };
        // A connection may drop between counting and choosing: take any ready one.
        chosen.or_else(|| ready().next()).cloned()
    }

    /// Smooth weighted round robin (nginx's): every slot gains its weight, the
    /// richest is chosen and pays the total.
    fn choose_weighted<'a>(
        &self,
        ready: impl Iterator<Item = &'a Arc<Slot>>,
    ) -> Option<&'a Arc<Slot>> {
        let _guard = self.wrr_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = 0i64;
        let mut best: Option<(&Arc<Slot>, i64)> = None;
        for s in ready {
            let weight = i64::from(s.endpoint.weight);
            total += weight;
            let cur = s.wrr_current.fetch_add(weight, Ordering::Relaxed) + weight;
            if best.is_none_or(|(_, b)| cur > b) {
                best = Some((s, cur));
            }
        }
        let (best, _) = best?;
        best.wrr_current.fetch_sub(total, Ordering::Relaxed);
        Some(best)
    }
}

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
#[derive(Debug)]
pub(crate) struct Load {
    /// Peak-EWMA round-trip estimate in nanoseconds, as `f64` bits.
    rtt_ns: AtomicU64,
    /// When `rtt_ns` was last updated, in nanoseconds since `epoch`; 0 until the
    /// first sample, which replaces the default outright.
    updated_ns: AtomicU64,
    /// When the policy last picked this connection, in nanoseconds since `epoch`.
    picked_ns: AtomicU64,
    /// Share of recent calls that failed, an EWMA over calls, as `f64` bits.
    failure_rate: AtomicU64,
    epoch: Instant,
}

/// Time constant of the EWMA: how fast the estimate follows new samples, and how fast
/// it decays towards zero while no samples arrive.
const DECAY: Duration = Duration::from_secs(10);
/// The estimate a fresh endpoint starts with, until its first call returns.
const DEFAULT_RTT: Duration = Duration::from_millis(10);
/// The round-trip time an error counts as, so an endpoint that fails fast is not
/// mistaken for a fast one.
const ERROR_PENALTY: Duration = Duration::from_secs(1);
/// An endpoint the policy passed over this long gets one call anyway (go-zero's
/// "force pick"), so an estimate made bad by errors or a slow spell is refreshed.
const FORCE_PICK: Duration = Duration::from_secs(1);
/// The least weight one sample has in the estimate, however close it follows the last.
const MIN_SAMPLE_WEIGHT: f64 = 0.05;
/// Weight of the newest call in the failure rate: a few failures in a row are enough.
const FAILURE_ALPHA: f64 = 0.25;
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

    /// Cost for peak-EWMA: estimate × (pending + 1), scaled up by the failure rate.
    pub fn cost(&self, pending: u32) -> f64 {
        let (rtt, weight, _) = self.stored(self.now_ns());
        let failures = f64::from_bits(self.failure_rate.load(Ordering::Relaxed));
        rtt * weight * f64::from(pending.saturating_add(1)) * (1.0 + failures * FAILURE_COST)
    }

    /// Records a finished call. Races between concurrent samples lose one sample at
    /// worst, which an estimate can afford.
    pub fn record(&self, rtt: Duration, failed: bool) {
        let sample = if failed { rtt.max(ERROR_PENALTY) } else { rtt }.as_nanos() as f64;
        let now_ns = self.now_ns();
        let (stored, weight, sampled) = self.stored(now_ns);
        let next = if !sampled || sample > stored * weight {
            sample // the first sample, or a peak: take it at once
        } else {
            // Move from the stored estimate towards the sample, more the longer the
            // gap, and at least by MIN_SAMPLE_WEIGHT: a busy endpoint recovers from an
            // outlier (a stall of the host) within a few dozen calls, not seconds.
            let weight = weight.min(1.0 - MIN_SAMPLE_WEIGHT);
            stored * weight + sample * (1.0 - weight)
        };
        self.rtt_ns.store(next.to_bits(), Ordering::Relaxed);
        self.updated_ns.store(now_ns, Ordering::Relaxed);
        let rate = f64::from_bits(self.failure_rate.load(Ordering::Relaxed));
        let outcome = if failed { 1.0 } else { 0.0 };
        let rate = rate + (outcome - rate) * FAILURE_ALPHA;
        self.failure_rate.store(rate.to_bits(), Ordering::Relaxed);
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
    fn errors_cost_at_least_the_penalty() {
        let load = Load::new();
        load.record(Duration::from_micros(100), true);
        assert!(load.rtt_estimate() >= ERROR_PENALTY.mul_f64(0.99));
        assert!(load.cost(1) >= 2.0 * ERROR_PENALTY.as_nanos() as f64 * 0.99);
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
