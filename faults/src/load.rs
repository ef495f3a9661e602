//! Closed-loop load on a channel, recorded call by call.
//!
//! [`Load::start`] runs `workers` callers, each sending the next echo call as soon as
//! the last one ended, every call with its own deadline. Each call's end time and
//! outcome are kept, so a scenario can ask afterwards how many calls failed, the
//! throughput in any window, and when throughput came back after a fault.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use driver_core::Channel;
use test_support::{EchoClient, SayRequest};
use tokio::task::JoinHandle;

/// The deadline of each call.
pub const CALL_DEADLINE: Duration = Duration::from_secs(1);

/// How long a caller pauses after a failed call.
const FAILURE_PAUSE: Duration = Duration::from_millis(5);

/// One call's end, in milliseconds since the load started, and whether it succeeded.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at_ms: u32,
    ok: bool,
}

/// A running load; [`stop`](Self::stop) ends it and returns what happened.
pub struct Load {
    started: Instant,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<(Vec<Sample>, Vec<String>)>>,
}

impl Load {
    /// Starts `workers` closed-loop callers on `channel`.
    pub fn start(channel: &Channel, workers: usize) -> Self {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|_| {
                let mut client = EchoClient::new(channel.clone());
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut samples = Vec::new();
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
                        let ok = match outcome {
                            Ok(Ok(_)) => true,
                            Ok(Err(status)) => {
                                if errors.len() < 3 {
                                    errors.push(format!(
                                        "{:?}: {}",
                                        status.code(),
                                        status.message()
                                    ));
                                }
                                false
                            }
                            Err(_) => {
                                if errors.len() < 3 {
                                    errors.push("a call outlived its deadline by 2 s".into());
                                }
                                false
                            }
                        };
                        let at_ms =
                            u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
                        samples.push(Sample { at_ms, ok });
                        if !ok {
                            // A failing call may fail at once without awaiting anything:
                            // pause as a client would, and let other tasks run.
                            tokio::time::sleep(FAILURE_PAUSE).await;
                        }
                    }
                    (samples, errors)
                })
            })
            .collect();
        Self {
            started,
            stop,
            workers,
        }
    }

    /// Time since the load started: mark fault events with it.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the callers and collects their calls.
    pub async fn stop(self) -> Record {
        self.stop.store(true, Ordering::Relaxed);
        let mut samples = Vec::new();
        let mut errors = Vec::new();
        for worker in self.workers {
            if let Ok((s, e)) = worker.await {
                samples.extend(s);
                for e in e {
                    if errors.len() < 3 && !errors.contains(&e) {
                        errors.push(e);
                    }
                }
            }
        }
        samples.sort_by_key(|s| s.at_ms);
        Record { samples, errors }
    }
}

/// Every call of a load, in order of their ends.
pub struct Record {
    samples: Vec<Sample>,
    /// Up to three distinct failures, for the report.
    pub errors: Vec<String>,
}

impl Record {
    /// Calls made.
    pub fn calls(&self) -> usize {
        self.samples.len()
    }

    /// Calls that failed.
    pub fn failed(&self) -> usize {
        self.samples.iter().filter(|s| !s.ok).count()
    }

    /// Successful calls per second between `from` and `to`.
    pub fn rate(&self, from: Duration, to: Duration) -> f64 {
        let (a, b) = (ms(from), ms(to));
        if b <= a {
            return 0.0;
        }
        let ok = self
            .samples
            .iter()
            .filter(|s| s.ok && s.at_ms >= a && s.at_ms < b)
            .count();
        ok as f64 * 1000.0 / f64::from(b - a)
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
        let mut t = event;
        while t + window <= until {
            if self.rate(t, t + window) >= 0.9 * baseline {
                return Some(t - event);
            }
            t += Duration::from_millis(50);
        }
        None
    }
}

fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}
