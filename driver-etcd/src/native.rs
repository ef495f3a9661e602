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
//! with a JSON value
//!
//! ```json
//! {"name":"NAME","address":"ADDRESS","weight":10,"group":"blue","metadata":{"version":"1.2"}}
//! ```
//!
//! kept under a lease (TTL 10 s unless `?ttl=`, from 1s to 24h). `weight` (default 1, 0 counts as
//! 1), `group` (default empty) and `metadata` (default empty) may be missing when read.
//! This is the layout of the hand-written Go registry the design started from, plus
//! `metadata`.
//!
//! # Targets
//!
//! * resolve: `etcd://h1:2379,h2:2379/NAME[?group=G]` (or `etcd:///h1:2379?key=NAME`):
//!   every instance of `NAME`, only those of group `G` when given; weights feed
//!   weighted round robin, group and metadata show up as endpoint metadata.
//! * register: `etcd://h1:2379/NAME[?weight=N][&group=G][&ttl=S][&meta.K=V...]`.
//!
//! Credentials: `etcd://user:password@h:2379/NAME` or `?user=&password=`.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use driver_core::address::HostPort;
use driver_core::parse::parse_scheme_url;
use driver_core::resolve::{Endpoint, Registrar, Resolver, SnapshotSender};
use driver_core::{Driver, Error, Registration, Result, ServerMethod, Target};
use serde::{Deserialize, Serialize};

use crate::client::{EtcdTarget, shared_client};
use crate::lease::LeaseKeeper;
use crate::watch::resolve_prefix;

/// The driver's name.
pub const NAME: &str = "dtm-driver-etcd";

/// The scheme it resolves and registers.
pub const SCHEME: &str = "etcd";

/// The root of every native key.
pub const ROOT: &str = "/micro";

/// One instance as stored in etcd; see the [module docs](self).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The service name.
    pub name: String,
    /// `host:port` to dial.
    pub address: String,
    /// Relative weight, 1 when missing.
    #[serde(default = "one")]
    pub weight: u32,
    /// The group, empty when missing.
    #[serde(default)]
    pub group: String,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

/// The native key/value layout; see the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeEtcdFormat;

impl NativeEtcdFormat {
    /// The lease TTLs `?ttl=` may ask for: 1 s to a day (a bare number is seconds; the
    /// lease keeper rounds up to whole seconds, at least 2).
    pub const TTL_RANGE: RangeInclusive<Duration> =
        Duration::from_secs(1)..=Duration::from_secs(24 * 3600);

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

    /// Reads a value back; `group` keeps only that group.
    pub fn decode(
        value: &[u8],
        group: Option<&str>,
    ) -> std::result::Result<Option<Endpoint>, String> {
        let instance: Instance = serde_json::from_slice(value)
            .map_err(|e| format!("not a native instance JSON: {e}"))?;
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
/// use driver_core::Driver;
/// let d = driver_etcd::EtcdDriver;
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
        vec![(SCHEME, Arc::new(NativeResolver))]
    }

    fn registrars(&self) -> Vec<(&'static str, Arc<dyn Registrar>)> {
        vec![(SCHEME, Arc::new(NativeRegistrar))]
    }

    fn parse_server_method(&self, uri: &str) -> Result<ServerMethod> {
        parse_scheme_url(uri)
    }
}

driver_core::register_driver!(EtcdDriver);

/// Resolves native targets.
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeResolver;

impl Resolver for NativeResolver {
    fn resolve(&self, target: &Target, updates: SnapshotSender) -> Result<()> {
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

/// Registers native instances.
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeRegistrar;

#[async_trait]
impl Registrar for NativeRegistrar {
    async fn register(&self, target: &Target, endpoint: &str) -> Result<Registration> {
        let t = EtcdTarget::from_target(target)?;
        let bad = |reason: String| Error::BadTarget {
            target: target.to_string(),
            reason,
        };
        let weight = match target.query("weight") {
            None => 1,
            Some(w) => w
                .parse::<u32>()
                .map_err(|_| bad(format!("weight `{w}` is not a whole number")))?,
        };
        let ttl = target
            .query_duration("ttl", &NativeEtcdFormat::TTL_RANGE)?
            .unwrap_or(LeaseKeeper::DEFAULT_TTL);
        HostPort::parse_endpoint(endpoint)?;
        let instance = Instance {
            name: t.key.clone(),
            address: endpoint.to_string(),
            weight,
            group: target.query("group").unwrap_or_default().to_string(),
            metadata: target
                .query_pairs()
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("meta.")?.to_string(), v.clone())))
                .collect(),
        };
        let client = shared_client(&t.config).await?;
        let key = NativeEtcdFormat::key(&instance);
        LeaseKeeper::new(
            client,
            move |_| key.clone(),
            NativeEtcdFormat::value(&instance),
        )
        .ttl(ttl)
        .start(target.as_str(), endpoint)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
