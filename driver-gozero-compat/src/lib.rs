//! `dtm-driver-gozero`: go-zero's registry formats on the engines of `dtmdriver-etcd`,
//! `dtmdriver-consul` and `dtmdriver-k8s`.
//!
//! Contract: a driver name ([`NAME`]), its schemes (`etcd`/`discov`, `direct`, `consul`,
//! `k8s`), go-zero's branch-URI rule ([`parse_gozero`]) and go-zero's formats
//! ([`GoZeroEtcdFormat`], [`consul`], `k8s`); leases, watches and retries are the
//! engines'. Channels keep go-zero's subset of at most [`SUBSET_SIZE`] servers
//! (`?subset=N`, sticky, see [`SnapshotSender::with_subset`]); a wildcard listen address
//! is registered as a routable one ([`routable_endpoint`]). Cargo features `etcd`,
//! `consul`, `k8s` (all default); a target of a scheme whose feature is off is refused
//! naming the feature ([`FeatureOff`](dtmdriver_core::feature_off::FeatureOff)).
//! Linking the crate registers the driver (`use dtmdriver_gozero as _;`).
//!
//! The formats, target shapes and where we differ from go-zero, and why: `docs/gozero.md`.
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

use std::sync::Arc;

use async_trait::async_trait;
#[cfg(feature = "etcd")]
use dtmdriver_core::Registration;
use dtmdriver_core::address::HostPort;
use dtmdriver_core::parse::parse_scheme_url;
#[cfg(feature = "etcd")]
use dtmdriver_core::resolve::Endpoint;
use dtmdriver_core::resolve::{DirectResolver, Registrar, Resolver, SnapshotSender};
use dtmdriver_core::{Driver, Error, Result, ServerMethod, Target};
#[cfg(feature = "etcd")]
use dtmdriver_etcd::{EtcdTarget, LeaseKeeper, resolve_prefix};

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
    let hint =
        format!("write subset=N to use at most N servers (0 for all; default {SUBSET_SIZE})");
    Ok(target.query_count("subset", &hint)?.unwrap_or(SUBSET_SIZE))
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
/// * lease: 10 s TTL or a registration's `?ttl=` (no other option), renewed at TTL/3;
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
        HostPort::canonical(text)
            .map(Endpoint::new)
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
        let etcd: Arc<dyn Resolver> =
            dtmdriver_core::engine_or_feature_off!(NAME, "etcd", GoZeroEtcdResolver);
        let consul: Arc<dyn Resolver> =
            dtmdriver_core::engine_or_feature_off!(NAME, "consul", GoZeroConsulResolver);
        let k8s: Arc<dyn Resolver> =
            dtmdriver_core::engine_or_feature_off!(NAME, "k8s", GoZeroK8sResolver);
        vec![
            ("etcd", etcd.clone()),
            ("discov", etcd),
            ("direct", Arc::new(GoZeroDirectResolver)),
            ("consul", consul),
            ("k8s", k8s),
        ]
    }

    fn registrars(&self) -> Vec<(&'static str, Arc<dyn Registrar>)> {
        let etcd: Arc<dyn Registrar> =
            dtmdriver_core::engine_or_feature_off!(NAME, "etcd", GoZeroEtcdRegistrar);
        let consul: Arc<dyn Registrar> =
            dtmdriver_core::engine_or_feature_off!(NAME, "consul", GoZeroConsulRegistrar);
        vec![("etcd", etcd.clone()), ("discov", etcd), ("consul", consul)]
    }

    fn parse_server_method(&self, uri: &str) -> Result<ServerMethod> {
        parse_gozero(uri)
    }
}

dtmdriver_core::register_driver!(GoZeroDriver);

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
        let format = "go-zero's etcd format, whose value is the bare host:port";
        let options = dtmdriver_core::registration_options::RegistrationOptions::carried_by;
        let ttl = options(target, &["ttl"], format)?.ttl;
        let published = routable_endpoint(endpoint)?;
        let key = move |lease| GoZeroEtcdFormat::key(&t.key, lease);
        let ttl = ttl.unwrap_or(GoZeroEtcdFormat::TTL);
        LeaseKeeper::register(
            &t.config,
            key,
            published.clone(),
            ttl,
            target.as_str(),
            &published,
        )
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
        let published = format!(
            "{}:{port}",
            dtmdriver_core::address::first_non_loopback_ipv4()
        );
        tracing::info!(listen = endpoint, %published, "publishing a routable address for a wildcard listen address");
        return Ok(published);
    }
    Ok(HostPort::parse_endpoint(endpoint)?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

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
