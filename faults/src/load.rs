//! Closed-loop load on a channel, counted in 50 ms buckets.
//!
//! [`Load::start`] runs `workers` callers, each sending the next echo call as soon as
//! the last one ended, every call with its own deadline. Each call's outcome is counted
//! in the 50 ms bucket it ended in (a soak of an hour keeps 72,000 small buckets, not a
//! record per call), so a scenario can ask afterwards how many calls failed, the
//! throughput in any window, and when throughput came back after a fault.
//!
//! A load can also watch one server by name ([`Load::start_watching`]): its successful
//! calls are counted apart, so a scenario can ask what share of the calls it answered
//! in a window ([`Record::share`]), e.g. to see an instance come back into use.
//!
//! The first failed call is also kept with the channel's endpoints and their states at
//! that moment ([`FirstFailure`]), so that a report can say what the channel had when
//! calls began to fail, not only that they did.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dtmdriver_core::{Channel, ChannelStatus};
use test_support::{EchoClient, SayRequest};
use tokio::task::JoinHandle;

/// The deadline of each call.
pub const CALL_DEADLINE: Duration = Duration::from_secs(1);

/// How long a caller pauses after a failed call.
const FAILURE_PAUSE: Duration = Duration::from_millis(5);

/// The width of a counting bucket.
const BUCKET: Duration = Duration::from_millis(50);

/// Successful calls, failed calls, and successful calls the watched server answered,
/// per bucket.
type Buckets = Arc<Mutex<Vec<[u32; 3]>>>;

/// The first failed call of a load and what the channel looked like then.
#[derive(Clone, Debug)]
pub struct FirstFailure {
    /// When it ended, from the start of the load.
    pub at: Duration,
    /// Its error.
    pub error: String,
    /// The channel's endpoints and their states read just after it failed
    /// ([`describe_endpoints`]).
    pub endpoints: String,
}

/// A running load; [`stop`](Self::stop) ends it and returns what happened.
pub struct Load {
    started: Instant,
    stop: Arc<AtomicBool>,
    buckets: Buckets,
    first_failure: Arc<OnceLock<FirstFailure>>,
    workers: Vec<JoinHandle<Vec<String>>>,
}

impl Load {
    /// Starts `workers` closed-loop callers on `channel`.
    pub fn start(channel: &Channel, workers: usize) -> Self {
        Self::start_watching(channel, workers, None)
    }

    /// [`start`](Self::start), also counting the successful calls answered by the
    /// server named `watched` (the name its replies carry).
    pub fn start_watching(channel: &Channel, workers: usize, watched: Option<&str>) -> Self {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let buckets: Buckets = Arc::default();
        let first_failure: Arc<OnceLock<FirstFailure>> = Arc::default();
        let workers = (0..workers)
            .map(|_| {
                let channel = channel.clone();
                let mut client = EchoClient::new(channel.clone());
                let stop = stop.clone();
                let buckets = buckets.clone();
                let first_failure = first_failure.clone();
                let watched = watched.map(str::to_string);
                tokio::spawn(async move {
                    let mut errors: Vec<String> = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let mut request = tonic::Request::new(SayRequest {
                            message: "load".into(),
                        });
                        request.set_timeout(CALL_DEADLINE);
                        // Bounded beyond the deadline: a call that outlives it is a
                        // failure of its own kind (the channel did not enforce it).
                        let outcome = tokio::time::timeout(
                            CALL_DEADLINE + Duration::from_secs(2),
                            client.say(request),
                        )
                        .await;
                        let mut from_watched = false;
                        let failure = match outcome {
                            Ok(Ok(reply)) => {
                                from_watched = watched.as_deref() == Some(&reply.get_ref().server);
                                None
                            }
                            Ok(Err(status)) => {
                                Some(format!("{:?}: {}", status.code(), status.message()))
                            }
                            Err(_) => Some("a call outlived its deadline by 2 s".to_string()),
                        };
                        let at = started.elapsed();
                        let ok = failure.is_none();
                        count(&buckets, at, ok, from_watched);
                        if let Some(error) = failure {
                            if first_failure.get().is_none() {
                                // Read now, while the channel is in the state that failed
                                // the call; the first worker to get here wins.
                                let endpoints = describe_endpoints(&channel.status());
                                let first = FirstFailure {
                                    at,
                                    error: error.clone(),
                                    endpoints,
                                };
                                if first_failure.set(first.clone()).is_ok() {
                                    eprintln!(
                                        "faults: first failed call at {} ms of the load: {}; \
                                         the channel's endpoints then: {}",
                                        first.at.as_millis(),
                                        first.error,
                                        first.endpoints
                                    );
                                }
                            }
                            if errors.len() < 3 {
                                errors.push(error);
                            }
                        }
                        if !ok {
                            // A failing call may fail at once without awaiting anything:
                            // pause as a client would, and let other tasks run.
                            tokio::time::sleep(FAILURE_PAUSE).await;
                        }
                    }
                    errors
                })
            })
            .collect();
        Self {
            started,
            stop,
            buckets,
            first_failure,
            workers,
        }
    }

    /// Time since the load started: mark fault events with it.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the callers and collects their counts.
    pub async fn stop(self) -> Record {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = Vec::new();
        for worker in self.workers {
            for e in worker.await.unwrap_or_default() {
                if errors.len() < 3 && !errors.contains(&e) {
                    errors.push(e);
                }
            }
        }
        let buckets = std::mem::take(&mut *self.buckets.lock().unwrap_or_else(|e| e.into_inner()));
        Record {
            buckets,
            errors,
            first_failure: self.first_failure.get().cloned(),
        }
    }
}

/// A channel's endpoints and their states in one line: `ADDR STATE` for each, with the
/// error and redial time of a failing one and the connections made so far, e.g.
/// `127.0.0.1:4001 ready (1 connect); 127.0.0.1:4002 ejected: Connection refused,
/// redial in 80 ms (0 connects)`. Also says when nothing is resolved or the resolver
/// reports an error.
pub fn describe_endpoints(status: &ChannelStatus) -> String {
    let mut out = String::new();
    if !status.resolved {
        out.push_str("not resolved yet; ");
    }
    if let Some(e) = &status.resolver_error {
        let _ = write!(out, "resolver error: {e}; ");
    }
    if status.endpoints.is_empty() {
        out.push_str("no endpoints");
        return out;
    }
    let _ = write!(out, "{} endpoints: ", status.endpoints.len());
    for (i, e) in status.endpoints.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        let _ = write!(out, "{} {}", e.endpoint.addr, e.state);
        if let Some(error) = &e.error {
            let _ = write!(out, ": {error}");
        }
        if let Some(ms) = e.retry_in_ms {
            let _ = write!(out, ", redial in {ms} ms");
        }
        let _ = write!(
            out,
            " ({} connect{})",
            e.connects,
            if e.connects == 1 { "" } else { "s" }
        );
    }
    out
}

fn bucket_of(at: Duration) -> usize {
    usize::try_from(at.as_millis() / BUCKET.as_millis()).unwrap_or(usize::MAX)
}

fn count(buckets: &Buckets, at: Duration, ok: bool, from_watched: bool) {
    let i = bucket_of(at);
    let mut b = buckets.lock().unwrap_or_else(|e| e.into_inner());
    if b.len() <= i {
        b.resize(i + 1, [0, 0, 0]);
    }
    b[i][usize::from(!ok)] += 1;
    b[i][2] += u32::from(from_watched);
}

/// Every call of a load, counted per bucket.
pub struct Record {
    buckets: Vec<[u32; 3]>,
    /// Up to three distinct failures, for the report.
    pub errors: Vec<String>,
    /// The first failed call and the channel's endpoints then; `None` if none failed.
    pub first_failure: Option<FirstFailure>,
}

impl Record {
    /// The record of a load counted elsewhere (go-zero's client, `gozero-echo-client
    /// -load`), in 50 ms buckets of successful, failed and watched calls.
    pub fn from_buckets(buckets: Vec<[u32; 3]>) -> Self {
        Self {
            buckets,
            errors: Vec::new(),
            first_failure: None,
        }
    }

    /// Calls made.
    pub fn calls(&self) -> usize {
        self.buckets
            .iter()
            .map(|[ok, failed, _]| (ok + failed) as usize)
            .sum()
    }

    /// Calls that failed.
    pub fn failed(&self) -> usize {
        self.buckets
            .iter()
            .map(|[_, failed, _]| *failed as usize)
            .sum()
    }

    /// When the last failed call ended, rounded up to its bucket's end; `None` if no
    /// call failed.
    pub fn last_failure(&self) -> Option<Duration> {
        let i = self
            .buckets
            .iter()
            .rposition(|[_, failed, _]| *failed > 0)?;
        Some(BUCKET * u32::try_from(i + 1).unwrap_or(u32::MAX))
    }

    /// Successful calls per second between `from` and `to` (rounded to buckets).
    pub fn rate(&self, from: Duration, to: Duration) -> f64 {
        let (a, b) = (bucket_of(from), bucket_of(to));
        if b <= a {
            return 0.0;
        }
        let [ok, ..] = self.sum(from, to);
        f64::from(ok) / (BUCKET.as_secs_f64() * (b - a) as f64)
    }

    /// The counts of the buckets between `from` and `to`.
    fn sum(&self, from: Duration, to: Duration) -> [u32; 3] {
        let (a, b) = (bucket_of(from), bucket_of(to));
        let window = self.buckets.iter().take(b).skip(a);
        window.fold([0; 3], |s, c| [s[0] + c[0], s[1] + c[1], s[2] + c[2]])
    }

    /// The share of the successful calls between `from` and `to` that the watched
    /// server answered ([`Load::start_watching`]); 0 when none succeeded.
    pub fn share(&self, from: Duration, to: Duration) -> f64 {
        match self.sum(from, to) {
            [0, ..] => 0.0,
            [ok, _, watched] => f64::from(watched) / f64::from(ok),
        }
    }

    /// The calls, and the failed ones, between `from` and `to`.
    pub fn calls_between(&self, from: Duration, to: Duration) -> (u32, u32) {
        let [ok, failed, _] = self.sum(from, to);
        (ok + failed, failed)
    }

    /// How long after `event` the watched server first answered at least `share` of
    /// the successful calls over a 500 ms window; `None` if it never did before `until`.
    pub fn share_back_after(
        &self,
        event: Duration,
        share: f64,
        until: Duration,
    ) -> Option<Duration> {
        let window = Duration::from_millis(500);
        self.first_window(event, until, window, |from, to| {
            self.share(from, to) >= share
        })
    }

    /// How long after `event` the first `window` (sliding by a bucket) for which
    /// `holds(from, to)` began; `None` if none did before `until`.
    fn first_window(
        &self,
        event: Duration,
        until: Duration,
        window: Duration,
        holds: impl Fn(Duration, Duration) -> bool,
    ) -> Option<Duration> {
        let mut t = event;
        while t + window <= until {
            if holds(t, t + window) {
                return Some(t - event);
            }
            t += BUCKET;
        }
        None
    }

    /// The median of the successful calls per second over consecutive `window`s in
    /// each of the `spans` (from, to): one slow window (a GC pause of a peer, a
    /// neighbour's burst on a shared machine) moves it little, while a channel that
    /// stalls on a fault lowers most windows and so the median. `0.0` if the spans hold
    /// no whole window.
    pub fn median_rate(&self, spans: &[(Duration, Duration)], window: Duration) -> f64 {
        let mut rates = Vec::new();
        for &(from, to) in spans {
            let mut t = from;
            while t + window <= to {
                rates.push(self.rate(t, t + window));
                t += window;
            }
        }
        if rates.is_empty() {
            return 0.0;
        }
        rates.sort_by(f64::total_cmp);
        let mid = rates.len() / 2;
        if rates.len() % 2 == 1 {
            rates[mid]
        } else {
            (rates[mid - 1] + rates[mid]) / 2.0
        }
    }

    /// How long after `event` the throughput, over 250 ms windows, first came back to
    /// 90% of `baseline` calls/s; `None` if it never did before `until`.
    pub fn recovered_after(
        &self,
        event: Duration,
        baseline: f64,
        until: Duration,
    ) -> Option<Duration> {
        let window = Duration::from_millis(250);
        self.first_window(event, until, window, |from, to| {
            self.rate(from, to) >= 0.9 * baseline
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(per_bucket: &[u32]) -> Record {
        Record {
            buckets: per_bucket.iter().map(|&ok| [ok, 0, 0]).collect(),
            errors: Vec::new(),
            first_failure: None,
        }
    }

    #[test]
    fn the_median_rate_shrugs_off_one_slow_window_but_not_a_stall() {
        let window = Duration::from_millis(500);
        let span = Duration::from_secs(5);
        // 10 calls a bucket is 200 calls/s; one half-second window at a tenth of that.
        let mut buckets = vec![10; 100];
        buckets[20..30].fill(1);
        let steady = record(&buckets);
        assert_eq!(steady.median_rate(&[(Duration::ZERO, span)], window), 200.0);
        assert!(steady.rate(Duration::ZERO, span) < 190.0);
        // A channel stalling in three windows out of five: the median sees it.
        let stalled: Vec<u32> = (0..100)
            .map(|i| if (i / 10) % 5 < 3 { 1 } else { 10 })
            .collect();
        assert!(record(&stalled).median_rate(&[(Duration::ZERO, span)], window) <= 20.0);
        assert_eq!(
            record(&[]).median_rate(&[(Duration::ZERO, span)], window),
            0.0
        );
    }

    #[test]
    fn the_watched_share_comes_back_in_the_first_window_that_holds_it() {
        // 10 calls a bucket; the watched server answers 3 of them, none in buckets
        // 20..40, then 1 (10%) to bucket 50, then 3 again.
        let buckets: Vec<[u32; 3]> = (0..80)
            .map(|i| match i {
                20..40 => [10, 0, 0],
                40..50 => [10, 0, 1],
                _ => [10, 0, 3],
            })
            .collect();
        let r = Record::from_buckets(buckets);
        let at = |i: u32| BUCKET * i;
        assert!((r.share(at(0), at(20)) - 0.3).abs() < 1e-9);
        assert_eq!(r.share(at(20), at(40)), 0.0);
        // From bucket 20: the first 500 ms window with a fifth of the calls starts at
        // bucket 45 (five buckets at 10%, five at 30%).
        assert_eq!(r.share_back_after(at(20), 0.2, at(80)), Some(at(25)));
        assert_eq!(r.share_back_after(at(20), 0.2, at(50)), None);
        assert_eq!(r.calls_between(at(0), at(10)), (100, 0));
    }

    #[test]
    fn the_last_failure_is_the_end_of_the_last_bucket_with_one() {
        let mut r = record(&[10, 10, 10, 10]);
        assert_eq!(r.last_failure(), None);
        r.buckets[1][1] = 2;
        r.buckets[2][1] = 1;
        assert_eq!(r.last_failure(), Some(BUCKET * 3));
    }
}
