//! go-zero's consul format (zero-contrib `zrpc/registry/consul`, as dtm's go-zero driver
//! registers) on the consul engine of `dtmdriver-consul`: [`GoZeroConsulFormat`].
//!
//! Registering `consul://[user:pw@]host:8500/KEY[?token=T]` at `HOST:PORT` keeps service
//! `KEY-HOST-PORT` with a 20 s TTL check passing every 19 s and deregisters it on stop
//! (refusing registration options: zero-contrib's layout stores none);
//! resolving runs blocking health queries (`?wait=&tag=&healthy=&dc=&near=&limit=`,
//! `healthy` false by default as in go-zero). The field-by-field layout and the
//! differences from zero-contrib: `docs/gozero.md`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dtmdriver_consul::{
    AgentServiceCheck, AgentServiceRegistration, ConsulTarget, HealthQuery, ServiceEntry,
    ServiceExtras, ServiceKeeper, resolve_health,
};
use dtmdriver_core::address::HostPort;
use dtmdriver_core::registration_options::RegistrationOptions;
use dtmdriver_core::resolve::{Endpoint, Registrar, Resolver, SnapshotSender};
use dtmdriver_core::{Registration, Result, Target};

use crate::routable_endpoint;

/// go-zero's consul layout; see the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct GoZeroConsulFormat;

impl GoZeroConsulFormat {
    /// The TTL of the check.
    pub const TTL: Duration = Duration::from_secs(20);

    /// The heartbeat period: TTL − 1 s.
    pub const HEARTBEAT: Duration = Duration::from_secs(19);

    /// The tags dtm's go-zero driver registers.
    pub const TAGS: [&'static str; 2] = ["tag", "rpc"];

    /// The service id of `key` at `host:port`.
    pub fn id(key: &str, host: &str, port: u16) -> String {
        format!("{key}-{host}-{port}")
    }

    /// The registration of `key` at `endpoint` (`host:port`).
    ///
    /// ```
    /// use dtmdriver_gozero::GoZeroConsulFormat;
    /// let r = GoZeroConsulFormat::registration("dtmservice", "localhost:36790").unwrap();
    /// assert_eq!(r.id, "dtmservice-localhost-36790");
    /// assert_eq!(r.check.check_id, r.id);
    /// assert_eq!((r.check.ttl.as_str(), r.check.deregister_critical_service_after.as_str()), ("20s", "60s"));
    /// ```
    pub fn registration(key: &str, endpoint: &str) -> Result<AgentServiceRegistration> {
        let address = HostPort::parse_endpoint(endpoint)?;
        let (host, port) = (address.host().to_string(), address.port());
        let id = Self::id(key, &host, port);
        Ok(AgentServiceRegistration {
            id: id.clone(),
            name: key.to_string(),
            tags: Self::TAGS.map(String::from).into(),
            address: host,
            port,
            meta: [("Protocol".to_string(), "grpc".to_string())].into(),
            weights: None,
            check: AgentServiceCheck::passing_ttl(id, Self::TTL, Self::TTL * 3),
        })
    }

    /// What goes with [`registration`](Self::registration) for `key`: the TTL check is
    /// named after the key, as zero-contrib names it.
    pub fn extras(key: &str) -> ServiceExtras {
        ServiceExtras {
            check_name: key.to_string(),
            ..ServiceExtras::default()
        }
    }

    /// The health query and the endpoint limit a resolver target asks for: the agent,
    /// service, `?dc=`, `?tag=`, `?near=`, `?wait=` of [`HealthQuery::from_target`], plus
    /// zero-contrib's `?healthy=` (passing instances only) and `?limit=` (0: none). The
    /// error names the parameter. Public so that the fuzz targets reach the resolver's
    /// parsing without an agent.
    ///
    /// ```
    /// use dtmdriver_gozero::GoZeroConsulFormat;
    /// let t = dtmdriver_core::Target::parse("consul://h:8500/svc?healthy=true&limit=2").unwrap();
    /// let (query, limit) = GoZeroConsulFormat::query(&t).unwrap();
    /// assert!(query.passing_only);
    /// assert_eq!(limit, Some(2));
    /// ```
    pub fn query(target: &Target) -> Result<(HealthQuery, Option<usize>)> {
        let mut query = HealthQuery::from_target(target)?;
        query.passing_only = target.query_flag("healthy")?;
        let limit = match target.query("limit") {
            None | Some("" | "0") => None,
            Some(_) => target.query_count("limit", "")?,
        };
        Ok((query, limit))
    }

    /// The endpoints of a health answer: one per instance with a usable address
    /// ([`ServiceEntry::dialable_addr`]), at most `limit`
    /// of them when given.
    pub fn decode(entries: &[ServiceEntry], limit: Option<usize>) -> Vec<Endpoint> {
        entries
            .iter()
            .filter_map(|e| e.dialable_addr().map(Endpoint::new))
            .take(limit.unwrap_or(usize::MAX))
            .collect()
    }
}

/// Resolves go-zero consul targets.
#[derive(Clone, Copy, Debug, Default)]
pub struct GoZeroConsulResolver;

impl Resolver for GoZeroConsulResolver {
    fn resolve(&self, target: &Target, updates: SnapshotSender) -> Result<()> {
        let (query, limit) = GoZeroConsulFormat::query(target)?;
        let decode =
            Arc::new(move |entries: &[ServiceEntry]| GoZeroConsulFormat::decode(entries, limit));
        resolve_health(&query, decode, updates);
        Ok(())
    }
}

/// Registers instances the way a go-zero zrpc server with zero-contrib's consul
/// registry does.
#[derive(Clone, Copy, Debug, Default)]
pub struct GoZeroConsulRegistrar;

#[async_trait]
impl Registrar for GoZeroConsulRegistrar {
    async fn register(&self, target: &Target, endpoint: &str) -> Result<Registration> {
        let t = ConsulTarget::from_target(target)?;
        let format = "zero-contrib's consul registration (fixed tags, a 20 s TTL check)";
        RegistrationOptions::carried_by(target, &[], format)?;
        let published = routable_endpoint(endpoint)?;
        let registration = GoZeroConsulFormat::registration(&t.service, &published)?;
        ServiceKeeper::new(t.config, registration, GoZeroConsulFormat::HEARTBEAT)
            .extras(GoZeroConsulFormat::extras(&t.service))
            .start(target.as_str(), &published)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_matches_zero_contrib() {
        let r = GoZeroConsulFormat::registration("trans.rpc", "127.0.0.1:9000").unwrap();
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({
                "ID": "trans.rpc-127.0.0.1-9000", "Name": "trans.rpc", "Tags": ["tag", "rpc"],
                "Address": "127.0.0.1", "Port": 9000, "Meta": {"Protocol": "grpc"},
                "Check": {"CheckID": "trans.rpc-127.0.0.1-9000", "TTL": "20s",
                          "Status": "passing", "DeregisterCriticalServiceAfter": "60s"}
            })
        );
        assert_eq!(
            GoZeroConsulFormat::HEARTBEAT,
            GoZeroConsulFormat::TTL - Duration::from_secs(1)
        );
    }

    #[test]
    fn decode_limits_and_skips_instances_without_a_usable_address() {
        let entry = |addr: &str, port| {
            let mut e = ServiceEntry::default();
            e.service.address = addr.into();
            e.service.port = port;
            e
        };
        // Issue #11 item 6: Address/Port pairs that are no address are skipped too.
        let entries = [
            entry("a", 1),
            entry("", 2),
            entry("not an address", 7103),
            entry("http://127.0.0.1", 7104),
            entry("b", 3),
            entry("c", 0),
            entry("c", 4),
        ];
        let addrs = |limit| {
            GoZeroConsulFormat::decode(&entries, limit)
                .into_iter()
                .map(|e| e.addr)
                .collect::<Vec<_>>()
        };
        assert_eq!(addrs(None), ["a:1", "b:3", "c:4"]);
        assert_eq!(addrs(Some(2)), ["a:1", "b:3"]);
    }
}
