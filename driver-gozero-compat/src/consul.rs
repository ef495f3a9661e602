//! go-zero's consul format (zero-contrib `zrpc/registry/consul`, as dtm's go-zero driver
//! registers) on the consul engine of `dtmdriver-consul`: [`GoZeroConsulFormat`].
//!
//! # Registration
//!
//! `consul://[user:pw@]host:8500/KEY[?token=T]` with endpoint `HOST:PORT` registers
//!
//! | field | value |
//! |---|---|
//! | `ID` | `KEY-HOST-PORT`, e.g. `dtmservice-localhost-36790` |
//! | `Name` / `Address` / `Port` | `KEY` / `HOST` / `PORT` |
//! | `Tags` / `Meta` | `["tag","rpc"]` / `{"Protocol":"grpc"}` |
//! | check | TTL check, `CheckID` = the service ID, `Name` = `KEY`, TTL `20s`, status `passing`, `DeregisterCriticalServiceAfter` `60s` (3×TTL) |
//!
//! kept passing every 19 s (TTL − 1 s) and deregistered on stop. zero-contrib registers
//! the check a second time through `/v1/agent/check/register` (which is how it gets its
//! `Name`); we send the same fields in the one service registration, so the agent holds
//! the same service and check (its `Interval`/`Timeout` read `0s` there and empty here:
//! both mean none). A wildcard listen
//! address (`0.0.0.0:PORT`) is published as a routable one, as go-zero does
//! ([`routable_endpoint`]).
//!
//! # Resolution
//!
//! `consul://[user:pw@]host:8500/KEY?wait=14s&tag=&healthy=&token=&dc=&near=&limit=`:
//! blocking health queries; the address is `Service.Address`, else `Node.Address`, plus
//! the port. As in go-zero, `healthy` defaults to `false`: instances whose check is
//! critical are returned too unless `?healthy=true`. `limit` keeps at most that many
//! instances. The token falls back to `CONSUL_HTTP_TOKEN`.
//!
//! zero-contrib's resolver as built with go-zero v1.10.3 rejects `?healthy=true`
//! ("type mismatch for field healthy": go-zero's mapping no longer turns the query's
//! strings into booleans), so a Go client can only resolve with `healthy` unset, i.e.
//! critical instances included; ours accepts it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dtmdriver_consul::{
    AgentServiceCheck, AgentServiceRegistration, ConsulClient, ConsulTarget, HealthQuery,
    ServiceEntry, ServiceExtras, ServiceKeeper, consul_duration, resolve_health,
};
use dtmdriver_core::address::HostPort;
use dtmdriver_core::resolve::{Endpoint, Registrar, Resolver, SnapshotSender};
use dtmdriver_core::{Error, Registration, Result, Target};

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
            check: AgentServiceCheck {
                check_id: id,
                ttl: consul_duration(Self::TTL),
                status: "passing".into(),
                deregister_critical_service_after: consul_duration(Self::TTL * 3),
            },
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
            Some(l) => Some(l.parse::<usize>().map_err(|_| {
                Error::bad_target(target, format!("limit `{l}` is not a whole number"))
            })?),
        };
        Ok((query, limit))
    }

    /// The endpoints of a health answer: one per instance with a usable address
    /// ([`ServiceEntry::addr`]; the others are skipped with a warning), at most `limit`
    /// of them when given.
    pub fn decode(entries: &[ServiceEntry], limit: Option<usize>) -> Vec<Endpoint> {
        entries
            .iter()
            .filter_map(|e| match e.addr() {
                Ok(addr) => Some(Endpoint::new(addr)),
                Err(why) => {
                    tracing::warn!(id = %e.service.id, %why, "skipping a consul instance that cannot be dialled");
                    None
                }
            })
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
        let published = routable_endpoint(endpoint)?;
        let registration = GoZeroConsulFormat::registration(&t.service, &published)?;
        ServiceKeeper::new(
            ConsulClient::new(t.config),
            registration,
            GoZeroConsulFormat::HEARTBEAT,
        )
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
