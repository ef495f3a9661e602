//! Keeping one service registered with a consul agent: [`ServiceKeeper`].
//!
//! A registration is an agent service with a TTL check (plus, by format, agent-run TCP
//! or gRPC health checks: [`ServiceExtras`]). The keeper
//!
//! * registers the service (`PUT /v1/agent/service/register`) and only then hands out
//!   the [`Registration`];
//! * marks the check passing every heartbeat period (`PUT /v1/agent/check/update/<id>`);
//! * holds a blocking query on its own service (`GET /v1/agent/service/<id>?hash=`), so
//!   it learns at once when the agent goes away (the connection breaks) or forgets the
//!   service (the agent restarted, or someone deregistered it), instead of at the next
//!   heartbeat;
//! * then re-registers with a short bounded backoff (≤ 500 ms) until the agent takes
//!   it again: registrations re-appear within a second of the agent's return;
//! * marks the check passing once more 200 ms after any heartbeat answered a TTL or
//!   more after the previous one was sent, and after any re-registration: the agent
//!   stalled (a frozen or starved process), its TTL timer ran out meanwhile and fires
//!   as it resumes, and may land just after our update, leaving the check critical
//!   until the next heartbeat (a third of the TTL on the native format, 19 s on
//!   go-zero's). Measured on a SIGSTOPped agent under CPU load: 1 run in 3 left a
//!   check critical for a whole heartbeat (`tests/freeze.rs`);
//! * on stop deregisters (`PUT /v1/agent/service/deregister/<id>`).
//!
//! No failure is silent: the first of an episode (agent unreachable, service lost,
//! heartbeat refused) is logged at WARN with the agent's answer, again only when the
//! cause changes or a minute passed, and the handle's
//! [`health`](Registration::health) is
//! [`Retrying`](dtmdriver_core::RegistrationState::Retrying) until the service is
//! registered and its heartbeat accepted again.
//!
//! If the process dies without deregistering, the check goes critical after its TTL
//! and the agent removes the service after `DeregisterCriticalServiceAfter`.

use std::time::Duration;

use dtmdriver_core::health::{FailureEpisode, HealthReporter};
use dtmdriver_core::{Error, Registration, Result};
use http::Method;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use dtmdriver_core::backoff::Backoff;
use dtmdriver_core::duration::parse_duration;

use crate::client::{ConsulClient, escape};
use crate::error::ConsulError;
use crate::registration::{AgentServiceRegistration, ServiceExtras, check_meta, consul_duration};

/// How long the guard's blocking query on our own service waits.
const GUARD_WAIT: Duration = Duration::from_secs(60);

/// How soon after the agent answered again from a stall the check is marked passing
/// once more (at most a heartbeat): past its overdue TTL timers, which fire as it
/// resumes.
const FOLLOW_UP: Duration = Duration::from_millis(200);

/// What the guard learned.
enum Guard {
    /// The service is registered; the hash to wait on next.
    Present(String),
    /// The agent does not know the service.
    Missing,
    /// The agent cannot be reached or answered badly.
    Failed(ConsulError),
}

/// Keeps one service registered; see the [module docs](self).
///
/// ```no_run
/// # async fn f(registration: dtmdriver_consul::AgentServiceRegistration) -> dtmdriver_core::Result<()> {
/// use std::time::Duration;
/// use dtmdriver_consul::{ConsulClient, ConsulConfig, ServiceKeeper};
/// let client = ConsulClient::new(ConsulConfig::new("127.0.0.1:8500"));
/// let handle = ServiceKeeper::new(client, registration, Duration::from_secs(19))
///     .start("consul://127.0.0.1:8500/trans", "10.0.0.5:8080")
///     .await?;
/// handle.deregister().await?; // the service is gone from the agent
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ServiceKeeper {
    client: ConsulClient,
    registration: AgentServiceRegistration,
    extras: ServiceExtras,
    heartbeat: Duration,
    /// The check's TTL, read back from the registration (3 heartbeats if consul's
    /// syntax there is beyond ours).
    ttl: Duration,
}

impl ServiceKeeper {
    /// A keeper of `registration` through `client` that marks its TTL check passing
    /// every `heartbeat` (keep it below the check's TTL).
    pub fn new(
        client: impl Into<ConsulClient>,
        registration: AgentServiceRegistration,
        heartbeat: Duration,
    ) -> Self {
        let client = client.into();
        let heartbeat = heartbeat.max(Duration::from_millis(100));
        let any = Duration::ZERO..=dtmdriver_core::duration::FAR_FUTURE;
        let ttl = parse_duration("TTL", &registration.check.ttl, &any)
            .unwrap_or(heartbeat.saturating_mul(3));
        Self {
            client,
            registration,
            extras: ServiceExtras::default(),
            heartbeat,
            ttl,
        }
    }

    /// Registers `extras` (tagged addresses, agent-run checks) with the service, every
    /// time it is (re-)registered. Default: none.
    pub fn extras(mut self, extras: ServiceExtras) -> Self {
        self.extras = extras;
        self
    }

    /// Registers the service, then keeps it registered in a task until the returned
    /// handle is deregistered or dropped. `target` and `endpoint` label the handle and
    /// errors.
    pub async fn start(self, target: &str, endpoint: &str) -> Result<Registration> {
        check_meta(&self.registration.meta).map_err(|reason| Error::bad_target(target, reason))?;
        let registered = Instant::now();
        self.register()
            .await
            .map_err(|e| e.into_registry_error(target))?;
        tracing::info!(
            id = %self.registration.id, name = %self.registration.name,
            agent = %self.client.config().addr(), "registered with consul"
        );
        let target_name = target.to_string();
        Ok(Registration::spawn_with_health(
            target,
            endpoint,
            move |stop, health| self.keep(stop, target_name, health, registered),
        ))
    }

    async fn register(&self) -> std::result::Result<(), ConsulError> {
        let what = format!("registering service `{}`", self.registration.id);
        let body =
            self.extras
                .register_body(&self.registration)
                .map_err(|e| ConsulError::Decode {
                    addr: self.client.config().addr().to_string(),
                    what: what.clone(),
                    reason: format!("cannot encode the request: {e}"),
                })?;
        self.client
            .put("/v1/agent/service/register", &body, &what)
            .await
            .map(drop)
    }

    async fn pass(&self) -> std::result::Result<(), ConsulError> {
        let body = serde_json::json!({"Status": "passing", "Output": ""});
        let check = &self.registration.check.check_id;
        self.client
            .put(
                &format!("/v1/agent/check/update/{}", escape(check)),
                &body,
                &format!("updating check `{check}`"),
            )
            .await
            .map(drop)
    }

    /// [`pass`](Self::pass), and whether the TTL may have run out at the agent before
    /// it took it, so that its timer fires after our update ([`lapsed`]); keeps
    /// `reset_at`, the earliest the agent restarted the timer.
    async fn pass_since(&self, reset_at: &mut Instant) -> std::result::Result<bool, ConsulError> {
        let sent = Instant::now();
        self.pass().await?;
        let answered = Instant::now();
        let lapsed = lapsed(*reset_at, answered, self.ttl);
        // After a lapse the agent runs again at the answer: its overdue timer fires then.
        *reset_at = if lapsed { answered } else { sent };
        Ok(lapsed)
    }

    /// When to mark the check passing again after a stall.
    fn follow_up(&self) -> Duration {
        FOLLOW_UP.min(self.heartbeat)
    }

    async fn deregister(&self) -> std::result::Result<(), ConsulError> {
        let id = &self.registration.id;
        match self
            .client
            .send(
                Method::PUT,
                &format!("/v1/agent/service/deregister/{}", escape(id)),
                None,
                crate::client::REQUEST_TIMEOUT,
                &format!("deregistering service `{id}`"),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One blocking query on our own service, after `delay`.
    async fn guard(
        client: ConsulClient,
        id: String,
        hash: Option<String>,
        delay: Duration,
    ) -> Guard {
        tokio::time::sleep(delay).await;
        let mut path = format!("/v1/agent/service/{}", escape(&id));
        if let Some(hash) = &hash {
            path.push_str(&format!(
                "?hash={}&wait={}",
                escape(hash),
                consul_duration(GUARD_WAIT)
            ));
        }
        let timeout = GUARD_WAIT + GUARD_WAIT / 16 + crate::client::REQUEST_TIMEOUT;
        match client
            .send(
                Method::GET,
                &path,
                None,
                timeout,
                &format!("reading service `{id}`"),
            )
            .await
        {
            Ok(reply) => Guard::Present(
                reply
                    .header("x-consul-contenthash")
                    .unwrap_or_default()
                    .to_string(),
            ),
            Err(e) if e.is_not_found() => Guard::Missing,
            Err(e) => Guard::Failed(e),
        }
    }

    async fn keep(
        self,
        stop: CancellationToken,
        target: String,
        health: HealthReporter,
        registered: Instant,
    ) -> Result<()> {
        let id = self.registration.id.clone();
        let client = self.client.clone();
        let arm = |hash: Option<String>, delay: Duration| {
            Self::guard(client.clone(), id.clone(), hash, delay)
        };
        // Re-query pace when the agent answers at once without blocking.
        let pace = self.heartbeat.min(Duration::from_secs(1));
        let mut tick = tokio::time::interval_at(Instant::now() + self.heartbeat, self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut guard = Box::pin(arm(None, Duration::ZERO));
        let mut hash: Option<String> = None;
        // Heartbeats refused (the service stays registered but turns critical): logged
        // once per episode, retried every heartbeat.
        let mut refused: Option<FailureEpisode> = None;
        // The earliest the agent may have last restarted the check's TTL timer.
        let mut reset_at = registered;
        loop {
            let trouble = tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => match self.pass_since(&mut reset_at).await {
                    Ok(lapsed) => {
                        if lapsed {
                            tick.reset_after(self.follow_up());
                        }
                        if let Some(episode) = refused.take() {
                            tracing::info!(%id, after = ?episode.elapsed(), "consul heartbeat accepted again");
                            health.live();
                        }
                        None
                    }
                    Err(e) => Some(e),
                },
                outcome = &mut guard => match outcome {
                    Guard::Present(h) => {
                        let delay = if hash.as_deref() == Some(h.as_str()) || h.is_empty() {
                            pace
                        } else {
                            Duration::ZERO
                        };
                        hash = Some(h);
                        guard.set(arm(hash.clone(), delay));
                        None
                    }
                    Guard::Missing => Some(ConsulError::Status {
                        addr: self.client.config().addr().to_string(),
                        what: format!("reading service `{id}`"),
                        code: 404,
                        message: "the agent does not know the service".into(),
                    }),
                    Guard::Failed(e) if e.is_unreachable() => Some(e),
                    Guard::Failed(e) => {
                        tracing::debug!(%id, error = %e, "cannot watch our own consul service; the heartbeat still runs");
                        guard.set(arm(None, pace));
                        None
                    }
                },
            };
            let Some(trouble) = trouble else { continue };
            if !trouble.is_not_found() && !trouble.is_unreachable() {
                health.retrying(trouble.to_string());
                let cause = cause(&trouble);
                match &mut refused {
                    None => {
                        tracing::warn!(%id, error = %trouble, "consul heartbeat refused; the service's check turns critical; retrying every heartbeat");
                        refused = Some(FailureEpisode::begin(&cause));
                    }
                    Some(episode) => {
                        if episode.failed(&cause) {
                            tracing::warn!(%id, error = %trouble, attempts = episode.attempts(), down_for = ?episode.elapsed(), "consul heartbeat still refused");
                        } else {
                            tracing::debug!(%id, error = %trouble, "consul heartbeat still refused");
                        }
                    }
                }
                continue;
            }
            if trouble.is_not_found() {
                tracing::warn!(%id, error = %trouble, "the consul agent lost our service; registering it again");
            } else {
                tracing::warn!(%id, error = %trouble, "consul agent unreachable; registering again until it answers");
            }
            health.retrying(trouble.to_string());
            if !self
                .recover(&stop, FailureEpisode::begin(&cause(&trouble)), &health)
                .await
            {
                break;
            }
            refused = None;
            hash = None;
            guard.set(arm(None, Duration::ZERO));
            tick.reset_after(self.follow_up());
            reset_at = Instant::now();
        }
        self.deregister().await.map_err(|e| {
            tracing::warn!(%id, error = %e, "deregistering from consul failed");
            let ttl = &self.registration.check.ttl;
            let after = &self.registration.check.deregister_critical_service_after;
            dtmdriver_core::Error::Registry {
                target,
                message: format!(
                    "{e}; the service `{id}` turns critical after its {ttl} TTL and the agent \
                     removes it {after} later"
                ),
            }
        })
    }

    /// Registers again until it works (true) or `stop` (false); logs within `episode`'s
    /// bounds and sets `health`.
    async fn recover(
        &self,
        stop: &CancellationToken,
        mut episode: FailureEpisode,
        health: &HealthReporter,
    ) -> bool {
        let id = &self.registration.id;
        let mut backoff = Backoff::for_engine();
        loop {
            match self.register().await {
                Ok(()) => {
                    tracing::info!(%id, after = ?episode.elapsed(), "registered with consul again");
                    health.live();
                    return true;
                }
                Err(e) => {
                    health.retrying(e.to_string());
                    if episode.failed(&cause(&e)) {
                        tracing::warn!(%id, error = %e, attempts = episode.attempts(), down_for = ?episode.elapsed(), "consul still not taking the registration; retrying");
                    } else {
                        tracing::debug!(%id, error = %e, "consul not taking the registration yet");
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => return false,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }
}

/// Whether a check whose TTL timer was restarted at `reset_at` at the earliest may have
/// run out before the agent took a heartbeat answered at `answered`: then the timer
/// fires about when the heartbeat lands, and may land second.
fn lapsed(reset_at: Instant, answered: Instant, ttl: Duration) -> bool {
    reset_at.checked_add(ttl).is_some_and(|due| answered >= due)
}

/// What kind of failure `e` is, for telling episodes' causes apart (the fix differs).
fn cause(e: &ConsulError) -> String {
    match e {
        ConsulError::Unreachable { .. } | ConsulError::Timeout { .. } => "unreachable".into(),
        ConsulError::Tls { .. } => "tls".into(),
        ConsulError::Refused { token, .. } => format!("token {token}"),
        ConsulError::Status { code, .. } => format!("HTTP {code}"),
        ConsulError::Decode { .. } => "decode".into(),
        ConsulError::TooLarge { .. } => "too large".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// go-zero's format heartbeats every 19 s on a 20 s TTL: a heartbeat that waits
    /// 1.5 s on a stalled agent crosses the TTL although it took under half a period.
    #[test]
    fn a_heartbeat_answered_past_the_ttl_counts_as_lapsed_however_short_its_wait() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let gozero = s(20);
        assert!(!lapsed(t0, t0 + s(19) + ms(300), gozero));
        assert!(lapsed(t0, t0 + s(19) + ms(1500), gozero));
        let native = s(10);
        assert!(!lapsed(t0, t0 + ms(3333) + ms(900), native));
        assert!(lapsed(t0, t0 + s(10), native));
    }

    #[test]
    fn the_ttl_is_read_back_from_the_registration() {
        let client = ConsulClient::new(crate::ConsulConfig::new("127.0.0.1:1"));
        let registration = |ttl: &str| AgentServiceRegistration {
            id: "i".into(),
            name: "n".into(),
            tags: vec![],
            address: "127.0.0.1".into(),
            port: 1,
            meta: Default::default(),
            weights: None,
            check: crate::AgentServiceCheck {
                ttl: ttl.into(),
                ..crate::AgentServiceCheck::passing_ttl("c".into(), Duration::ZERO, Duration::ZERO)
            },
        };
        let hb = Duration::from_secs(19);
        let keeper = ServiceKeeper::new(client.clone(), registration("20s"), hb);
        assert_eq!(keeper.ttl, Duration::from_secs(20));
        let keeper = ServiceKeeper::new(client.clone(), registration("1500ms"), hb);
        assert_eq!(keeper.ttl, Duration::from_millis(1500));
        // Consul's compound syntax is beyond ours: three heartbeats.
        let keeper = ServiceKeeper::new(client, registration("1m30s"), hb);
        assert_eq!(keeper.ttl, hb * 3);
    }
}
