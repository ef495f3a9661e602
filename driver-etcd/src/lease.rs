//! Keeping one key alive under a lease: [`LeaseKeeper`].
//!
//! Contract: while the returned [`Registration`] lives, the key is put back whenever it
//! is lost — etcd restarted or unreachable, the lease expired, the key deleted by hand,
//! the client's auth token refused — and never silently: the first failure of an episode
//! is logged at WARN with what to do about it (again when the cause changes, and once a
//! minute while it lasts), the handle's [`health`](Registration::health) turns
//! [`Retrying`](dtmdriver_core::RegistrationState::Retrying), and back to `Live` once the
//! key holds again. Deregistering or dropping revokes the lease, which deletes the key.
//!
//! A registration is a key written with a lease of a few seconds' TTL. The keeper
//!
//! * grants the lease and puts the key, and only then hands out the [`Registration`];
//! * renews the lease every TTL/3 on one keep-alive stream (one request per renewal,
//!   sent by this loop); a renewal still unanswered at the next one gives the stream up,
//!   and so does etcd when the stream's member loses its leader (a member cut off from
//!   its peers holds renewals until its request timeout, past a 10 s TTL): recovery
//!   renews the lease first, through another member;
//! * watches its own key and puts it back when someone deletes it;
//! * when etcd goes away it retries with a short bounded backoff (≤ 500 ms), and when
//!   etcd is back it re-puts the key under the old lease if that is still alive, or
//!   grants a new lease and puts the key again (a format may put the lease id into the
//!   key, as go-zero does: the key is a function of the lease);
//! * on stop revokes the lease, which deletes the key at once.
//!
//! With etcd authentication, the client's token dies when etcd restarts (simple tokens
//! live in its memory) and after `--auth-token-ttl` (300 s by default) without use. The
//! lease keep-alive stream needs no token, so a registration can look fine until its next
//! put, grant or revoke is refused. The shared client logs in again when a unary call
//! is refused for its token, and the keeper does so too when etcd cancels its watch
//! (`permission denied`, as etcd answers a watch created with a dead token).

use std::sync::Arc;
use std::time::Duration;

use dtmdriver_core::health::{FailureEpisode, HealthReporter};
use dtmdriver_core::{Registration, Result};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use dtmdriver_core::backoff::Backoff;

use crate::api::{EtcdClient, describe, watch_key};
use crate::client::{EtcdConfig, shared_client};
use crate::proto::mvccpb::event::EventType;
use crate::request::{
    bounded, failure_hint, refresh_if_token_refused, registry_error, write_retrying,
};

/// Builds a key from the lease id it is written under.
pub type KeyFn = Arc<dyn Fn(i64) -> String + Send + Sync>;

/// Keeps a key alive under a lease; see the [module docs](self).
///
/// ```no_run
/// # async fn f() -> dtmdriver_core::Result<()> {
/// use std::time::Duration;
/// use dtmdriver_etcd::{EtcdConfig, LeaseKeeper, shared_client};
/// let client = shared_client(&EtcdConfig::new(["127.0.0.1:2379"])).await?;
/// let registration = LeaseKeeper::new(client, |lease| format!("trans/{lease}"), "10.0.0.5:8080")
///     .ttl(Duration::from_secs(10))
///     .start("etcd://127.0.0.1:2379/trans", "10.0.0.5:8080")
///     .await?;
/// registration.deregister().await?; // revokes the lease: the key is gone
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LeaseKeeper {
    client: Arc<EtcdClient>,
    key: KeyFn,
    value: String,
    ttl: Duration,
}

impl std::fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKeeper")
            .field("key", &(self.key)(0))
            .field("value", &self.value)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Why a keep-alive session ended.
enum SessionEnd {
    Stopped,
    LeaseLost(String),
    Disconnected(String),
}

/// The lease and key currently held.
struct Held {
    lease: i64,
    key: String,
    /// Revision of the last put of the key, to watch it from the next one.
    revision: i64,
}

impl LeaseKeeper {
    /// Default lease TTL (go-zero's).
    pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

    /// A keeper writing `value` at `key(lease id)` through `client`, TTL
    /// [`DEFAULT_TTL`](Self::DEFAULT_TTL).
    pub fn new(
        client: Arc<EtcdClient>,
        key: impl Fn(i64) -> String + Send + Sync + 'static,
        value: impl Into<String>,
    ) -> Self {
        Self {
            client,
            key: Arc::new(key),
            value: value.into(),
            ttl: Self::DEFAULT_TTL,
        }
    }

    /// Keeps `value` at `key(lease id)` in the cluster of `config` under a lease of
    /// `ttl` ([`ttl`](Self::ttl)), through the process's [`shared_client`]: what every
    /// etcd format's registrar does. `target` and `endpoint` label the handle.
    pub async fn register(
        config: &EtcdConfig,
        key: impl Fn(i64) -> String + Send + Sync + 'static,
        value: impl Into<String>,
        ttl: Duration,
        target: &str,
        endpoint: &str,
    ) -> Result<Registration> {
        let client = shared_client(config).await?;
        Self::new(client, key, value)
            .ttl(ttl)
            .start(target, endpoint)
            .await
    }

    /// The lease TTL, rounded up to whole seconds (etcd's unit), at least 2 s.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Duration::from_secs(ttl.as_secs_f64().ceil().max(2.0) as u64);
        self
    }

    /// Grants the lease and puts the key, then keeps both alive in a task until the
    /// returned handle is deregistered or dropped. `target` and `endpoint` label the
    /// handle and error messages.
    pub async fn start(self, target: &str, endpoint: &str) -> Result<Registration> {
        let held = match self.grant_and_put().await {
            Ok(held) => Ok(held),
            // A token refused at the first write (etcd restarted since the shared client
            // logged in): log in again and try once more.
            Err(e) if refresh_if_token_refused(&self.client, &e).await => {
                self.grant_and_put().await
            }
            Err(e) => Err(e),
        }
        .map_err(|e| registry_error(target, format!("{e}; {}", failure_hint(&e))))?;
        tracing::info!(key = %held.key, value = %self.value, lease = held.lease, ttl = ?self.ttl, "registered in etcd");
        let target_name = target.to_string();
        Ok(Registration::spawn_with_health(
            target,
            endpoint,
            move |stop, health| self.keep(held, stop, target_name, health),
        ))
    }

    async fn grant_and_put(&self) -> std::result::Result<Held, String> {
        let ttl = self.ttl.as_secs() as i64;
        let grant = write_retrying("lease grant", || self.client.lease_grant(ttl)).await?;
        let lease = grant.id;
        let key = (self.key)(lease);
        let revision = self.put(&key, lease).await?;
        Ok(Held {
            lease,
            key,
            revision,
        })
    }

    /// Puts the key under `lease`; returns the revision of the put.
    async fn put(&self, key: &str, lease: i64) -> std::result::Result<i64, String> {
        let resp = write_retrying("put", || self.client.put(key, &self.value, lease)).await?;
        Ok(resp.header.map_or(0, |h| h.revision))
    }

    async fn keep(
        self,
        mut held: Held,
        stop: CancellationToken,
        target: String,
        health: HealthReporter,
    ) -> Result<()> {
        let mut backoff = Backoff::for_engine();
        loop {
            let (mut lost, why) = match self.session(&held, &stop).await {
                SessionEnd::Stopped => break,
                SessionEnd::LeaseLost(why) => (true, why),
                SessionEnd::Disconnected(why) => (false, why),
            };
            // An episode: WARN once with the fix, retry with bounded backoff until the
            // key holds again or we are stopped.
            let mut episode = Episode::begin(&held, lost, &why, &health);
            refresh_if_token_refused(&self.client, &why).await;
            loop {
                if stop.is_cancelled() {
                    break;
                }
                match self.recover(&held, lost).await {
                    Ok(next) => {
                        episode.end(&held, &next, &health);
                        held = next;
                        backoff.reset();
                        break;
                    }
                    Err((why, lease_gone)) => {
                        lost |= lease_gone;
                        episode.failed(&held, &why, &health);
                        // A cancelled watch (`permission denied`) only ends sessions; a
                        // user whose rights were taken away is not logged in again (a
                        // password check in etcd) on every retry.
                        if why.contains("invalid auth token") {
                            refresh_if_token_refused(&self.client, &why).await;
                        }
                        tokio::select! {
                            () = stop.cancelled() => break,
                            () = tokio::time::sleep(backoff.next_delay()) => {}
                        }
                    }
                }
            }
            if stop.is_cancelled() {
                break;
            }
        }
        self.revoke(&held)
            .await
            .map_err(|e| registry_error(&target, e))
    }

    /// Gets the key back in place: under the same lease if it is alive, else under a new
    /// one. The error says whether the lease is known to be gone.
    ///
    /// The old lease is asked about by renewing it (a keep-alive, which answers whether
    /// it is alive): the first call of a recovery buys the lease a whole TTL, and, on a
    /// stream that requires a leader, fails at once on a member cut off from its peers
    /// instead of waiting there for a leader while the TTL runs out.
    async fn recover(&self, held: &Held, lost: bool) -> std::result::Result<Held, (String, bool)> {
        if !lost {
            match bounded("lease keep-alive", self.client.lease_keep_alive(held.lease)).await {
                Ok(_renewed) => match self.put(&held.key, held.lease).await {
                    Ok(revision) => {
                        return Ok(Held {
                            lease: held.lease,
                            key: held.key.clone(),
                            revision,
                        });
                    }
                    Err(e) if !is_lease_not_found(&e) => return Err((e, false)),
                    Err(_) => {}
                },
                Err(e) if !is_lease_not_found(&e) => return Err((e, false)),
                Err(_) => {}
            }
        }
        self.grant_and_put().await.map_err(|e| (e, true))
    }

    /// Renews the lease and guards the key until something goes wrong or `stop`.
    async fn session(&self, held: &Held, stop: &CancellationToken) -> SessionEnd {
        let (keeper, mut acks) =
            match bounded("lease keep-alive", self.client.lease_keep_alive(held.lease)).await {
                Ok(pair) => pair,
                Err(e) if is_lease_not_found(&e) => return SessionEnd::LeaseLost(e),
                Err(e) => return SessionEnd::Disconnected(e),
            };
        let own_key = watch_key(&held.key, held.revision + 1);
        let mut watch = match bounded("watch", self.client.watch(own_key)).await {
            Ok(w) => w,
            Err(e) => return SessionEnd::Disconnected(e),
        };
        let period = self.ttl / 3;
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        // When the oldest renewal not answered yet was sent. etcd answers one in
        // milliseconds; one still unanswered a period later is stuck (a member that lost
        // its leader holds renewals until its request timeout, 7 s by default), so the
        // session is given up and the lease renewed through another member with a TTL
        // to spare. Judged at the next tick, by time: ticks missed while this task was
        // held up come in a burst, and one right after the send must not make it look
        // stuck (half a period tells the two apart).
        let mut unanswered: Option<Instant> = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => return SessionEnd::Stopped,
                _ = tick.tick() => {
                    if unanswered.is_some_and(|sent| sent.elapsed() >= period / 2) {
                        return SessionEnd::Disconnected(format!(
                            "a keep-alive went unanswered for {period:?}"
                        ));
                    }
                    if let Err(e) = keeper.keep_alive().await {
                        return SessionEnd::Disconnected(format!("sending keep-alive: {e}"));
                    }
                    unanswered.get_or_insert_with(Instant::now);
                }
                ack = acks.message() => match ack {
                    Ok(Some(resp)) if resp.ttl <= 0 => {
                        return SessionEnd::LeaseLost("etcd says the lease expired".into());
                    }
                    Ok(Some(_)) => unanswered = None,
                    Ok(None) => return SessionEnd::Disconnected("keep-alive stream closed".into()),
                    Err(e) => return SessionEnd::Disconnected(format!("keep-alive stream: {}", describe(&e))),
                },
                event = watch.message() => match event {
                    Ok(Some(resp)) => {
                        if resp.canceled {
                            return SessionEnd::Disconnected(format!(
                                "etcd cancelled the watch of our key: {}", resp.cancel_reason
                            ));
                        }
                        let deleted = resp.events.iter().any(|e| e.r#type() == EventType::Delete);
                        if deleted && !stop.is_cancelled() {
                            tracing::warn!(key = %held.key, "our registration key was deleted; putting it back");
                            match self.put(&held.key, held.lease).await {
                                Ok(_) => {}
                                Err(e) if is_lease_not_found(&e) => return SessionEnd::LeaseLost(e),
                                Err(e) => return SessionEnd::Disconnected(e),
                            }
                        }
                    }
                    Ok(None) => return SessionEnd::Disconnected("watch stream closed".into()),
                    Err(e) => return SessionEnd::Disconnected(format!("watch stream: {}", describe(&e))),
                },
            }
        }
    }

    async fn revoke(&self, held: &Held) -> std::result::Result<(), String> {
        let mut result = self.revoke_once(held.lease).await;
        // A token refused (etcd restarted since): log in again, revoke again.
        if let Err(e) = &result
            && refresh_if_token_refused(&self.client, e).await
        {
            result = self.revoke_once(held.lease).await;
        }
        match result {
            Ok(()) => {
                tracing::info!(key = %held.key, lease = held.lease, "deregistered from etcd");
                Ok(())
            }
            // Already gone: so is the key.
            Err(e) if is_lease_not_found(&e) => Ok(()),
            Err(e) => {
                let hint = failure_hint(&e);
                tracing::warn!(key = %held.key, lease = held.lease, error = %e, %hint, "revoking the lease failed; the key expires with its TTL");
                Err(format!(
                    "{e}; {hint}; the key `{}` disappears when its lease's {:?} TTL runs out",
                    held.key, self.ttl
                ))
            }
        }
    }

    /// Revokes `lease`, again while an attempt times out or its member is lost (revoking
    /// is idempotent: a lease already gone answers "not found"). One attempt alone
    /// failed when it reached a member that had just rejoined its peers after a
    /// partition and was still catching up (`tests/partition.rs`, 1 run in 3).
    async fn revoke_once(&self, lease: i64) -> std::result::Result<(), String> {
        write_retrying("lease revoke", || self.client.lease_revoke(lease)).await
    }
}

/// One episode of failing to keep the key: its start logged at WARN with the fix, again
/// when the fix changes or a minute passed ([`FailureEpisode`]), its end at INFO; and the
/// registration's state set.
struct Episode {
    log: FailureEpisode,
}

impl Episode {
    fn begin(held: &Held, lost: bool, why: &str, health: &HealthReporter) -> Self {
        let hint = failure_hint(why);
        if lost {
            tracing::warn!(key = %held.key, lease = held.lease, %why, %hint, "etcd lease lost; granting a new one and putting the key again");
        } else {
            tracing::warn!(key = %held.key, lease = held.lease, %why, %hint, "etcd keep-alive interrupted; putting the key back until it holds");
        }
        health.retrying(format!("{why}; {hint}"));
        Self {
            log: FailureEpisode::begin(hint),
        }
    }

    fn failed(&mut self, held: &Held, why: &str, health: &HealthReporter) {
        let hint = failure_hint(why);
        health.retrying(format!("{why}; {hint}"));
        if self.log.failed(hint) {
            tracing::warn!(key = %held.key, %why, %hint, attempts = self.log.attempts(), down_for = ?self.log.elapsed(), "etcd registration still not restored; retrying");
        } else {
            tracing::debug!(key = %held.key, %why, attempts = self.log.attempts(), "etcd registration not restored yet");
        }
    }

    fn end(&self, held: &Held, next: &Held, health: &HealthReporter) {
        let after = self.log.elapsed();
        if next.lease != held.lease {
            tracing::info!(key = %next.key, lease = next.lease, ?after, "re-registered in etcd under a new lease");
        } else {
            tracing::info!(key = %next.key, lease = next.lease, ?after, "etcd keep-alive resumed");
        }
        health.live();
    }
}

fn is_lease_not_found(message: &str) -> bool {
    message.contains("lease not found")
}
