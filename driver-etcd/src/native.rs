//! The native `dtm-driver-etcd` driver and its format, [`NativeEtcdFormat`].
//!
//! # Format (stable)
//!
//! One instance of service `NAME` at `ADDRESS` is the key
//!
//! ```text
//! /micro/NAME/ADDRESS
//! ```
//!
//! kept under a lease (TTL 10 s unless `?ttl=`, from 1s to 24h), the key layout of the
//! hand-written Go registry the design started from (shared/seeds/003).
//!
//! **Written** (by [`NativeRegistrar`]): always all five members, lowercase, weight a
//! whole number from 0 to 2147483647 (the registrar refuses more):
//!
//! ```json
//! {"name":"NAME","address":"ADDRESS","weight":10,"group":"blue","metadata":{"version":"1.2"}}
//! ```
//!
//! **Read** (by [`NativeResolver`]): what Go's `encoding/json` reads into the seed's
//! untagged `ServiceInstance{Name, Address string; Weight int32; Group string}`, plus
//! our `metadata` (details on [`Instance`]):
//!
//! * member names in any case: the seed's own `{"Name":"seed","Address":"127.0.0.1:7001",
//!   "Weight":5,"Group":"blue"}` and ours are the same instance;
//! * `weight` a whole number in the int32 range; missing, zero (what the seed writes
//!   for a server given no weight) and negative weights count as 1, the default share,
//!   as the seed keeps such instances in service; a fractional or out-of-range weight
//!   makes the value invalid, as in Go;
//! * `group` and `metadata` may be missing (empty); `address` must be non-empty;
//!   unknown members are ignored;
//! * an invalid value is skipped with a warning naming the key, the value and why; the
//!   other instances still resolve.
//!
//! Two things of the seed's are not copied: its watch prefix `/micro/NAME` lacks the
//! trailing slash (so it also sees `NAMEother`), ours is `/micro/NAME/`; and its
//! resolver reads grpc's `target.Endpoint()`, which is empty for `registry://NAME` in
//! today's grpc-go: such a client lists every service under `/micro` and sends an empty
//! `:authority`, which Rust (h2) servers refuse; it needs `registry:///NAME`.
//!
//! # Targets
//!
//! * resolve: `etcd://h1:2379,h2:2379/NAME[?group=G]` (or `etcd:///h1:2379?key=NAME`):
//!   every instance of `NAME`, only those of group `G` when given; weights feed
//!   weighted round robin, group and metadata show up as endpoint metadata.
//! * register: `etcd://h1:2379/NAME[?weight=N][&group=G][&ttl=S][&meta.K=V...]`, the
//!   options every engine reads alike ([`dtmdriver_core::registration_options`]).
//! * both, the seed's own form: `registry://NAME?registry=etcd://h1:2379,h2:2379[&…]`,
//!   `registry:///NAME?registry=…` or `registry://h1:2379,h2:2379/NAME[?…]` mean the
//!   `etcd://` target above (see [`crate::registry_target`]).
//!
//! Credentials: `etcd://user:password@h:2379/NAME` or `?user=&password=`.

use std::sync::Arc;
use std::time::Duration;

use crate::client::EtcdTarget;
use crate::lease::LeaseKeeper;
use crate::registry_target::{REGISTRY_SCHEME, to_etcd_target};
use crate::watch::resolve_prefix;
use async_trait::async_trait;
use dtmdriver_core::address::HostPort;
use dtmdriver_core::parse::parse_scheme_url;
use dtmdriver_core::registration_options::RegistrationOptions;
use dtmdriver_core::resolve::{Endpoint, Registrar, Resolver, SnapshotSender};
use dtmdriver_core::{Driver, Registration, Result, ServerMethod, Target};

mod instance;

pub use instance::Instance;

/// The driver's name.
pub const NAME: &str = "dtm-driver-etcd";

/// The scheme it resolves and registers.
pub const SCHEME: &str = "etcd";

/// The root of every native key.
pub const ROOT: &str = "/micro";

/// The native key/value layout; see the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeEtcdFormat;

impl NativeEtcdFormat {
    /// The prefix holding every instance of `name`: `/micro/NAME/`.
    pub fn prefix(name: &str) -> String {
        format!("{ROOT}/{name}/")
    }

    /// The key of one instance: `/micro/NAME/ADDRESS`.
    pub fn key(instance: &Instance) -> String {
        format!("{}{}", Self::prefix(&instance.name), instance.address)
    }

    /// The JSON value of one instance.
    pub fn value(instance: &Instance) -> String {
        serde_json::to_string(instance).unwrap_or_default()
    }

    /// What registering `endpoint` at `target` (`etcd://` or `registry://`) writes: the
    /// cluster and key, the instance (`?weight=`, `?group=`, `?meta.KEY=`) and the lease
    /// TTL (`?ttl=`). The error names the parameter and the fix. Public so that the fuzz
    /// targets reach the registrar's parsing without etcd.
    ///
    /// ```
    /// use dtmdriver_etcd::NativeEtcdFormat;
    /// let t = dtmdriver_core::Target::parse("etcd://h:2379/svc?weight=3&group=blue&ttl=20s").unwrap();
    /// let (_, instance, ttl) = NativeEtcdFormat::registration(&t, "10.0.0.5:9000").unwrap();
    /// assert_eq!((instance.weight, instance.group.as_str()), (3, "blue"));
    /// assert_eq!(ttl, std::time::Duration::from_secs(20));
    /// ```
    pub fn registration(
        target: &Target,
        endpoint: &str,
    ) -> Result<(EtcdTarget, Instance, Duration)> {
        let target = &etcd_form(target)?;
        let t = EtcdTarget::from_target(target)?;
        // The shared options (one meaning on every engine); the lease keeper rounds the
        // TTL up to whole seconds, at least 2.
        let options = RegistrationOptions::from_target(target)?;
        HostPort::parse_endpoint(endpoint)?;
        let ttl = options.ttl();
        let instance = Instance {
            name: t.key.clone(),
            address: endpoint.to_string(),
            weight: options.weight,
            group: options.group,
            metadata: options.meta,
        };
        Ok((t, instance, ttl))
    }

    /// Reads a value back (ours or the seed registry's, see [`Instance`]); `group`
    /// keeps only that group.
    pub fn decode(
        value: &[u8],
        group: Option<&str>,
    ) -> std::result::Result<Option<Endpoint>, String> {
        let instance: Instance = serde_json::from_slice(value)
            .map_err(|e| format!("not a native instance JSON: {e}"))?;
        // The address is used as read; this is the one place to check it.
        if instance.address.is_empty() {
            return Err("the instance has no address".into());
        }
        HostPort::parse(&instance.address).map_err(|why| format!("address: {why}"))?;
        if group.is_some_and(|g| g != instance.group) {
            return Ok(None);
        }
        let mut endpoint = Endpoint::new(instance.address).with_weight(instance.weight);
        if !instance.group.is_empty() {
            endpoint = endpoint.with_metadata("group", instance.group);
        }
        for (k, v) in instance.metadata {
            endpoint = endpoint.with_metadata(k, v);
        }
        Ok(Some(endpoint))
    }
}

/// `dtm-driver-etcd`: our own etcd format with weights, groups and metadata.
///
/// ```
/// use dtmdriver_core::Driver;
/// let d = dtmdriver_etcd::EtcdDriver;
/// assert_eq!(d.name(), "dtm-driver-etcd");
/// let sm = d.parse_server_method("etcd://127.0.0.1:2379/trans/pb.Trans/TransOut").unwrap();
/// assert_eq!(sm.server, "etcd://127.0.0.1:2379/trans");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct EtcdDriver;

#[async_trait]
impl Driver for EtcdDriver {
    fn name(&self) -> &str {
        NAME
    }

    fn resolvers(&self) -> Vec<(&'static str, Arc<dyn Resolver>)> {
        vec![
            (SCHEME, Arc::new(NativeResolver)),
            (REGISTRY_SCHEME, Arc::new(NativeResolver)),
        ]
    }

    fn registrars(&self) -> Vec<(&'static str, Arc<dyn Registrar>)> {
        vec![
            (SCHEME, Arc::new(NativeRegistrar)),
            (REGISTRY_SCHEME, Arc::new(NativeRegistrar)),
        ]
    }

    fn parse_server_method(&self, uri: &str) -> Result<ServerMethod> {
        parse_scheme_url(uri)
    }
}

dtmdriver_core::register_driver!(EtcdDriver);

/// `target` as an `etcd://` target: itself, or what a `registry://` one stands for.
fn etcd_form(target: &Target) -> Result<Target> {
    if target.scheme() == REGISTRY_SCHEME {
        to_etcd_target(target)
    } else {
        Ok(target.clone())
    }
}

/// Resolves native targets (`etcd://` and `registry://`).
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeResolver;

impl Resolver for NativeResolver {
    fn resolve(&self, target: &Target, updates: SnapshotSender) -> Result<()> {
        let target = &etcd_form(target)?;
        let t = EtcdTarget::from_target(target)?;
        let group = target.query("group").map(str::to_string);
        let decode = Arc::new(move |_key: &str, value: &[u8]| {
            NativeEtcdFormat::decode(value, group.as_deref())
        });
        resolve_prefix(
            &t.config,
            &NativeEtcdFormat::prefix(&t.key),
            decode,
            updates,
        );
        Ok(())
    }
}

/// Registers native instances (`etcd://` and `registry://` targets).
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeRegistrar;

#[async_trait]
impl Registrar for NativeRegistrar {
    async fn register(&self, target: &Target, endpoint: &str) -> Result<Registration> {
        let (t, instance, ttl) = NativeEtcdFormat::registration(target, endpoint)?;
        let target = &etcd_form(target)?;
        let key = NativeEtcdFormat::key(&instance);
        let value = NativeEtcdFormat::value(&instance);
        LeaseKeeper::register(
            &t.config,
            move |_| key.clone(),
            value,
            ttl,
            target.as_str(),
            endpoint,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtmdriver_core::Error;

    #[test]
    fn value_round_trips_and_filters_groups() {
        let i = Instance {
            name: "svc".into(),
            address: "127.0.0.1:1".into(),
            weight: 5,
            group: "blue".into(),
            metadata: [("v".to_string(), "1".to_string())].into(),
        };
        assert_eq!(NativeEtcdFormat::key(&i), "/micro/svc/127.0.0.1:1");
        let v = NativeEtcdFormat::value(&i);
        let e = NativeEtcdFormat::decode(v.as_bytes(), None)
            .unwrap()
            .unwrap();
        assert_eq!((e.addr.as_str(), e.weight), ("127.0.0.1:1", 5));
        assert_eq!(e.metadata["group"], "blue");
        assert_eq!(e.metadata["v"], "1");
        assert!(
            NativeEtcdFormat::decode(v.as_bytes(), Some("green"))
                .unwrap()
                .is_none()
        );
        let minimal = br#"{"name":"svc","address":"a:1"}"#;
        assert_eq!(
            NativeEtcdFormat::decode(minimal, None)
                .unwrap()
                .unwrap()
                .weight,
            1
        );
        assert!(NativeEtcdFormat::decode(b"garbage", None).is_err());
    }

    #[test]
    fn decodes_the_seed_registry_value_and_filters_its_group() {
        let seed = br#"{"Name":"seed","Address":"127.0.0.1:7001","Weight":5,"Group":"blue"}"#;
        let e = NativeEtcdFormat::decode(seed, Some("blue"))
            .unwrap()
            .unwrap();
        assert_eq!((e.addr.as_str(), e.weight), ("127.0.0.1:7001", 5));
        assert_eq!(e.metadata["group"], "blue");
        assert!(
            NativeEtcdFormat::decode(seed, Some("green"))
                .unwrap()
                .is_none()
        );
        // A server the seed started without a weight writes 0.
        let unweighted = br#"{"Name":"seed","Address":"127.0.0.1:7002","Weight":0,"Group":""}"#;
        let e = NativeEtcdFormat::decode(unweighted, None).unwrap().unwrap();
        assert_eq!(e.weight, 1);
        assert!(!e.metadata.contains_key("group"));
        let err = NativeEtcdFormat::decode(br#"{"Name":"seed","Weight":1}"#, None).unwrap_err();
        assert!(err.contains("no address"), "{err}");
    }

    /// Issue #11 item 6: values whose address nobody can dial are refused with the
    /// reason (the watcher skips them with a warning naming the key).
    #[test]
    fn unusable_addresses_are_refused() {
        for (address, why) in [
            ("not an address", "white space"),
            ("127.0.0.1:99999", "65535"),
            (" 127.0.0.1:7016", "white space"),
            ("http://127.0.0.1:7013/x", "scheme"),
            ("::1:7014", "brackets"),
        ] {
            let value = serde_json::json!({"name": "svc", "address": address}).to_string();
            let err = NativeEtcdFormat::decode(value.as_bytes(), None).expect_err(address);
            assert!(err.contains(why), "{address}: {err}");
        }
    }

    /// Issue #11 items 2 and 8: bad registration input is refused before any request.
    #[tokio::test]
    async fn registration_input_is_checked_up_front() {
        let target = |q: &str| Target::parse(&format!("etcd://127.0.0.1:1/svc{q}")).unwrap();
        for (query, why) in [
            (
                "?ttl=99999999999999999999",
                "ttl `99999999999999999999` is not a duration from 1s to 24h",
            ),
            ("?ttl=0", "ttl `0`"),
        ] {
            let err = NativeRegistrar
                .register(&target(query), "127.0.0.1:9000")
                .await
                .expect_err(query)
                .to_string();
            assert!(err.contains(why), "{query}: {err}");
        }
        for endpoint in ["not an address", "127.0.0.1:99999", "::1:7014", ""] {
            let err = NativeRegistrar
                .register(&target(""), endpoint)
                .await
                .expect_err(endpoint);
            assert!(
                matches!(err, Error::BadEndpoint { .. }),
                "{endpoint}: {err}"
            );
        }
    }

    /// Issue #14: `weight`, `ttl`, `group` and `meta.K` mean on etcd what they mean on
    /// consul (the same table runs in dtmdriver-consul), read back through the decoder.
    #[test]
    fn registration_options_mean_what_they_mean_on_every_engine() {
        for (query, want) in test_support::options::registration_option_cases() {
            let target = Target::parse(&format!("etcd://127.0.0.1:1/svc{query}")).unwrap();
            let got = NativeEtcdFormat::registration(&target, "127.0.0.1:9000").map(
                |(_, instance, ttl)| {
                    let value = NativeEtcdFormat::value(&instance);
                    (NativeEtcdFormat::decode(value.as_bytes(), None), ttl)
                },
            );
            match (want, got) {
                (Ok(want), Ok((Ok(Some(e)), ttl))) => {
                    assert!(
                        want.matches(&e, ttl),
                        "{query}: want {want:?}, got {e:?} {ttl:?}"
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
