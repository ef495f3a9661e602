//! The native `dtm-driver-consul` driver and its format, [`NativeConsulFormat`].
//!
//! # Format (stable)
//!
//! One instance of service `NAME` at `HOST:PORT` is the agent service
//!
//! | field | value |
//! |---|---|
//! | `ID` | `NAME@HOST:PORT` |
//! | `Name` / `Address` / `Port` | `NAME` / `HOST` / `PORT` |
//! | `Tags` | every `?tag=` of the registration target, in order |
//! | `Meta` | `weight` (decimal, default `1`), `group` (when given), and every `?meta.K=V` as `K` |
//! | `Weights` | `{"Passing": weight, "Warning": 1}` (consul's DNS uses them too) |
//! | check | TTL check `CheckID` = `service:NAME@HOST:PORT`, TTL 10 s (`?ttl=SECONDS`), initially passing, heartbeat every TTL/3, `DeregisterCriticalServiceAfter` 1m |
//!
//! On stop the service is deregistered; a process that dies lets its check go critical
//! after the TTL (and resolvers drop it), and the agent removes it a minute later.
//!
//! # Targets
//!
//! * register: `consul://HOST:8500/NAME[?weight=N][&group=G][&tag=T...][&ttl=S][&meta.K=V...][&token=T]`;
//! * resolve: `consul://HOST:8500/NAME[?group=G][&tag=T][&dc=DC][&near=_agent][&wait=55s][&token=T]`:
//!   instances whose checks all pass, only those of group `G` (from `Meta.group`) and
//!   tag `T` when given. The weight (`Meta.weight`, else `Weights.Passing`, else 1) feeds
//!   weighted round robin; `Meta` (with `group`) shows up as endpoint metadata.
//!
//! The token falls back to `CONSUL_HTTP_TOKEN`; see [`client`](crate::client).
//!
//! The scheme `consul` is also used by `dtm-driver-gozero` (go-zero's format): each
//! driver installs its own resolver for the scheme when it is the one in use, and
//! driver values can be used side by side with `Channel::builder(t).driver(&d)`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use driver_core::parse::parse_scheme_url;
use driver_core::resolve::{Endpoint, Registrar, Resolver, SnapshotSender};
use driver_core::{Driver, Error, Registration, Result, ServerMethod, Target};

use crate::agent::{
    AgentServiceCheck, AgentServiceRegistration, ServiceKeeper, Weights, consul_duration,
};
use crate::client::{ConsulClient, ConsulTarget, split_host_port};
use crate::watch::{HealthQuery, ServiceEntry, resolve_health};

/// The driver's name.
pub const NAME: &str = "dtm-driver-consul";

/// The scheme it resolves and registers.
pub const SCHEME: &str = "consul";

/// The native layout; see the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeConsulFormat;

/// What a native registration carries besides the address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NativeOptions {
    /// Relative weight.
    pub weight: u32,
    /// The group, empty for none.
    pub group: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Extra metadata.
    pub meta: BTreeMap<String, String>,
    /// The TTL of the check.
    pub ttl: Duration,
}

impl Default for NativeOptions {
    fn default() -> Self {
        Self {
            weight: 1,
            group: String::new(),
            tags: Vec::new(),
            meta: BTreeMap::new(),
            ttl: NativeConsulFormat::DEFAULT_TTL,
        }
    }
}

impl NativeConsulFormat {
    /// The default check TTL.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

    /// How long a critical instance stays before the agent removes it (consul's minimum).
    pub const DEREGISTER_AFTER: Duration = Duration::from_secs(60);

    /// The service id of `name` at `host:port`.
    pub fn id(name: &str, host: &str, port: u16) -> String {
        if host.contains(':') {
            format!("{name}@[{host}]:{port}")
        } else {
            format!("{name}@{host}:{port}")
        }
    }

    /// The registration of `name` at `endpoint` (`host:port`).
    ///
    /// ```
    /// use driver_consul::{NativeConsulFormat, NativeOptions};
    /// let r = NativeConsulFormat::registration("trans", "10.0.0.5:8080", &NativeOptions::default()).unwrap();
    /// assert_eq!(r.id, "trans@10.0.0.5:8080");
    /// assert_eq!(r.check.check_id, "service:trans@10.0.0.5:8080");
    /// assert_eq!(r.meta["weight"], "1");
    /// ```
    pub fn registration(
        name: &str,
        endpoint: &str,
        options: &NativeOptions,
    ) -> Result<AgentServiceRegistration> {
        let (host, port) = split_host_port(endpoint)?;
        let id = Self::id(name, &host, port);
        let mut meta = options.meta.clone();
        meta.insert("weight".into(), options.weight.max(1).to_string());
        if !options.group.is_empty() {
            meta.insert("group".into(), options.group.clone());
        }
        Ok(AgentServiceRegistration {
            id: id.clone(),
            name: name.to_string(),
            tags: options.tags.clone(),
            address: host,
            port,
            meta,
            weights: Some(Weights {
                passing: options.weight.max(1),
                warning: 1,
            }),
            check: AgentServiceCheck {
                check_id: format!("service:{id}"),
                ttl: consul_duration(options.ttl),
                status: "passing".into(),
                deregister_critical_service_after: consul_duration(Self::DEREGISTER_AFTER),
            },
        })
    }

    /// Reads one instance back; `group` keeps only that group. Instances without an
    /// address are skipped.
    pub fn decode(entry: &ServiceEntry, group: Option<&str>) -> Option<Endpoint> {
        let instance_group = entry.meta("group").unwrap_or_default();
        if group.is_some_and(|g| g != instance_group) {
            return None;
        }
        let Some(addr) = entry.addr() else {
            tracing::warn!(id = %entry.service.id, "skipping a consul instance without address or port");
            return None;
        };
        let weight = entry
            .meta("weight")
            .and_then(|w| w.parse().ok())
            .or(entry.service.weights.map(|w| w.passing))
            .unwrap_or(1);
        let mut endpoint = Endpoint::new(addr).with_weight(weight);
        for (k, v) in entry.service.meta.iter().flatten() {
            if k != "weight" {
                endpoint = endpoint.with_metadata(k.clone(), v.clone());
            }
        }
        Some(endpoint)
    }
}

/// `dtm-driver-consul`: our own consul format with weights, groups, tags and a TTL
/// health check.
///
/// ```
/// use driver_core::Driver;
/// let d = driver_consul::ConsulDriver;
/// assert_eq!(d.name(), "dtm-driver-consul");
/// let sm = d.parse_server_method("consul://127.0.0.1:8500/trans/pb.Trans/TransOut").unwrap();
/// assert_eq!(sm.server, "consul://127.0.0.1:8500/trans");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ConsulDriver;

#[async_trait]
impl Driver for ConsulDriver {
    fn name(&self) -> &str {
        NAME
    }

    fn resolvers(&self) -> Vec<(&'static str, Arc<dyn Resolver>)> {
        vec![(SCHEME, Arc::new(NativeResolver))]
    }

    fn registrars(&self) -> Vec<(&'static str, Arc<dyn Registrar>)> {
        vec![(SCHEME, Arc::new(NativeRegistrar))]
    }

    fn parse_server_method(&self, uri: &str) -> Result<ServerMethod> {
        parse_scheme_url(uri)
    }
}

driver_core::register_driver!(ConsulDriver);

/// Resolves native targets: passing instances only.
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeResolver;

impl Resolver for NativeResolver {
    fn resolve(&self, target: &Target, updates: SnapshotSender) -> Result<()> {
        let mut query = HealthQuery::from_target(target)?;
        query.passing_only = true;
        let group = target.query("group").map(str::to_string);
        let decode = Arc::new(move |entries: &[ServiceEntry]| {
            entries
                .iter()
                .filter_map(|e| NativeConsulFormat::decode(e, group.as_deref()))
                .collect()
        });
        resolve_health(&query, decode, updates);
        Ok(())
    }
}

/// Registers native instances.
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeRegistrar;

#[async_trait]
impl Registrar for NativeRegistrar {
    async fn register(&self, target: &Target, endpoint: &str) -> Result<Registration> {
        let t = ConsulTarget::from_target(target)?;
        let bad = |reason: String| Error::BadTarget {
            target: target.to_string(),
            reason,
        };
        let mut options = NativeOptions::default();
        if let Some(w) = target.query("weight") {
            options.weight = w
                .parse()
                .map_err(|_| bad(format!("weight `{w}` is not a whole number")))?;
        }
        if let Some(s) = target.query("ttl") {
            options.ttl = s
                .parse::<u64>()
                .ok()
                .filter(|s| *s > 0)
                .map(Duration::from_secs)
                .ok_or_else(|| bad(format!("ttl `{s}` is not a positive number of seconds")))?;
        }
        for (k, v) in target.query_pairs() {
            match k.as_str() {
                "group" => options.group = v.clone(),
                "tag" if !v.is_empty() => options.tags.push(v.clone()),
                _ => {
                    if let Some(key) = k.strip_prefix("meta.") {
                        options.meta.insert(key.to_string(), v.clone());
                    }
                }
            }
        }
        let registration = NativeConsulFormat::registration(&t.service, endpoint, &options)?;
        ServiceKeeper::new(ConsulClient::new(t.config), registration, options.ttl / 3)
            .start(target.as_str(), endpoint)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_and_decode_round_trip() {
        let options = NativeOptions {
            weight: 5,
            group: "blue".into(),
            tags: vec!["a".into()],
            meta: [("version".to_string(), "2".to_string())].into(),
            ttl: Duration::from_secs(6),
        };
        let r = NativeConsulFormat::registration("svc", "[::1]:9", &options).unwrap();
        assert_eq!(r.id, "svc@[::1]:9");
        assert_eq!((r.address.as_str(), r.port), ("::1", 9));
        assert_eq!(r.check.ttl, "6s");
        assert_eq!(r.check.deregister_critical_service_after, "60s");
        let mut entry = ServiceEntry::default();
        entry.service.address = r.address.clone();
        entry.service.port = r.port;
        entry.service.meta = Some(r.meta.clone());
        let e = NativeConsulFormat::decode(&entry, Some("blue")).unwrap();
        assert_eq!((e.addr.as_str(), e.weight), ("[::1]:9", 5));
        assert_eq!(e.metadata["group"], "blue");
        assert_eq!(e.metadata["version"], "2");
        assert!(!e.metadata.contains_key("weight"));
        assert!(NativeConsulFormat::decode(&entry, Some("green")).is_none());
        entry.service.meta = None;
        entry.service.weights = Some(Weights {
            passing: 7,
            warning: 1,
        });
        assert_eq!(NativeConsulFormat::decode(&entry, None).unwrap().weight, 7);
        assert!(NativeConsulFormat::registration("svc", "nohost", &options).is_err());
    }
}
