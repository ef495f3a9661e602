//! Following a service's instances: [`HealthWatcher`].
//!
//! The watcher runs consul blocking queries, `GET /v1/health/service/<name>?index=N&wait=W`
//! (with `passing`, `tag`, `dc`, `near` as asked), and keeps the newest full answer.
//! Following consul's guidance for blocking queries:
//!
//! * the next query waits on the `X-Consul-Index` of the last answer; an index that
//!   goes backwards (a restarted agent or a new leader) or is 0 resets it, so the next
//!   query reads everything at once;
//! * after any error the index is reset too, and the query is retried with a bounded
//!   backoff (≤ 500 ms), so a returning agent is read within half a second;
//! * while the agent cannot be reached the watcher reports an error and keeps the last
//!   answer (a balancer keeps serving the last endpoint set);
//! * an answer is read whole, whatever its size, up to [`HealthQuery::max_answer`]
//!   ([`MAX_ANSWER`], 1 GiB, about a million instances, unless set): a larger one is
//!   an error that says so, published once, the last answer kept; the next query waits
//!   on that answer's index, so it is read again when the service changes or the wait
//!   ends, never in a loop;
//! * each request may take the wait plus consul's jitter (wait/16) plus 5 s plus twice
//!   the time the last answer took once it was due (consul needs seconds to build an
//!   answer of 100,000 instances, so a fixed bound would cut big answers off after a
//!   wait forever); a request that times out doubles that allowance for the next one
//!   (up to [`MAX_SLACK`]), so an answer of any size is read in the end;
//! * a resolver ([`resolve_health`]) publishes a set that empties only once it stayed
//!   empty for [`EMPTY_GRACE`] (3 s), keeping the last set meanwhile so calls keep going
//!   to the instances; a non-empty set is published at once
//!   ([`SnapshotSender::hold_empty`]). An agent empties a service for a moment when
//!   nothing is wrong with its instances: after a restart it has lost them until their
//!   registrants register them again (ours do within a second), and after a stall past
//!   the TTLs (a frozen or starved process) its overdue TTL timers mark every check
//!   critical as it resumes, until the next heartbeats land. The `consul-freeze` fault
//!   scenario saw that moment fail 13 calls of 84,000 in CI before this rule
//!   (`tests/freeze.rs` empties the set every time without it).
//!
//! With ACLs and a default policy of `deny`, a read without a token is not refused:
//! consul answers `200 []`. A watcher without a token that gets an empty answer from
//! such an agent (it says so in `X-Consul-Default-Acl-Policy`) reports an error saying
//! to pass `?token=` or set `CONSUL_HTTP_TOKEN`, rather than an empty set. A token consul
//! does not know is refused outright (HTTP 403) and reported the same way.
//!
//! One watcher runs per distinct query in a process, however many channels resolve it;
//! each [`resolve_health`] call turns the shared answer into endpoints with its own
//! format. The watcher stops when its last subscriber is gone.

use std::ops::RangeInclusive;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use dtmdriver_core::backoff::Backoff;
use dtmdriver_core::resolve::{Endpoint, SnapshotSender};
use dtmdriver_core::shared::{SharedWatches, forward_snapshots};
use dtmdriver_core::{Result, Target};
use http::Method;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::client::{ConsulClient, MAX_ANSWER, REQUEST_TIMEOUT, escape};
use crate::error::ConsulError;
pub use crate::health::{AgentService, HealthCheck, Node, ServiceEntry};
use crate::registration::consul_duration;
use crate::target::{ConsulConfig, ConsulTarget};

/// The default wait of a blocking query.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(55);

/// The waits `?wait=` may ask for: up to consul's own maximum, 10 minutes.
pub const WAIT_RANGE: RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(600);

/// How long a resolver's set must stay empty, after it held instances, before the empty
/// set is published: a restarted agent has lost its services until their registrants
/// register them again, one that stalled past the TTLs has marked every check critical
/// until the next heartbeats.
pub const EMPTY_GRACE: Duration = Duration::from_secs(3);

/// The most a query's timeout grows beyond its wait, jitter and 5 s when answers are
/// slow to come (see the [module docs](self)).
pub const MAX_SLACK: Duration = Duration::from_secs(600);

/// One blocking health query. Equal queries share one watcher.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HealthQuery {
    /// The agent and credentials.
    pub config: ConsulConfig,
    /// The service name.
    pub service: String,
    /// Only instances whose checks all pass (`&passing=true`).
    pub passing_only: bool,
    /// Only instances with this tag.
    pub tag: Option<String>,
    /// The datacenter.
    pub dc: Option<String>,
    /// Sort by round-trip time from this node (`_agent` for the local agent).
    pub near: Option<String>,
    /// How long one query blocks.
    pub wait: Duration,
    /// The largest answer read, in bytes ([`MAX_ANSWER`] by default); a larger one is
    /// an error (see the [module docs](self)).
    pub max_answer: usize,
}

impl HealthQuery {
    /// A query of every instance of `service`, waiting [`DEFAULT_WAIT`].
    pub fn new(config: ConsulConfig, service: impl Into<String>) -> Self {
        Self {
            config,
            service: service.into(),
            passing_only: false,
            tag: None,
            dc: None,
            near: None,
            wait: DEFAULT_WAIT,
            max_answer: MAX_ANSWER,
        }
    }

    /// The query a target asks for: the agent, service and `?dc=` of
    /// [`ConsulTarget`], plus `?tag=`, `?near=` and `?wait=`
    /// (default [`DEFAULT_WAIT`]). `passing_only` is left to the format.
    pub fn from_target(target: &Target) -> Result<Self> {
        let t = ConsulTarget::from_target(target)?;
        let mut query = Self::new(t.config, t.service);
        query.dc = t.dc;
        let nonempty = |key| {
            target
                .query(key)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        query.tag = nonempty("tag");
        query.near = nonempty("near");
        if let Some(wait) = target.query_duration("wait", &WAIT_RANGE)? {
            query.wait = wait;
        }
        Ok(query)
    }

    /// The request path for the blocking query after `index`.
    ///
    /// ```
    /// use dtmdriver_consul::{ConsulConfig, HealthQuery};
    /// let mut q = HealthQuery::new(ConsulConfig::new("h:8500"), "trans");
    /// q.passing_only = true;
    /// q.tag = Some("rpc".into());
    /// assert_eq!(q.path(7), "/v1/health/service/trans?index=7&wait=55s&passing=true&tag=rpc");
    /// ```
    pub fn path(&self, index: u64) -> String {
        let mut path = format!(
            "/v1/health/service/{}?index={index}&wait={}",
            escape(&self.service),
            consul_duration(self.wait)
        );
        if self.passing_only {
            path.push_str("&passing=true");
        }
        for (key, value) in [("tag", &self.tag), ("dc", &self.dc), ("near", &self.near)] {
            if let Some(value) = value {
                path.push_str(&format!("&{key}={}", escape(value)));
            }
        }
        path
    }
}

/// What a watcher knows about its query.
#[derive(Clone, Debug, Default)]
pub struct HealthState {
    /// The newest answer; `None` until the first one.
    pub entries: Option<Arc<Vec<ServiceEntry>>>,
    /// Why consul cannot be read right now, if it cannot.
    pub error: Option<String>,
}

static WATCHERS: LazyLock<SharedWatches<HealthQuery, HealthState>> =
    LazyLock::new(|| SharedWatches::new("consul health watcher"));

/// The shared blocking-query loop of one [`HealthQuery`]; see the [module docs](self).
#[derive(Debug)]
pub struct HealthWatcher {
    rx: watch::Receiver<HealthState>,
}

impl HealthWatcher {
    /// Subscribes to the process's watcher of `query`, starting it if none runs. Must
    /// be called inside a tokio runtime.
    pub fn subscribe(query: &HealthQuery) -> Self {
        let rx = WATCHERS.subscribe(query, |tx| run(query.clone(), tx));
        Self { rx }
    }

    /// The receiver of the watcher's state; `changed()` fires on every change.
    pub fn receiver(&self) -> watch::Receiver<HealthState> {
        self.rx.clone()
    }

    /// How many watchers run in this process (for tests of the sharing).
    pub fn running() -> usize {
        WATCHERS.len()
    }
}

/// Turns a whole answer into endpoints (a format's decoding, filtering and limits).
pub type Decode = Arc<dyn Fn(&[ServiceEntry]) -> Vec<Endpoint> + Send + Sync>;

/// Resolves `query` into endpoint snapshots published on `updates`, turning each
/// answer into endpoints with `decode`. Returns at once; a task follows the shared
/// [`HealthWatcher`] until `updates` is closed.
pub fn resolve_health(query: &HealthQuery, decode: Decode, updates: SnapshotSender) {
    let rx = HealthWatcher::subscribe(query).receiver();
    tokio::spawn(forward_snapshots(
        rx,
        updates,
        Some(EMPTY_GRACE),
        move |state| match (&state.entries, &state.error) {
            (_, Some(error)) => Some(Err(error.clone())),
            (Some(entries), None) => Some(Ok(decode(entries).into())),
            (None, None) => None,
        },
    ));
}

/// [`resolve_health`] for a format that reads each instance alone: an answer's endpoints
/// are what `decode` gives for its entries, in order (`None` leaves an entry out).
pub fn resolve_each(
    query: &HealthQuery,
    decode: impl Fn(&ServiceEntry) -> Option<Endpoint> + Send + Sync + 'static,
    updates: SnapshotSender,
) {
    let decode: Decode =
        Arc::new(move |entries: &[ServiceEntry]| entries.iter().filter_map(&decode).collect());
    resolve_health(query, decode, updates);
}

/// The watcher task: blocking queries until nobody listens (the shared map then
/// drops it).
async fn run(query: HealthQuery, tx: watch::Sender<HealthState>) {
    loop {
        follow(&query, &tx).await;
    }
}

/// Runs blocking queries forever; cancelled by dropping.
async fn follow(query: &HealthQuery, tx: &watch::Sender<HealthState>) {
    let client = ConsulClient::new(query.config.clone());
    let what = format!("the health query of service `{}`", query.service);
    let mut backoff = Backoff::for_engine();
    let mut index = 0u64;
    // Twice the time the last answer took once it was due: a big answer takes consul
    // seconds to build, and the timeout must not cut it off.
    let mut slack = Duration::ZERO;
    loop {
        let started = Instant::now();
        let timeout = query.wait + query.wait / 16 + REQUEST_TIMEOUT + slack;
        let asked = index;
        let result = client
            .send_limited(
                Method::GET,
                &query.path(index),
                None,
                timeout,
                &what,
                query.max_answer,
            )
            .await
            .and_then(|reply| {
                let entries: Vec<ServiceEntry> = client.decode(&reply, &what)?;
                Ok((reply, entries))
            });
        match result {
            Ok((reply, entries)) => {
                backoff.reset();
                let new_index = reply.index();
                let unchanged = new_index == index;
                // Due at once when not blocking, else when the wait ended; an answer
                // to a change came at an unknown time after it and says nothing.
                let took = started.elapsed();
                if asked == 0 {
                    slack = (took * 2).min(MAX_SLACK);
                } else if unchanged {
                    slack = (took.saturating_sub(query.wait) * 2).min(MAX_SLACK);
                }
                index = if new_index < index || new_index == 0 {
                    tracing::debug!(service = %query.service, old = index, new = new_index, "consul index went back; reading everything again");
                    0
                } else {
                    new_index
                };
                let hidden = entries.is_empty()
                    && !query.config.has_token()
                    && reply.header("x-consul-default-acl-policy") == Some("deny");
                if hidden {
                    let error = format!(
                        "the consul agent at {} has ACLs with a default policy of deny and no \
                         token was given, so no instance of `{}` is visible; pass a token with \
                         service:read as ?token=... on the target or set CONSUL_HTTP_TOKEN",
                        query.config.addr(),
                        query.service
                    );
                    publish_error(tx, query, error);
                } else {
                    tx.send_if_modified(|s| {
                        let same = s.error.is_none()
                            && s.entries.as_deref().is_some_and(|e| *e == entries);
                        if !same {
                            s.entries = Some(Arc::new(entries));
                            s.error = None;
                        }
                        !same
                    });
                }
                // An agent that answers at once without news must not be hammered.
                if unchanged && started.elapsed() < Duration::from_millis(20) {
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
            Err(e @ ConsulError::TooLarge { index: at, .. }) if at != 0 => {
                // Said once; read again when the service changes (or the wait ends).
                publish_error(tx, query, e.to_string());
                index = at;
            }
            Err(e) => {
                if matches!(e, ConsulError::Timeout { .. }) {
                    slack = (slack * 2).max(REQUEST_TIMEOUT).min(MAX_SLACK);
                }
                // The next answer, from wherever, is read in full at once.
                index = 0;
                publish_error(tx, query, e.to_string());
                if matches!(
                    e,
                    ConsulError::Refused { .. }
                        | ConsulError::Tls { .. }
                        | ConsulError::TooLarge { .. }
                ) {
                    // A refused token, an untrusted certificate or a too-large answer
                    // (without an index to wait on) stays so for a while; do not spin.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                } else {
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }
}

fn publish_error(tx: &watch::Sender<HealthState>, query: &HealthQuery, error: String) {
    tx.send_if_modified(|s| {
        if s.error.as_deref() == Some(error.as_str()) {
            return false;
        }
        tracing::warn!(service = %query.service, %error, "consul health query failed; keeping the last answer");
        s.error = Some(error);
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #11 item 2: a huge `?wait=` panicked in `Duration::from_secs_f64`.
    #[test]
    fn wait_out_of_range_is_refused_naming_the_range() {
        for wait in ["99999999999999999999s", "0s", "11m", "soon"] {
            let target = Target::parse(&format!("consul://h:1/s?wait={wait}")).unwrap();
            let err = HealthQuery::from_target(&target).unwrap_err().to_string();
            assert!(
                err.contains(&format!("wait `{wait}` is not a duration from 1ms to 10m")),
                "{wait}: {err}"
            );
        }
        let target = Target::parse("consul://h:1/s?wait=14s").unwrap();
        assert_eq!(
            HealthQuery::from_target(&target).unwrap().wait,
            Duration::from_secs(14)
        );
    }
}
