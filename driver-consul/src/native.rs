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
//! | `Weights` | `{"Passing": weight (at most 65535, consul's limit), "Warning": 1}` (consul's DNS uses them too) |
//! | check | TTL check `CheckID` = `service:NAME@HOST:PORT`, TTL 10 s (`?ttl=`, 1s to 24h), initially passing, heartbeat every TTL/3, `DeregisterCriticalServiceAfter` 1m |
//! | `Checks` (with `?check=grpc`) | a gRPC health check the agent runs: `GRPC` = `HOST:PORT` (`HOST:PORT/S` with `?grpc_service=S`), `GRPCUseTLS` (`?grpc_tls=true`), `Interval` 10 s (`?interval=1s`), `Timeout` (`?timeout=`, consul's default 10 s), initially passing, `DeregisterCriticalServiceAfter` 1m |
//!
//! On stop the service is deregistered; a process that dies lets its check go critical
//! after the TTL (and resolvers drop it), and the agent removes it a minute later.
//!
//! # gRPC health checks
//!
//! The TTL heartbeat says the process lives; it cannot say the service is able to
//! serve. With `?check=grpc` the agent also calls `grpc.health.v1.Health/Check` on the
//! instance every interval, and resolvers (which keep instances whose checks *all*
//! pass) drop the instance while it answers anything but `SERVING`, or does not answer,
//! and take it back once it serves again: within one interval plus a blocking query's
//! round trip. The service must serve the health protocol on the registered port, e.g.
//! with `tonic-health` (its overall status, service `""`, is the one asked unless
//! `?grpc_service=` names another):
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use dtmdriver_core::Driver as _;
//! use tonic_health::ServingStatus;
//! let (reporter, health) = tonic_health::server::health_reporter();
//! let server = tonic::transport::Server::builder()
//!     .add_service(health) // beside the service itself: .add_service(my_service)
//!     .serve("127.0.0.1:8080".parse()?);
//! tokio::spawn(server);
//! let registration = dtmdriver_consul::ConsulDriver
//!     .register_service(
//!         "consul://127.0.0.1:8500/trans?check=grpc&interval=1s",
//!         "127.0.0.1:8080",
//!     )
//!     .await?;
//! // The instance leaves every resolved set within about a second:
//! reporter.set_service_status("", ServingStatus::NotServing).await;
//! # drop(registration); Ok(()) }
//! ```
//!
//! # Targets
//!
//! * register: `consul://HOST:8500/NAME[?weight=N][&group=G][&tag=T...][&ttl=S][&meta.K=V...][&token=T]`
//!   `[&check=grpc[&interval=D][&timeout=D][&grpc_tls=true][&grpc_service=S]]` (durations as
//!   consul writes them, `1s`, `500ms`, or a bare number of seconds; see
//!   [`dtmdriver_core::registration_options`] for `weight`, `group`, `ttl` and `meta.K`,
//!   read alike by every engine, and
//!   [`CHECK_RANGE`](NativeConsulFormat::CHECK_RANGE) for the check's bounds);
//! * resolve: `consul://HOST:8500/NAME[?group=G][&tag=T][&dc=DC][&near=_agent][&wait=55s][&token=T]`:
//!   instances whose checks all pass, only those of group `G` (from `Meta.group`) and
//!   tag `T` when given. The weight (`Meta.weight`, else `Weights.Passing`, else 1) feeds
//!   weighted round robin; `Meta` (with `group`) shows up as endpoint metadata.
//!
//! Both sides talk HTTPS to the agent with `?tls_ca=FILE` (and `tls_cert`/`tls_key`,
//! `tls_server_name`, `tls=true`), as etcd targets do; `?tls=` is the connection to the
//! agent, `?grpc_tls=` the agent's gRPC check. The token falls back to
//! `CONSUL_HTTP_TOKEN`; see [`target`](crate::target#https).
//!
//! The scheme `consul` is also used by `dtm-driver-gozero` (go-zero's format): each
//! driver installs its own resolver for the scheme when it is the one in use, and
//! driver values can be used side by side with `Channel::builder(t).driver(&d)`.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dtmdriver_core::address::HostPort;
use dtmdriver_core::parse::parse_scheme_url;
use dtmdriver_core::registration_options::RegistrationOptions;
use dtmdriver_core::resolve::{Endpoint, Registrar, Resolver, SnapshotSender};
use dtmdriver_core::{Driver, Error, Registration, Result, ServerMethod, Target};

use crate::agent::ServiceKeeper;
use crate::registration::{
    AgentGrpcCheck, AgentServiceCheck, AgentServiceRegistration, ServiceExtras, Weights,
    consul_duration,
};
use crate::target::ConsulTarget;
use crate::watch::{HealthQuery, ServiceEntry, resolve_each};

/// The driver's name.
pub const NAME: &str = "dtm-driver-consul";

/// The scheme it resolves and registers.
pub const SCHEME: &str = "consul";

/// The native layout; see the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeConsulFormat;

/// What a native registration carries besides the address: the options every engine
/// reads alike, and consul's own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NativeOptions {
    /// `weight`, `group`, `ttl` and `meta.K`, as on every engine.
    pub common: RegistrationOptions,
    /// Tags (`?tag=`, repeated).
    pub tags: Vec<String>,
    /// A gRPC health check the agent runs beside the TTL check, if any.
    pub grpc_check: Option<GrpcCheckOptions>,
}

impl NativeOptions {
    /// The options a registration target asks for: those of every engine
    /// ([`RegistrationOptions`]), `?tag=` (repeated) and the gRPC check
    /// (`?check=grpc&interval=…`). The error names the parameter and the fix. Public so
    /// that the fuzz targets reach the registrar's parsing without an agent.
    ///
    /// ```
    /// use dtmdriver_consul::NativeOptions;
    /// let t = dtmdriver_core::Target::parse("consul://h/svc?weight=3&tag=a&meta.zone=x").unwrap();
    /// let o = NativeOptions::from_target(&t).unwrap();
    /// assert_eq!((o.common.weight, o.tags.as_slice()), (3, ["a".to_string()].as_slice()));
    /// ```
    pub fn from_target(target: &Target) -> Result<Self> {
        let tags = target
            .query_pairs()
            .iter()
            .filter(|(k, v)| k == "tag" && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect();
        Ok(Self {
            common: RegistrationOptions::from_target(target)?,
            tags,
            grpc_check: grpc_check_options(target)?,
        })
    }
}

/// The agent-run gRPC health check of `?check=grpc`; see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcCheckOptions {
    /// How often the agent calls the instance.
    pub interval: Duration,
    /// How long one call may take; `None` for consul's default (10 s).
    pub timeout: Option<Duration>,
    /// Whether the agent dials with TLS (`?grpc_tls=true`).
    pub tls: bool,
    /// The service asked about; empty for the server's overall health.
    pub service: String,
}

impl Default for GrpcCheckOptions {
    fn default() -> Self {
        Self {
            interval: NativeConsulFormat::DEFAULT_CHECK_INTERVAL,
            timeout: None,
            tls: false,
            service: String::new(),
        }
    }
}

impl NativeConsulFormat {
    /// How long a critical instance stays before the agent removes it (consul's minimum).
    pub const DEREGISTER_AFTER: Duration = Duration::from_secs(60);

    /// The default interval of a gRPC health check.
    pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(10);

    /// The intervals and timeouts `?interval=` and `?timeout=` of the gRPC check may ask
    /// for: 1 ms to a day (the agent runs a check at most once a second).
    pub const CHECK_RANGE: RangeInclusive<Duration> =
        Duration::from_millis(1)..=Duration::from_secs(24 * 3600);

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
    /// use dtmdriver_consul::{NativeConsulFormat, NativeOptions};
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
        let address = HostPort::parse_endpoint(endpoint)?;
        let (host, port) = (address.host().to_string(), address.port());
        let id = Self::id(name, &host, port);
        let common = &options.common;
        let mut meta = common.meta.clone();
        meta.insert("weight".into(), common.effective_weight().to_string());
        if !common.group.is_empty() {
            meta.insert("group".into(), common.group.clone());
        }
        Ok(AgentServiceRegistration {
            id: id.clone(),
            name: name.to_string(),
            tags: options.tags.clone(),
            address: host,
            port,
            meta,
            // consul's DNS takes weights up to 65535; ours read `Meta.weight`.
            weights: Some(Weights {
                passing: common.effective_weight().min(65535),
                warning: 1,
            }),
            check: AgentServiceCheck::service_ttl(&id, common.ttl(), Self::DEREGISTER_AFTER),
        })
    }

    /// The agent-run checks of `options` for the instance at `endpoint` (`host:port`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use dtmdriver_consul::{GrpcCheckOptions, NativeConsulFormat, NativeOptions};
    /// let options = NativeOptions {
    ///     grpc_check: Some(GrpcCheckOptions { interval: Duration::from_secs(1), ..Default::default() }),
    ///     ..Default::default()
    /// };
    /// let extras = NativeConsulFormat::extras("10.0.0.5:8080", &options).unwrap();
    /// assert_eq!(extras.grpc_checks[0].grpc, "10.0.0.5:8080");
    /// assert_eq!(extras.grpc_checks[0].interval, "1s");
    /// ```
    pub fn extras(endpoint: &str, options: &NativeOptions) -> Result<ServiceExtras> {
        let mut extras = ServiceExtras::default();
        if let Some(check) = &options.grpc_check {
            let mut grpc = HostPort::parse_endpoint(endpoint)?.to_string();
            if !check.service.is_empty() {
                grpc.push('/');
                grpc.push_str(&check.service);
            }
            extras.grpc_checks.push(AgentGrpcCheck {
                grpc,
                grpc_use_tls: check.tls,
                interval: consul_duration(check.interval),
                timeout: check.timeout.map(consul_duration).unwrap_or_default(),
                status: "passing".into(),
                deregister_critical_service_after: consul_duration(Self::DEREGISTER_AFTER),
            });
        }
        Ok(extras)
    }

    /// Reads one instance back; `group` keeps only that group. Instances without an
    /// address are skipped.
    pub fn decode(entry: &ServiceEntry, group: Option<&str>) -> Option<Endpoint> {
        let instance_group = entry.meta("group").unwrap_or_default();
        if group.is_some_and(|g| g != instance_group) {
            return None;
        }
        let addr = entry.dialable_addr()?;
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
/// use dtmdriver_core::Driver;
/// let d = dtmdriver_consul::ConsulDriver;
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

dtmdriver_core::register_driver!(ConsulDriver);

/// Resolves native targets: passing instances only.
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeResolver;

impl Resolver for NativeResolver {
    fn resolve(&self, target: &Target, updates: SnapshotSender) -> Result<()> {
        let mut query = HealthQuery::from_target(target)?;
        query.passing_only = true;
        let group = target.query("group").map(str::to_string);
        let decode = move |e: &ServiceEntry| NativeConsulFormat::decode(e, group.as_deref());
        resolve_each(&query, decode, updates);
        Ok(())
    }
}

/// Registers native instances.
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeRegistrar;

#[async_trait]
impl Registrar for NativeRegistrar {
    async fn register(&self, target: &Target, endpoint: &str) -> Result<Registration> {
        let t = ConsulTarget::from_target(target).map_err(|e| grpc_tls_hint(target, e))?;
        let options = NativeOptions::from_target(target)?;
        let registration = NativeConsulFormat::registration(&t.service, endpoint, &options)?;
        let extras = NativeConsulFormat::extras(endpoint, &options)?;
        ServiceKeeper::new(t.config, registration, options.common.ttl() / 3)
            .extras(extras)
            .start(target.as_str(), endpoint)
            .await
    }
}

/// `?tls=` once configured the gRPC check; a target that still writes it that way is
/// told about `?grpc_tls=`.
fn grpc_tls_hint(target: &Target, e: Error) -> Error {
    match e {
        Error::BadTarget { target: t, reason }
            if target.query("check") == Some("grpc") && target.query("tls").is_some() =>
        {
            Error::BadTarget {
                target: t,
                reason: format!(
                    "{reason}; `tls` is HTTPS to the consul agent: for a gRPC health check over \
                     TLS write grpc_tls=true"
                ),
            }
        }
        other => other,
    }
}

/// The gRPC check a registration target asks for (`?check=grpc&interval=&timeout=&grpc_tls=&grpc_service=`).
fn grpc_check_options(target: &Target) -> Result<Option<GrpcCheckOptions>> {
    let duration = |key: &str| target.query_duration(key, &NativeConsulFormat::CHECK_RANGE);
    let grpc = match target.query("check") {
        None | Some("" | "ttl") => false,
        Some("grpc") => true,
        Some(other) => {
            return Err(Error::bad_target(
                target,
                format!(
                    "check `{other}` is not `grpc` (a gRPC health check beside the TTL heartbeat) or `ttl` (the heartbeat alone)"
                ),
            ));
        }
    };
    let (interval, timeout) = (duration("interval")?, duration("timeout")?);
    let tls = target.query_flag("grpc_tls")?;
    let service = target.query("grpc_service").unwrap_or_default().to_string();
    if !grpc {
        if interval.is_some() || timeout.is_some() || tls || !service.is_empty() {
            return Err(Error::bad_target(
                target,
                "interval, timeout, grpc_tls and grpc_service configure the gRPC health check: add check=grpc",
            ));
        }
        return Ok(None);
    }
    Ok(Some(GrpcCheckOptions {
        interval: interval.unwrap_or(NativeConsulFormat::DEFAULT_CHECK_INTERVAL),
        timeout,
        tls,
        service,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_and_decode_round_trip() {
        let options = NativeOptions {
            common: RegistrationOptions {
                weight: 5,
                group: "blue".into(),
                meta: [("version".to_string(), "2".to_string())].into(),
                ttl: Some(Duration::from_secs(6)),
            },
            tags: vec!["a".into()],
            grpc_check: None,
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
        // Issue #11 item 6: addresses nobody can dial are skipped, the rest kept.
        for (address, port) in [("not an address", 7103), ("http://127.0.0.1", 7104)] {
            entry.service.address = address.into();
            entry.service.port = port;
            assert!(
                NativeConsulFormat::decode(&entry, None).is_none(),
                "{address}"
            );
        }
        assert!(
            NativeConsulFormat::extras("[::1]:9", &options)
                .unwrap()
                .grpc_checks
                .is_empty()
        );
    }

    #[test]
    fn grpc_check_from_the_target() {
        let options =
            |t: &str| grpc_check_options(&Target::parse(&format!("consul://h:1/s{t}")).unwrap());
        assert_eq!(options("").unwrap(), None);
        assert_eq!(options("?check=ttl").unwrap(), None);
        let check =
            options("?check=grpc&interval=1s&timeout=500ms&grpc_tls=true&grpc_service=pb.S")
                .unwrap()
                .unwrap();
        assert_eq!(
            check,
            GrpcCheckOptions {
                interval: Duration::from_secs(1),
                timeout: Some(Duration::from_millis(500)),
                tls: true,
                service: "pb.S".into(),
            }
        );
        let extras = NativeConsulFormat::extras(
            "[::1]:9",
            &NativeOptions {
                grpc_check: Some(check),
                ..Default::default()
            },
        )
        .unwrap();
        let c = &extras.grpc_checks[0];
        assert_eq!((c.grpc.as_str(), c.grpc_use_tls), ("[::1]:9/pb.S", true));
        assert_eq!((c.interval.as_str(), c.timeout.as_str()), ("1s", "500ms"));
        assert_eq!(
            options("?check=grpc").unwrap().unwrap().interval,
            NativeConsulFormat::DEFAULT_CHECK_INTERVAL
        );
        for (query, needle) in [
            ("?check=http", "check `http`"),
            ("?check=grpc&interval=soon", "interval `soon`"),
            ("?check=grpc&interval=0s", "interval `0s`"),
            // Issue #11 item 2: these panicked in `Duration::from_secs_f64`.
            (
                "?check=grpc&interval=99999999999999999999s",
                "interval `99999999999999999999s` is not a duration from 1ms to 24h",
            ),
            (
                "?check=grpc&timeout=99999999999999999999s",
                "timeout `99999999999999999999s` is not a duration from 1ms to 24h",
            ),
            ("?check=grpc&grpc_tls=maybe", "grpc_tls `maybe`"),
            ("?interval=1s", "add check=grpc"),
        ] {
            let err = options(query).unwrap_err().to_string();
            assert!(err.contains(needle), "{query}: {err}");
        }
        // The old spelling of the check's TLS is pointed at the new one.
        let old = Target::parse("consul://h:1/s?check=grpc&tls=true").unwrap();
        let err = grpc_tls_hint(&old, ConsulTarget::from_target(&old).unwrap_err()).to_string();
        assert!(
            err.contains("grpc_tls=true") && err.contains("tls_ca"),
            "{err}"
        );
    }

    /// Issue #11 item 2: a huge `?ttl=` is refused up front, before any request.
    #[tokio::test]
    async fn ttl_out_of_range_is_refused_naming_the_range() {
        for ttl in ["99999999999999999999", "0", "90000", "soon"] {
            let target = Target::parse(&format!("consul://127.0.0.1:1/s?ttl={ttl}")).unwrap();
            let err = NativeRegistrar
                .register(&target, "127.0.0.1:9000")
                .await
                .expect_err(ttl)
                .to_string();
            assert!(
                err.contains(&format!("ttl `{ttl}` is not a duration from 1s to 24h")),
                "{ttl}: {err}"
            );
        }
    }

    /// Issue #14: consul's metadata rule is checked for native registrations too, up
    /// front, naming the key (the agent at port 1 is never asked).
    #[tokio::test]
    async fn meta_keys_consul_refuses_are_named_before_any_request() {
        for (query, needle) in [
            ("meta.a.b=1", "metadata key `a.b`: consul takes letters"),
            (
                "meta.consul-x=1",
                "metadata key `consul-x`: the prefix consul-",
            ),
        ] {
            let target = Target::parse(&format!("consul://127.0.0.1:1/s?{query}")).unwrap();
            let err = NativeRegistrar
                .register(&target, "127.0.0.1:9000")
                .await
                .expect_err(query)
                .to_string();
            assert!(err.contains(needle), "{query}: {err}");
        }
        let long = format!("meta.{}=1", "k".repeat(129));
        let err = NativeRegistrar
            .register(
                &Target::parse(&format!("consul://127.0.0.1:1/s?{long}")).unwrap(),
                "127.0.0.1:9000",
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 128 characters"), "{err}");
    }

    /// Issue #14: `weight`, `ttl`, `group` and `meta.K` mean on consul what they mean on
    /// etcd (the same table runs in dtmdriver-etcd), read back through the decoder; consul's
    /// own DNS weight stays within the 65535 the agent takes.
    #[test]
    fn registration_options_mean_what_they_mean_on_every_engine() {
        for (query, want) in test_support::options::registration_option_cases() {
            let target = Target::parse(&format!("consul://127.0.0.1:1/svc{query}")).unwrap();
            let got = NativeOptions::from_target(&target).and_then(|options| {
                NativeConsulFormat::registration("svc", "127.0.0.1:9000", &options)
            });
            match (want, got) {
                (Ok(want), Ok(r)) => {
                    let passing = r.weights.map(|w| w.passing).unwrap_or_default();
                    assert_eq!(passing, want.weight.min(65535), "{query}");
                    let mut entry = ServiceEntry::default();
                    entry.service.address = r.address.clone();
                    entry.service.port = r.port;
                    entry.service.meta = Some(r.meta.clone());
                    let e = NativeConsulFormat::decode(&entry, None).unwrap();
                    assert_eq!(r.check.ttl, consul_duration(want.ttl), "{query}");
                    assert!(
                        want.matches(&e, want.ttl),
                        "{query}: want {want:?}, got {e:?}"
                    );
                }
                (Err(needle), Err(e)) => {
                    assert!(e.to_string().contains(needle), "{query}: {e}");
                }
                (want, got) => panic!("{query}: want {want:?}, got {got:?}"),
            }
        }
    }
}
