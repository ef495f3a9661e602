//! Whether a registration is holding: [`RegistrationState`], read and watched through
//! the [`Registration`](crate::Registration) handle, set by the registrar's keeper through
//! a [`HealthReporter`].
//!
//! Contract: a registration is [`Live`](RegistrationState::Live) while the registry holds
//! the instance and its keep-alive works; the first failure to keep it (a lease or
//! heartbeat refused, the registry unreachable, a deleted key that cannot be put back)
//! turns it [`Retrying`](RegistrationState::Retrying) — the keeper goes on trying until it
//! holds again, then it is `Live` again; once deregistered, dropped, or its keeper has
//! ended it is [`Stopped`](RegistrationState::Stopped) for good.
//!
//! Why: a keeper that retries in the background keeps the process looking healthy while
//! nobody can find it. The state lets a service report itself unhealthy (a readiness
//! probe, a metric) instead of serving unseen.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Where a registration stands; see the [module docs](self).
///
/// ```
/// use dtmdriver_core::{Registration, RegistrationState};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let registration = Registration::noop("", "127.0.0.1:8080");
/// match registration.health() {
///     RegistrationState::Live => println!("registered"),
///     RegistrationState::Retrying { error, since } => {
///         println!("not registered for {:?}: {error}", since.elapsed())
///     }
///     RegistrationState::Stopped => println!("deregistered"),
///     _ => {}
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationState {
    /// The registry holds the instance and its keep-alive works.
    Live,
    /// Keeping the instance registered fails; the keeper retries until it holds. Clients
    /// may not find the instance meanwhile (its key or check expires with its TTL).
    Retrying {
        /// The latest failure, with what to do about it.
        error: String,
        /// When this episode of failures began.
        since: Instant,
    },
    /// Deregistered, dropped, or the keeper ended: the instance is not kept registered.
    Stopped,
}

impl RegistrationState {
    /// Whether the registration is [`Live`](Self::Live).
    pub fn is_live(&self) -> bool {
        matches!(self, Self::Live)
    }
}

/// The keeper's side of a registration's state: it reports each change, the
/// [`Registration`](crate::Registration) handle reads them. Cloning shares the state.
///
/// The return values tell episodes apart, so a keeper logs a failure once per episode
/// instead of once per retry:
///
/// ```
/// use dtmdriver_core::health::HealthReporter;
/// let health = HealthReporter::new();
/// assert!(health.retrying("etcd unreachable"));   // a new episode: log it at WARN
/// assert!(!health.retrying("etcd unreachable"));  // the same episode: stay quiet
/// assert!(health.live());                         // recovered: log that once
/// assert!(!health.live());
/// ```
#[derive(Clone, Debug)]
pub struct HealthReporter {
    tx: Arc<watch::Sender<RegistrationState>>,
}

impl Default for HealthReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthReporter {
    /// A reporter whose state starts [`Live`](RegistrationState::Live) (registrars hand out
    /// a registration once the instance was first written).
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(RegistrationState::Live)),
        }
    }

    /// The instance is registered and kept alive. Returns whether this ends an episode
    /// of failures. Ignored once stopped.
    pub fn live(&self) -> bool {
        self.tx.send_if_modified(|state| match state {
            RegistrationState::Retrying { .. } => {
                *state = RegistrationState::Live;
                true
            }
            RegistrationState::Live | RegistrationState::Stopped => false,
        })
    }

    /// Keeping the instance registered failed with `error`. Returns whether this starts
    /// an episode of failures (the state was live); within an episode only the error text
    /// is updated. Ignored once stopped.
    pub fn retrying(&self, error: impl Into<String>) -> bool {
        let error = error.into();
        let mut started = false;
        self.tx.send_if_modified(|state| match state {
            RegistrationState::Live => {
                *state = RegistrationState::Retrying {
                    error,
                    since: Instant::now(),
                };
                started = true;
                true
            }
            RegistrationState::Retrying { error: old, .. } if *old != error => {
                *old = error;
                true
            }
            RegistrationState::Retrying { .. } | RegistrationState::Stopped => false,
        });
        started
    }

    /// The registration is over; final.
    pub fn stopped(&self) {
        self.tx.send_if_modified(|state| {
            let changed = *state != RegistrationState::Stopped;
            *state = RegistrationState::Stopped;
            changed
        });
    }

    /// The current state.
    pub fn state(&self) -> RegistrationState {
        self.tx.borrow().clone()
    }

    /// A receiver of every change from now on.
    pub fn subscribe(&self) -> watch::Receiver<RegistrationState> {
        self.tx.subscribe()
    }
}

/// One episode of failing to keep a registration, for bounded logs: a keeper logs the
/// episode's start at WARN, then again only when [`failed`](Self::failed) says so — a
/// cause not seen yet in this episode (its fix differs), or
/// [`WARN_AGAIN_AFTER`](Self::WARN_AGAIN_AFTER) since the last WARN — and the rest at
/// DEBUG. So an outage of any length logs a few lines, not one per retry.
///
/// ```
/// use dtmdriver_core::health::FailureEpisode;
/// let mut episode = FailureEpisode::begin("unreachable"); // WARN: the episode starts
/// assert!(!episode.failed("unreachable"));                // DEBUG: same cause
/// assert!(episode.failed("refused: wrong token"));        // WARN: another fix applies
/// assert!(!episode.failed("unreachable"));                // DEBUG: already said
/// assert_eq!(episode.attempts(), 4);
/// ```
#[derive(Debug)]
pub struct FailureEpisode {
    since: Instant,
    last_warn: Instant,
    causes: Vec<String>,
    attempts: u32,
}

impl FailureEpisode {
    /// How often a failure that lasts is logged again at WARN.
    pub const WARN_AGAIN_AFTER: Duration = Duration::from_secs(60);

    /// An episode that starts now with `cause` (logged by the caller at WARN).
    pub fn begin(cause: &str) -> Self {
        let now = Instant::now();
        Self {
            since: now,
            last_warn: now,
            causes: vec![cause.to_string()],
            attempts: 0,
        }
    }

    /// Another failed attempt with `cause`; returns whether to log it at WARN.
    pub fn failed(&mut self, cause: &str) -> bool {
        self.attempts += 1;
        let new_cause = !self.causes.iter().any(|c| c == cause);
        if new_cause {
            self.causes.push(cause.to_string());
        }
        if new_cause || self.last_warn.elapsed() >= Self::WARN_AGAIN_AFTER {
            self.last_warn = Instant::now();
            true
        } else {
            false
        }
    }

    /// Failures in this episode, the one that began it included.
    pub fn attempts(&self) -> u32 {
        self.attempts + 1
    }

    /// How long the episode has lasted.
    pub fn elapsed(&self) -> Duration {
        self.since.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn episodes_keep_their_start_and_stopped_is_final() {
        let health = HealthReporter::new();
        assert!(health.retrying("a"));
        let RegistrationState::Retrying { since, .. } = health.state() else {
            panic!("not retrying: {:?}", health.state());
        };
        assert!(!health.retrying("b"));
        assert_eq!(
            health.state(),
            RegistrationState::Retrying {
                error: "b".into(),
                since
            }
        );
        health.stopped();
        assert!(!health.live());
        assert!(!health.retrying("c"));
        assert_eq!(health.state(), RegistrationState::Stopped);
    }

    #[tokio::test]
    async fn subscribers_see_each_change() {
        let health = HealthReporter::new();
        let mut rx = health.subscribe();
        health.retrying("down");
        rx.changed().await.unwrap();
        assert!(!rx.borrow_and_update().is_live());
        health.live();
        rx.changed().await.unwrap();
        assert!(rx.borrow_and_update().is_live());
    }
}
