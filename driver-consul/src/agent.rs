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
//! * on stop deregisters (`PUT /v1/agent/service/deregister/<id>`).
//!
//! No failure is silent: the first of an episode (agent unreachable, service lost,
//! heartbeat refused) is logged at WARN with the agent's answer, again only when the
//! cause changes or a minute passed, and the handle's
//! [`health`](Registration::health) is
//! [`Retrying`](driver_core::RegistrationState::Retrying) until the service is
//! registered and its heartbeat accepted again.
//!
//! If the process dies without deregistering, the check goes critical after its TTL
//! and the agent removes the service after `DeregisterCriticalServiceAfter`.

use std::collections::BTreeMap;
use std::time::Duration;

use driver_core::health::{FailureEpisode, HealthReporter};
use driver_core::{Error, Registration, Result};
use http::Method;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use driver_core::backoff::Backoff;

use crate::client::{ConsulClient, ConsulError, escape};

/// The body of `PUT /v1/agent/service/register` (the fields we use).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentServiceRegistration {
    /// The instance id, unique on the agent.
    #[serde(rename = "ID")]
    pub id: String,
    /// The service name clients resolve.
    pub name: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The host clients dial.
    pub address: String,
    /// The port clients dial.
    pub port: u16,
    /// Free-form metadata.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// consul's own weights (used by DNS), if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<Weights>,
    /// The TTL check kept passing by the heartbeat.
    pub check: AgentServiceCheck,
}

/// consul's service weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    /// Weight while all checks pass.
    pub passing: u32,
    /// Weight while a check warns.
    pub warning: u32,
}

/// A TTL check embedded in a service registration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentServiceCheck {
    /// The check id (heartbeats address it).
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// The TTL, in consul's duration syntax (`20s`).
    #[serde(rename = "TTL")]
    pub ttl: String,
    /// The initial status (`passing`).
    #[serde(rename = "Status")]
    pub status: String,
    /// How long the check may stay critical before the agent removes the service.
    #[serde(rename = "DeregisterCriticalServiceAfter")]
    pub deregister_critical_service_after: String,
}

/// One of a service's addresses by tag (`TaggedAddresses`): kratos keys its endpoints
/// by URL scheme there (`"grpc": {"Address": "grpc://10.0.0.5:9000", "Port": 9000}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceAddress {
    /// The address as the registrant wrote it (a host, or a whole URL for kratos).
    #[serde(default)]
    pub address: String,
    /// The port.
    #[serde(default)]
    pub port: u16,
}

/// A TCP check the agent runs itself, registered beside the TTL check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentTcpCheck {
    /// `host:port` the agent connects to.
    #[serde(rename = "TCP")]
    pub tcp: String,
    /// How often (`10s`).
    #[serde(rename = "Interval")]
    pub interval: String,
    /// How long one attempt may take (`5s`).
    #[serde(rename = "Timeout")]
    pub timeout: String,
    /// The status until the first run; consul waits a random part of the interval
    /// before that run, so `passing` keeps a fresh instance visible meanwhile.
    #[serde(rename = "Status", skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// How long the check may stay critical before the agent removes the service.
    #[serde(rename = "DeregisterCriticalServiceAfter")]
    pub deregister_critical_service_after: String,
}

/// A gRPC health check the agent runs itself (`grpc.health.v1.Health/Check`, served
/// e.g. by `tonic-health`), registered beside the TTL check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentGrpcCheck {
    /// `host:port` the agent calls, or `host:port/SERVICE` to ask about one service
    /// (without it the server's overall health, service `""`, is asked).
    #[serde(rename = "GRPC")]
    pub grpc: String,
    /// Whether the agent dials with TLS.
    #[serde(rename = "GRPCUseTLS")]
    pub grpc_use_tls: bool,
    /// How often (`10s`).
    #[serde(rename = "Interval")]
    pub interval: String,
    /// How long one call may take; empty for consul's default (10 s).
    #[serde(rename = "Timeout", skip_serializing_if = "String::is_empty")]
    pub timeout: String,
    /// The status until the first run (see [`AgentTcpCheck::status`]).
    #[serde(rename = "Status", skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// How long the check may stay critical before the agent removes the service.
    #[serde(rename = "DeregisterCriticalServiceAfter")]
    pub deregister_critical_service_after: String,
}

/// Parts of a registration some formats add to [`AgentServiceRegistration`]: tagged
/// addresses and agent-run TCP checks (kratos registers both), gRPC health checks (the
/// native format's `?check=grpc`), a name for the TTL check (go-zero's). Empty parts are
/// left out of the request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceExtras {
    /// `TaggedAddresses`, by tag.
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    /// `Checks`: TCP checks run by the agent in addition to the TTL check.
    pub checks: Vec<AgentTcpCheck>,
    /// `Checks`: gRPC health checks run by the agent in addition to the TTL check.
    pub grpc_checks: Vec<AgentGrpcCheck>,
    /// The TTL check's `Name`; empty keeps consul's default (`Service 'NAME' check`).
    pub check_name: String,
}

/// One entry of `Checks`.
#[derive(Serialize)]
#[serde(untagged)]
enum AgentCheck<'a> {
    Tcp(&'a AgentTcpCheck),
    Grpc(&'a AgentGrpcCheck),
}

/// The top-level fields the extras add: `TaggedAddresses` and `Checks`, each left out
/// when empty (the TTL check's name goes inside `Check`, see
/// [`ServiceExtras::register_body`]).
impl Serialize for ServiceExtras {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let checks: Vec<AgentCheck<'_>> = self
            .checks
            .iter()
            .map(AgentCheck::Tcp)
            .chain(self.grpc_checks.iter().map(AgentCheck::Grpc))
            .collect();
        let mut map = serializer.serialize_map(None)?;
        if !self.tagged_addresses.is_empty() {
            map.serialize_entry("TaggedAddresses", &self.tagged_addresses)?;
        }
        if !checks.is_empty() {
            map.serialize_entry("Checks", &checks)?;
        }
        map.end()
    }
}

impl ServiceExtras {
    /// The body of `PUT /v1/agent/service/register`: `registration` plus these extras.
    ///
    /// ```
    /// use driver_consul::{AgentServiceRegistration, ServiceExtras};
    /// let registration = AgentServiceRegistration { id: "i".into(), name: "n".into(), ..Default::default() };
    /// let extras = ServiceExtras { check_name: "n".into(), ..Default::default() };
    /// let body = extras.register_body(&registration).unwrap();
    /// assert_eq!(body["Check"]["Name"], "n");
    /// assert!(body.get("Checks").is_none() && body.get("TaggedAddresses").is_none());
    /// ```
    pub fn register_body(
        &self,
        registration: &AgentServiceRegistration,
    ) -> serde_json::Result<serde_json::Value> {
        let mut body = serde_json::to_value(registration)?;
        if let (Some(fields), serde_json::Value::Object(extra)) =
            (body.as_object_mut(), serde_json::to_value(self)?)
        {
            fields.extend(extra);
            if !self.check_name.is_empty()
                && let Some(serde_json::Value::Object(check)) = fields.get_mut("Check")
            {
                check.insert("Name".into(), self.check_name.clone().into());
            }
        }
        Ok(body)
    }
}

/// consul's rule for service `Meta` (its `validateMetadata`): at most 64 pairs, keys of
/// letters, digits, `_` and `-`, at most 128 characters and not starting `consul-`
/// (reserved), values of at most 512 characters. The agent refuses anything else with
/// HTTP 400; checking first lets the error name the key and what to write. Every
/// registration [`ServiceKeeper::start`] makes is checked, whatever its format.
///
/// ```
/// use driver_consul::check_meta;
/// assert!(check_meta(&[("zone".to_string(), "a".to_string())].into()).is_ok());
/// assert!(check_meta(&[("a.b".to_string(), "1".to_string())].into()).unwrap_err().contains("`a.b`"));
/// ```
pub fn check_meta(meta: &BTreeMap<String, String>) -> std::result::Result<(), String> {
    if meta.len() > 64 {
        return Err(format!(
            "{} metadata entries; consul takes at most 64",
            meta.len()
        ));
    }
    for (key, value) in meta {
        let why = if key.is_empty()
            || !key
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        {
            "consul takes letters, digits, _ and - only"
        } else if key.len() > 128 {
            "consul takes at most 128 characters"
        } else if key.starts_with("consul-") {
            "the prefix consul- is reserved for consul itself"
        } else if value.len() > 512 {
            "its value is longer than the 512 characters consul takes"
        } else {
            continue;
        };
        let shown: String = key.chars().take(64).collect();
        return Err(format!("metadata key `{shown}`: {why}"));
    }
    Ok(())
}

/// Formats a duration the way consul parses it (`20s`, `1500ms`).
pub fn consul_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// How long the guard's blocking query on our own service waits.
const GUARD_WAIT: Duration = Duration::from_secs(60);

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
/// # async fn f(registration: driver_consul::AgentServiceRegistration) -> driver_core::Result<()> {
/// use std::time::Duration;
/// use driver_consul::{ConsulClient, ConsulConfig, ServiceKeeper};
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
}

impl ServiceKeeper {
    /// A keeper of `registration` through `client` that marks its TTL check passing
    /// every `heartbeat` (keep it below the check's TTL).
    pub fn new(
        client: ConsulClient,
        registration: AgentServiceRegistration,
        heartbeat: Duration,
    ) -> Self {
        Self {
            client,
            registration,
            extras: ServiceExtras::default(),
            heartbeat: heartbeat.max(Duration::from_millis(100)),
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
        check_meta(&self.registration.meta).map_err(|reason| Error::BadTarget {
            target: target.to_string(),
            reason,
        })?;
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
            move |stop, health| self.keep(stop, target_name, health),
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
        loop {
            let trouble = tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => match self.pass().await {
                    Ok(()) => {
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
            tick.reset();
        }
        self.deregister().await.map_err(|e| {
            tracing::warn!(%id, error = %e, "deregistering from consul failed");
            let ttl = &self.registration.check.ttl;
            let after = &self.registration.check.deregister_critical_service_after;
            driver_core::Error::Registry {
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

/// What kind of failure `e` is, for telling episodes' causes apart (the fix differs).
fn cause(e: &ConsulError) -> String {
    match e {
        ConsulError::Unreachable { .. } | ConsulError::Timeout { .. } => "unreachable".into(),
        ConsulError::Tls { .. } => "tls".into(),
        ConsulError::Refused { token, .. } => format!("token {token}"),
        ConsulError::Status { code, .. } => format!("HTTP {code}"),
        ConsulError::Decode { .. } => "decode".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_consul_syntax() {
        assert_eq!(consul_duration(Duration::from_secs(20)), "20s");
        assert_eq!(consul_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn extras_join_the_registration_body_when_set() {
        let registration = AgentServiceRegistration {
            id: "i".into(),
            name: "n".into(),
            ..Default::default()
        };
        let plain = ServiceExtras::default()
            .register_body(&registration)
            .unwrap();
        assert_eq!(plain, serde_json::to_value(&registration).unwrap());
        let extras = ServiceExtras {
            tagged_addresses: [(
                "grpc".to_string(),
                ServiceAddress {
                    address: "grpc://h:1".into(),
                    port: 1,
                },
            )]
            .into(),
            checks: vec![AgentTcpCheck {
                tcp: "h:1".into(),
                interval: "10s".into(),
                timeout: "5s".into(),
                status: String::new(),
                deregister_critical_service_after: "600s".into(),
            }],
            grpc_checks: vec![AgentGrpcCheck {
                grpc: "h:1".into(),
                grpc_use_tls: false,
                interval: "1s".into(),
                timeout: String::new(),
                status: "passing".into(),
                deregister_critical_service_after: "60s".into(),
            }],
            check_name: "n".into(),
        };
        let v = extras.register_body(&registration).unwrap();
        assert_eq!(v["ID"], "i");
        assert_eq!(v["Check"]["Name"], "n");
        assert_eq!(
            v["TaggedAddresses"],
            serde_json::json!({"grpc": {"Address": "grpc://h:1", "Port": 1}})
        );
        assert_eq!(
            v["Checks"],
            serde_json::json!([{"TCP": "h:1", "Interval": "10s", "Timeout": "5s",
                "DeregisterCriticalServiceAfter": "600s"},
                {"GRPC": "h:1", "GRPCUseTLS": false, "Interval": "1s", "Status": "passing",
                "DeregisterCriticalServiceAfter": "60s"}])
        );
    }

    #[test]
    fn registration_json_has_consul_field_names() {
        let r = AgentServiceRegistration {
            id: "k-h-1".into(),
            name: "k".into(),
            tags: vec!["tag".into()],
            address: "h".into(),
            port: 1,
            meta: BTreeMap::new(),
            weights: None,
            check: AgentServiceCheck {
                check_id: "k-h-1".into(),
                ttl: "20s".into(),
                status: "passing".into(),
                deregister_critical_service_after: "60s".into(),
            },
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ID": "k-h-1", "Name": "k", "Tags": ["tag"], "Address": "h",
                "Port": 1, "Meta": {}, "Check": {"CheckID": "k-h-1", "TTL": "20s",
                "Status": "passing", "DeregisterCriticalServiceAfter": "60s"}})
        );
    }
}
