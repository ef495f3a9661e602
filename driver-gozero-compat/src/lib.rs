//! `dtm-driver-gozero`: go-zero's registry formats on the etcd engine of `dtmdriver-etcd`.
//!
//! This crate is thin: a driver name, scheme names, go-zero's branch-URI rule
//! ([`parse_gozero`]) and go-zero's formats ([`GoZeroEtcdFormat`], [`consul`]). All
//! lease, watch and retry work is done by the engines.
//!
//! | scheme | resolve | register |
//! |---|---|---|
//! | `etcd` | every value under `KEY/` | `KEY/<lease id>` = `host:port` under a 10 s lease |
//! | `discov` | alias of `etcd` | alias of `etcd` |
//! | `direct` | the static list `direct:///a:1,b:2` | — |
//! | `consul` | blocking health queries ([`consul`]) | zero-contrib's agent service + TTL check ([`consul`]) |
//! | `k8s` | ready addresses of the service's EndpointSlices (`k8s` module, feature `k8s`) | — (the cluster does it) |
//!
//! Targets take both go-zero shapes: `etcd://h1:2379,h2:2379/KEY` (go-zero ≤ 1.10.1) and
//! `etcd:///h1:2379,h2:2379?key=KEY` (≥ 1.10.2), with `?user=&password=` for etcd auth.
//!
//! Like go-zero's clients, `etcd`, `discov`, `direct` and `k8s` channels use at most
//! [`SUBSET_SIZE`] (32) servers of a larger set, a random subset per channel; ours is
//! sticky (see [`SnapshotSender::with_subset`]) where go-zero reshuffles on every change.
//! `?subset=N` on the target sets another bound, `?subset=0` none.
//!
//! Registering `0.0.0.0:PORT` or `[::]:PORT` publishes a routable address instead, as
//! go-zero does: the machine's first non-loopback IPv4 address, or `127.0.0.1` when there
//! is none (see [`routable_endpoint`]).
//!
//! # Features
//!
//! `etcd` (the `etcd` and `discov` schemes, on `dtmdriver-etcd`'s engine), `consul` (on
//! `dtmdriver-consul`'s) and `k8s` (on `dtmdriver-k8s`'s: a Kubernetes client), all on by
//! default: a service that uses one registry turns the others off
//! (`default-features = false, features = ["consul"]`) and compiles no client of them. A target of a scheme whose feature is off is refused with an error naming the
//! feature ([`FeatureOff`](dtmdriver_core::feature_off::FeatureOff)). `direct` is always
//! there.
//!
//! Linking the crate registers the driver; a program that does not otherwise name the
//! crate keeps it linked with `use dtmdriver_gozero as _;`.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use dtmdriver_gozero as _;
//! dtmdriver_core::use_driver("dtm-driver-gozero")?;
//! let registration = dtmdriver_core::get_driver()
//!     .register_service("etcd://127.0.0.1:2379/trans.rpc", "127.0.0.1:9000")
//!     .await?;
//! let channel = dtmdriver_core::connect("etcd://127.0.0.1:2379/trans.rpc")?;
//! # drop(channel); registration.deregister().await?; Ok(()) }
//! ```

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use async_trait::async_trait;
#[cfg(feature = "etcd")]
use dtmdriver_core::Registration;
use dtmdriver_core::address::HostPort;
#[cfg(not(all(feature = "etcd", feature = "consul", feature = "k8s")))]
use dtmdriver_core::feature_off::FeatureOff;
use dtmdriver_core::parse::parse_scheme_url;
#[cfg(feature = "etcd")]
use dtmdriver_core::resolve::Endpoint;
use dtmdriver_core::resolve::{DirectResolver, Registrar, Resolver, SnapshotSender};
use dtmdriver_core::{Driver, Error, Result, ServerMethod, Target};
#[cfg(feature = "etcd")]
use dtmdriver_etcd::{EtcdTarget, LeaseKeeper, resolve_prefix, shared_client};

#[cfg(feature = "consul")]
pub mod consul;
#[cfg(feature = "consul")]
pub use consul::{GoZeroConsulFormat, GoZeroConsulRegistrar, GoZeroConsulResolver};
#[cfg(feature = "k8s")]
pub mod k8s;
#[cfg(feature = "k8s")]
pub use k8s::GoZeroK8sResolver;

/// The driver's name.
pub const NAME: &str = "dtm-driver-gozero";

/// How many servers of a larger set one client uses, as go-zero's `subsetSize`.
pub const SUBSET_SIZE: usize = 32;

/// The subset bound of `target`: `?subset=N`, else [`SUBSET_SIZE`]; 0 means none.
pub fn subset_size(target: &Target) -> Result<usize> {
    match target.query("subset") {
        None => Ok(SUBSET_SIZE),
        Some(n) => n.parse().map_err(|_| {
            let write = "write subset=N to use at most N servers (0 for all";
            Error::bad_target(
                target,
                format!("subset=`{n}` is not a number; {write}; default {SUBSET_SIZE})"),
            )
        }),
    }
}

/// go-zero's branch-URI rule: the shared scheme-URL rule ([`parse_scheme_url`]), except
/// that for `consul` and `nacos` URIs the query up to the next `/` is dropped first, as
/// go-zero's driver does: `consul://h:8500/busi.rpc?wait=14s/pb.S/M` →
/// (`consul://h:8500/busi.rpc`, `/pb.S/M`).
pub fn parse_gozero(uri: &str) -> Result<ServerMethod> {
    let has_query_rule = uri.contains("//") && (uri.contains("consul") || uri.contains("nacos"));
    let Some((head, tail)) = uri.split_once('?').filter(|_| has_query_rule) else {
        return parse_scheme_url(uri);
    };
    let no_method = || Error::bad_uri(uri, "no method after the query; append /pkg.S/M");
    let slash = tail.find('/').ok_or_else(no_method)?;
    parse_scheme_url(&format!("{head}{}", &tail[slash..])).map_err(|e| match e {
        Error::BadUri { reason, .. } => Error::bad_uri(uri, reason),
        other => other,
    })
}

/// go-zero's etcd layout.
#[cfg(feature = "etcd")]
///
/// * key: `<Key>/<lease id as decimal>`, the key used as given (no leading slash);
/// * value: the plain `host:port`;
/// * lease: 10 s TTL, renewed at TTL/3;
/// * subscribers read every value under `<Key>/` and de-duplicate them.
#[derive(Clone, Copy, Debug, Default)]
pub struct GoZeroEtcdFormat;

#[cfg(feature = "etcd")]
impl GoZeroEtcdFormat {
    /// go-zero's lease TTL.
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(10);

    /// The key of an instance registered under `lease`.
    pub fn key(key: &str, lease: i64) -> String {
        format!("{key}/{lease}")
    }

    /// The prefix subscribers read.
    pub fn prefix(key: &str) -> String {
        format!("{key}/")
    }

    /// Reads a value: a `host:port` ([`HostPort`]). Anything else is garbage; the error
    /// says why.
    pub fn decode(value: &[u8]) -> std::result::Result<Endpoint, String> {
        let text = std::str::from_utf8(value).map_err(|_| "the value is not UTF-8".to_string())?;
        HostPort::parse(text)
            .map(|a| Endpoint::new(a.to_string()))
            .map_err(|why| format!("the value is not a host:port address: {why}"))
    }
}

/// `dtm-driver-gozero`; see the [crate docs](crate).
///
/// ```
/// use dtmdriver_core::Driver;
/// let d = dtmdriver_gozero::GoZeroDriver;
/// assert_eq!(d.name(), "dtm-driver-gozero");
/// let sm = d.parse_server_method("etcd://127.0.0.1:2379/trans/trans.TransSvc/TransOut").unwrap();
/// assert_eq!((sm.server.as_str(), sm.method.as_str()), ("etcd://127.0.0.1:2379/trans", "/trans.TransSvc/TransOut"));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct GoZeroDriver;

#[async_trait]
impl Driver for GoZeroDriver {
    fn name(&self) -> &str {
        NAME
    }

    fn resolvers(&self) -> Vec<(&'static str, Arc<dyn Resolver>)> {
        let etcd = etcd_resolver();
        vec![
            ("etcd", etcd.clone()),
            ("discov", etcd),
            ("direct", Arc::new(GoZeroDirectResolver)),
            ("consul", consul_resolver()),
            ("k8s", k8s_resolver()),
        ]
    }

    fn registrars(&self) -> Vec<(&'static str, Arc<dyn Registrar>)> {
        let etcd = etcd_registrar();
        vec![
            ("etcd", etcd.clone()),
            ("discov", etcd),
            ("consul", consul_registrar()),
        ]
    }

    fn parse_server_method(&self, uri: &str) -> Result<ServerMethod> {
        parse_gozero(uri)
    }
}

dtmdriver_core::register_driver!(GoZeroDriver);

/// This package's name, for the errors of features turned off.
#[cfg(not(all(feature = "etcd", feature = "consul")))]
const PACKAGE: &str = env!("CARGO_PKG_NAME");

fn etcd_resolver() -> Arc<dyn Resolver> {
    #[cfg(feature = "etcd")]
    let resolver = Arc::new(GoZeroEtcdResolver);
    #[cfg(not(feature = "etcd"))]
    let resolver = Arc::new(FeatureOff::new(NAME, PACKAGE, "etcd"));
    resolver
}

fn etcd_registrar() -> Arc<dyn Registrar> {
    #[cfg(feature = "etcd")]
    let registrar = Arc::new(GoZeroEtcdRegistrar);
    #[cfg(not(feature = "etcd"))]
    let registrar = Arc::new(FeatureOff::new(NAME, PACKAGE, "etcd"));
    registrar
}

fn consul_resolver() -> Arc<dyn Resolver> {
    #[cfg(feature = "consul")]
    let resolver = Arc::new(GoZeroConsulResolver);
    #[cfg(not(feature = "consul"))]
    let resolver = Arc::new(FeatureOff::new(NAME, PACKAGE, "consul"));
    resolver
}

fn k8s_resolver() -> Arc<dyn Resolver> {
    #[cfg(feature = "k8s")]
    let resolver = Arc::new(GoZeroK8sResolver);
    #[cfg(not(feature = "k8s"))]
    let resolver = Arc::new(FeatureOff::new(NAME, PACKAGE, "k8s"));
    resolver
}

fn consul_registrar() -> Arc<dyn Registrar> {
    #[cfg(feature = "consul")]
    let registrar = Arc::new(GoZeroConsulRegistrar);
    #[cfg(not(feature = "consul"))]
    let registrar = Arc::new(FeatureOff::new(NAME, PACKAGE, "consul"));
    registrar
}

/// Resolves go-zero etcd targets.
#[cfg(feature = "etcd")]
#[derive(Clone, Copy, Debug, Default)]
pub struct GoZeroEtcdResolver;

#[cfg(feature = "etcd")]
impl Resolver for GoZeroEtcdResolver {
    fn resolve(&self, target: &Target, updates: SnapshotSender) -> Result<()> {
        let t = EtcdTarget::from_target(target)?;
        let updates = updates.with_subset(subset_size(target)?);
        let decode = Arc::new(|_key: &str, value: &[u8]| GoZeroEtcdFormat::decode(value).map(Some));
        resolve_prefix(
            &t.config,
            &GoZeroEtcdFormat::prefix(&t.key),
            decode,
            updates,
        );
        Ok(())
    }
}

/// Resolves go-zero `direct:///a:1,b:2` targets: the static list, at most
/// [`subset_size`] of it.
#[derive(Clone, Copy, Debug, Default)]
pub struct GoZeroDirectResolver;

impl Resolver for GoZeroDirectResolver {
    fn resolve(&self, target: &Target, updates: SnapshotSender) -> Result<()> {
        DirectResolver.resolve(target, updates.with_subset(subset_size(target)?))
    }
}

/// Registers instances the way a go-zero zrpc server does.
#[cfg(feature = "etcd")]
#[derive(Clone, Copy, Debug, Default)]
pub struct GoZeroEtcdRegistrar;

#[cfg(feature = "etcd")]
#[async_trait]
impl Registrar for GoZeroEtcdRegistrar {
    async fn register(&self, target: &Target, endpoint: &str) -> Result<Registration> {
        let t = EtcdTarget::from_target(target)?;
        let published = routable_endpoint(endpoint)?;
        let client = shared_client(&t.config).await?;
        let key = t.key.clone();
        LeaseKeeper::new(
            client,
            move |lease| GoZeroEtcdFormat::key(&key, lease),
            published.clone(),
        )
        .ttl(GoZeroEtcdFormat::TTL)
        .start(target.as_str(), &published)
        .await
    }
}

/// The address to publish for a listen address: `0.0.0.0:PORT` and `[::]:PORT` (and a
/// bare `:PORT`) become the machine's first non-loopback IPv4 address with that port,
/// or `127.0.0.1:PORT` when the machine has none; other addresses stay as they are.
///
/// ```
/// use dtmdriver_gozero::routable_endpoint;
/// assert_eq!(routable_endpoint("127.0.0.1:9000").unwrap(), "127.0.0.1:9000");
/// let published = routable_endpoint("0.0.0.0:9000").unwrap();
/// assert!(published.ends_with(":9000") && !published.starts_with("0.0.0.0"));
/// ```
pub fn routable_endpoint(endpoint: &str) -> Result<String> {
    if let Some(("" | "0.0.0.0" | "[::]" | "::", port)) = endpoint.rsplit_once(':') {
        let port = HostPort::parse(&format!("0.0.0.0:{port}"))
            .map_err(|reason| Error::bad_endpoint(endpoint, &reason))?
            .port();
        let published = format!("{}:{port}", first_non_loopback_ipv4());
        tracing::info!(listen = endpoint, %published, "publishing a routable address for a wildcard listen address");
        return Ok(published);
    }
    Ok(HostPort::parse_endpoint(endpoint)?.to_string())
}

fn first_non_loopback_ipv4() -> Ipv4Addr {
    if_addrs::get_if_addrs()
        .unwrap_or_default()
        .iter()
        .filter(|i| !i.is_loopback())
        .find_map(|i| match i.ip() {
            IpAddr::V4(v4) if !v4.is_unspecified() && !v4.is_link_local() => Some(v4),
            _ => None,
        })
        .unwrap_or(Ipv4Addr::LOCALHOST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "etcd")]
    #[test]
    fn format_matches_go_zero() {
        assert_eq!(
            GoZeroEtcdFormat::key("trans.rpc", 7587868734566710322),
            "trans.rpc/7587868734566710322"
        );
        assert_eq!(GoZeroEtcdFormat::prefix("trans.rpc"), "trans.rpc/");
        assert_eq!(
            GoZeroEtcdFormat::decode(b"127.0.0.1:9000").unwrap().addr,
            "127.0.0.1:9000"
        );
        assert_eq!(
            GoZeroEtcdFormat::decode(b"[::1]:9000").unwrap().addr,
            "[::1]:9000"
        );
        let huge_host = format!("{}:80", "h".repeat(1 << 20));
        for (garbage, why) in [
            (&b"\xff\xfe"[..], "UTF-8"),
            (b"", "empty"),
            (b"not an address", "white space"),
            (b"a:b:c", "brackets"),
            (b"{\"json\":1}", "not a host:port"),
            // Issue #11 item 6: a 1 MiB host name was taken.
            (huge_host.as_bytes(), "at most 253"),
            (b"127.0.0.1:99999", "65535"),
            (b" 127.0.0.1:7016", "white space"),
            (b"http://127.0.0.1:7013/x", "scheme"),
        ] {
            let err = GoZeroEtcdFormat::decode(garbage).expect_err(&format!("{garbage:.40?}"));
            assert!(err.contains(why), "{err}");
            assert!(err.len() < 400, "the error quotes the whole value");
        }
    }

    #[test]
    fn branch_uris_split_as_go_zero_splits_them() {
        let split = |uri: &str| {
            let sm = parse_gozero(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
            (sm.server, sm.method)
        };
        for (uri, server, method) in [
            (
                "consul://127.0.0.1:8500/busi.rpc?wait=14s/pb.S/M",
                "consul://127.0.0.1:8500/busi.rpc",
                "/pb.S/M",
            ),
            // Elsewhere the shared rule: the query stays with the server.
            (
                "etcd://127.0.0.1:2379/trans/trans.TransSvc/TransOut",
                "etcd://127.0.0.1:2379/trans",
                "/trans.TransSvc/TransOut",
            ),
            (
                "etcd://h:2379/trans?user=u/pb.S/M",
                "etcd://h:2379/trans?user=u",
                "/pb.S/M",
            ),
            ("localhost:8080/pb.S/M", "localhost:8080", "/pb.S/M"),
        ] {
            assert_eq!(split(uri), (server.to_string(), method.to_string()));
        }
        for uri in [
            "consul://h:8500/busi?wait=1s",
            "etcd://h:2379/trans",
            "/pb.S/M",
        ] {
            let e = parse_gozero(uri).unwrap_err().to_string();
            assert!(e.contains(&format!("`{uri}`")), "{uri}: {e}");
        }
    }

    #[test]
    fn wildcard_listen_addresses_become_routable() {
        for wildcard in ["0.0.0.0:8080", "[::]:8080", ":8080"] {
            let p = routable_endpoint(wildcard).unwrap();
            assert!(p.ends_with(":8080"), "{p}");
            let host: Ipv4Addr = p.trim_end_matches(":8080").parse().unwrap();
            assert!(!host.is_unspecified(), "{p}");
        }
        assert_eq!(routable_endpoint("10.1.2.3:80").unwrap(), "10.1.2.3:80");
        assert!(routable_endpoint("nohost").is_err());
        assert!(routable_endpoint("h:0").is_err());
        assert!(routable_endpoint("0.0.0.0:99999").is_err());
        assert!(routable_endpoint("not an address:80").is_err());
        assert!(routable_endpoint("::1:80").is_err());
    }
}
