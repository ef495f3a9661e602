//! kratos' etcd format (`contrib/registry/etcd`) on the etcd engine of `dtmdriver-etcd`:
//! [`KratosEtcdFormat`]: `/microservices/<name>/<id>` = the [`KratosInstance`] JSON under
//! a 15 s lease (a registration's `?ttl=`); a garbage value is skipped with a warning (kratos fails the whole read).
//! Details: `docs/kratos.md`.

use std::sync::Arc;
use std::time::Duration;

use dtmdriver_core::resolve::{Endpoint, SnapshotSender};
use dtmdriver_core::{Registration, Result, Target};
use dtmdriver_etcd::{EtcdTarget, LeaseKeeper, resolve_prefix};

use crate::instance::{KratosInstance, Security};

/// kratos' etcd layout; see the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct KratosEtcdFormat;

impl KratosEtcdFormat {
    /// kratos' default namespace, the root of every key.
    pub const NAMESPACE: &'static str = "/microservices";

    /// kratos' lease TTL.
    pub const TTL: Duration = Duration::from_secs(15);

    /// The key of an instance.
    pub fn key(instance: &KratosInstance) -> String {
        format!("{}/{}/{}", Self::NAMESPACE, instance.name, instance.id)
    }

    /// The prefix a client of `name` reads (no trailing slash, as kratos).
    pub fn prefix(name: &str) -> String {
        format!("{}/{name}", Self::NAMESPACE)
    }

    /// The value of an instance: its JSON.
    pub fn value(instance: &KratosInstance) -> String {
        serde_json::to_string(instance).unwrap_or_default()
    }

    /// Reads one value under the prefix of `name`: `Ok(None)` for another service
    /// sharing the prefix (`busi2` under `busi`) or an instance with no endpoint for
    /// `security`; `Err` for garbage.
    pub fn decode(
        name: &str,
        value: &[u8],
        security: Security,
    ) -> std::result::Result<Option<Endpoint>, String> {
        let instance: KratosInstance = serde_json::from_slice(value)
            .map_err(|e| format!("not a kratos instance JSON: {e}"))?;
        Ok((instance.name == name)
            .then(|| instance.endpoint(security))
            .flatten())
    }
}

/// Follows `name` in the etcd cluster of `target` (an `etcd://hosts/name` target).
pub(crate) fn resolve(target: &Target, security: Security, updates: SnapshotSender) -> Result<()> {
    let t = EtcdTarget::from_target(target)?;
    let prefix = KratosEtcdFormat::prefix(&t.key);
    let decode = Arc::new(move |_: &str, v: &[u8]| KratosEtcdFormat::decode(&t.key, v, security));
    resolve_prefix(&t.config, &prefix, decode, updates);
    Ok(())
}

/// Registers `instance(name)` in the etcd cluster of `target` under a lease of `ttl`,
/// else kratos' 15 s.
pub(crate) async fn register(
    target: &Target,
    label: &str,
    endpoint: &str,
    ttl: Option<Duration>,
    instance: impl FnOnce(&str) -> Result<KratosInstance>,
) -> Result<Registration> {
    let t = EtcdTarget::from_target(target)?;
    let instance = instance(&t.key)?;
    let key = KratosEtcdFormat::key(&instance);
    let value = KratosEtcdFormat::value(&instance);
    let ttl = ttl.unwrap_or(KratosEtcdFormat::TTL);
    LeaseKeeper::register(&t.config, move |_| key.clone(), value, ttl, label, endpoint).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_decoding_match_kratos() {
        let i = KratosInstance {
            id: "7c1e".into(),
            name: "busi".into(),
            version: "v1".into(),
            metadata: None,
            endpoints: vec!["grpc://127.0.0.1:9000".into()],
        };
        assert_eq!(KratosEtcdFormat::key(&i), "/microservices/busi/7c1e");
        assert_eq!(KratosEtcdFormat::prefix("busi"), "/microservices/busi");
        let v = KratosEtcdFormat::value(&i);
        let e = KratosEtcdFormat::decode("busi", v.as_bytes(), Security::Plaintext)
            .unwrap()
            .unwrap();
        assert_eq!(e.addr, "127.0.0.1:9000");
        assert_eq!(
            KratosEtcdFormat::decode("busi2", v.as_bytes(), Security::Plaintext).unwrap(),
            None
        );
        assert_eq!(
            KratosEtcdFormat::decode("busi", v.as_bytes(), Security::Tls).unwrap(),
            None
        );
        for garbage in [&b"127.0.0.1:9000"[..], b"", b"{\"endpoints\":7}", b"\xff"] {
            assert!(
                KratosEtcdFormat::decode("busi", garbage, Security::Plaintext).is_err(),
                "{garbage:?}"
            );
        }
        // dtm's kratos driver v0.0.10 registers with an empty id and no version.
        let dtm = br#"{"id":"","name":"busi","version":"","metadata":null,"endpoints":["grpc://localhost:36790"]}"#;
        assert_eq!(
            KratosEtcdFormat::decode("busi", dtm, Security::Plaintext)
                .unwrap()
                .unwrap()
                .addr,
            "localhost:36790"
        );
    }
}
