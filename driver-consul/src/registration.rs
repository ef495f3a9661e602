//! The consul JSON a registration sends: the agent service body
//! ([`AgentServiceRegistration`] plus a format's [`ServiceExtras`]), its checks, consul's
//! duration syntax and its rule for service metadata ([`check_meta`]).
//!
//! Contract: field names and shapes are consul's (`PUT /v1/agent/service/register`);
//! parts a format does not use are left out of the request, so the agent keeps its
//! defaults for them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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

impl AgentServiceCheck {
    /// A TTL check `check_id` that starts `passing`, as every format registers it.
    pub fn passing_ttl(
        check_id: String,
        ttl: std::time::Duration,
        deregister_after: std::time::Duration,
    ) -> Self {
        Self {
            check_id,
            ttl: consul_duration(ttl),
            status: "passing".into(),
            deregister_critical_service_after: consul_duration(deregister_after),
        }
    }

    /// [`passing_ttl`](Self::passing_ttl) named `service:<id>`, consul's own id for the
    /// TTL check of service `id` (the one `Check` of a registration gets).
    pub fn service_ttl(
        id: &str,
        ttl: std::time::Duration,
        deregister_after: std::time::Duration,
    ) -> Self {
        Self::passing_ttl(format!("service:{id}"), ttl, deregister_after)
    }
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
    /// use dtmdriver_consul::{AgentServiceRegistration, ServiceExtras};
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
/// registration [`ServiceKeeper::start`](crate::ServiceKeeper::start) makes is checked,
/// whatever its format.
///
/// ```
/// use dtmdriver_consul::check_meta;
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
