//! kratos' service instance and its endpoint URLs: [`KratosInstance`], [`Security`].
//! A client takes an instance's first gRPC endpoint whose security (`grpc://`
//! plaintext; `grpcs://` or `grpc://…?isSecure=true` TLS) matches its own; instances
//! without one are left out. The JSON and the kratos versions: `docs/kratos.md`.

use std::collections::BTreeMap;

pub use dtmdriver_core::address::EndpointUrl;
use dtmdriver_core::resolve::Endpoint;
use dtmdriver_core::warn_once;
use dtmdriver_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// One kratos service instance, as kratos marshals `registry.ServiceInstance`; a
/// missing field reads as empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KratosInstance {
    /// The instance id (a UUID; dtm's kratos driver v0.0.10 leaves it empty).
    pub id: String,
    /// The service name clients resolve.
    pub name: String,
    /// The version (`""` when unset).
    pub version: String,
    /// Free-form metadata; `null` when unset, as Go marshals a nil map.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Endpoint URLs, e.g. `grpc://10.0.0.5:9000`.
    pub endpoints: Vec<String>,
}

/// Whether a client dials with TLS; it decides which endpoint of an instance is used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Security {
    /// Plaintext: `grpc://host:port` without `isSecure=true`.
    #[default]
    Plaintext,
    /// TLS: `grpcs://host:port` or `grpc://host:port?isSecure=true`.
    Tls,
}

impl Security {
    /// The security of a gRPC endpoint URL; `None` for other transports.
    pub fn of(url: &EndpointUrl) -> Option<Self> {
        // kratos ≤ 2.2: `strconv.ParseBool(u.Query().Get("isSecure"))`, the first value
        // of the key as spelled, where 1, t, T, TRUE, true and True are true.
        let is_secure = url
            .query_value("isSecure")
            .is_some_and(|v| matches!(&*v, "1" | "t" | "T" | "TRUE" | "true" | "True"));
        match (url.scheme.as_str(), is_secure) {
            ("grpcs", _) | ("grpc", true) => Some(Self::Tls),
            ("grpc", false) => Some(Self::Plaintext),
            _ => None,
        }
    }
}

/// The endpoint URLs to register for dtm's `EndPoint`: one or more comma-separated
/// `grpc://host:port`, `grpcs://host:port`, `grpc://host:port?isSecure=true` (or
/// `http(s)://` for a kratos HTTP server); a bare `host:port` is `grpc://host:port`,
/// with a log line. A wildcard host is refused.
pub fn endpoint_urls(endpoint: &str) -> Result<Vec<String>> {
    let refuse = |why: String| Error::bad_endpoint(endpoint, why);
    let mut urls = Vec::new();
    for part in endpoint.split(',').map(str::trim) {
        let url = match part {
            "" => {
                return Err(refuse(
                    "an endpoint is empty; write grpc://host:port[,grpcs://host:port]".into(),
                ));
            }
            url if url.contains("://") => url.to_string(),
            addr => {
                tracing::info!(
                    endpoint = addr,
                    "kratos endpoints carry a scheme; registering grpc://{addr}"
                );
                format!("grpc://{addr}")
            }
        };
        let parsed = EndpointUrl::parse(&url).map_err(refuse)?;
        if !matches!(parsed.scheme.as_str(), "grpc" | "grpcs" | "http" | "https") {
            let scheme = parsed.scheme;
            return Err(refuse(format!(
                "scheme `{scheme}` is not one kratos clients dial; use grpc://, grpcs:// (or grpc://host:port?isSecure=true), http:// or https://"
            )));
        }
        if matches!(parsed.addr.host(), "0.0.0.0" | "::") {
            return Err(refuse(format!(
                "`{url}` is a wildcard listen address; register the address clients dial, e.g. the machine's IP"
            )));
        }
        urls.push(url);
    }
    Ok(urls)
}

impl KratosInstance {
    /// The endpoint a client with `security` dials: the `host:port` of the first
    /// matching gRPC endpoint URL (one that is not `scheme://host:port` is skipped with
    /// a [`warn_once!`]), with weight from metadata `weight` and the metadata, `version`
    /// and `id` as endpoint metadata. `None` when no endpoint matches.
    pub fn endpoint(&self, security: Security) -> Option<Endpoint> {
        let (id, name) = (&self.id, &self.name);
        let url = self.endpoints.iter().find_map(|e| match EndpointUrl::parse(e) {
            Ok(u) => (Security::of(&u) == Some(security)).then_some(u),
            Err(why) => {
                let subject = format!("kratos instance {id} endpoint {e}");
                warn_once!(subject, why, %id, %name, %why, "skipping a kratos endpoint URL that cannot be dialled");
                None
            }
        });
        let Some(url) = url else {
            tracing::debug!(%id, endpoints = ?self.endpoints, ?security, "kratos instance has no gRPC endpoint for this client");
            return None;
        };
        let mut metadata = self.metadata.clone().unwrap_or_default();
        let weight = metadata.get("weight").map(|w| (w.trim().parse::<u32>(), w));
        if let Some((Err(_), w)) = weight {
            warn_once!(format!("kratos instance {id} weight"), w, %id, %name, weight = %w, "instance metadata weight is not a whole number; using 1");
        }
        let weight = weight.and_then(|(w, _)| w.ok()).unwrap_or(1);
        metadata.insert("version".into(), self.version.clone());
        metadata.insert("id".into(), id.clone());
        let mut endpoint = Endpoint::new(url.addr.to_string()).with_weight(weight);
        endpoint.metadata = metadata;
        Some(endpoint)
    }

    /// A fresh instance id: a random (version 4) UUID, as kratos apps use.
    pub fn new_id() -> String {
        uuid::Uuid::new_v4().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(endpoints: &[&str]) -> KratosInstance {
        KratosInstance {
            id: "i1".into(),
            name: "busi".into(),
            version: "v2".into(),
            metadata: Some([("weight".to_string(), "3".to_string())].into()),
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn json_matches_kratos() {
        let mut i = instance(&["grpc://127.0.0.1:9000"]);
        i.metadata = None;
        assert_eq!(
            serde_json::to_string(&i).unwrap(),
            r#"{"id":"i1","name":"busi","version":"v2","metadata":null,"endpoints":["grpc://127.0.0.1:9000"]}"#
        );
    }

    #[test]
    fn endpoint_choice_follows_client_security() {
        let both = instance(&[
            "http://127.0.0.1:8000",
            "grpcs://127.0.0.1:9443",
            "grpc://127.0.0.1:9000",
        ]);
        let plain = both.endpoint(Security::Plaintext).unwrap();
        assert_eq!(plain.addr, "127.0.0.1:9000");
        assert_eq!(plain.weight, 3);
        assert_eq!(plain.metadata["version"], "v2");
        assert_eq!(plain.metadata["id"], "i1");
        assert_eq!(both.endpoint(Security::Tls).unwrap().addr, "127.0.0.1:9443");
        let legacy = instance(&["grpc://127.0.0.1:9443?isSecure=true"]);
        assert!(legacy.endpoint(Security::Plaintext).is_none());
        assert_eq!(
            legacy.endpoint(Security::Tls).unwrap().addr,
            "127.0.0.1:9443"
        );
        assert!(
            instance(&["http://127.0.0.1:8000"])
                .endpoint(Security::Plaintext)
                .is_none()
        );
        assert!(
            instance(&["garbage", "grpc://nohost"])
                .endpoint(Security::Plaintext)
                .is_none()
        );
        // Issue #11 item 6: URLs whose host:port nobody can dial are passed over.
        let usable = instance(&[
            "grpc://127.0.0.1:99999",
            "grpc://::1:7014",
            "grpc://not an address:1",
            "grpc:// 127.0.0.1:7016",
            "grpc://127.0.0.1:7013/x",
            "grpc://127.0.0.1:7015",
        ]);
        assert_eq!(
            usable.endpoint(Security::Plaintext).unwrap().addr,
            "127.0.0.1:7015"
        );
    }

    #[test]
    fn is_secure_reads_as_kratos_2_2_parses_it() {
        let security = |query: &str| {
            instance(&[&format!("grpc://127.0.0.1:9443?{query}")])
                .endpoint(Security::Tls)
                .is_some()
        };
        for tls in [
            "isSecure=true",
            "isSecure=1",
            "isSecure=T",
            "isSecure=TRUE",
            "a=b&isSecure=True",
        ] {
            assert!(security(tls), "{tls} is TLS");
        }
        for plain in [
            "isSecure=false",
            "isSecure=yes",
            "issecure=true",
            "isSecure=false&isSecure=true",
            "isSecure",
        ] {
            assert!(!security(plain), "{plain} is plaintext");
        }
    }

    #[test]
    fn bad_weight_counts_as_one() {
        let mut i = instance(&["grpc://[::1]:9000"]);
        i.metadata = Some([("weight".to_string(), "heavy".to_string())].into());
        let e = i.endpoint(Security::Plaintext).unwrap();
        assert_eq!((e.addr.as_str(), e.weight), ("[::1]:9000", 1));
    }

    #[test]
    fn endpoint_urls_accept_kratos_forms_and_refuse_others() {
        assert_eq!(
            endpoint_urls("grpc://127.0.0.1:9000, grpcs://127.0.0.1:9443").unwrap(),
            ["grpc://127.0.0.1:9000", "grpcs://127.0.0.1:9443"]
        );
        assert_eq!(
            endpoint_urls("grpc://127.0.0.1:9000?isSecure=true").unwrap(),
            ["grpc://127.0.0.1:9000?isSecure=true"]
        );
        for bad in [
            "",
            "grpc://",
            "grpc://h",
            "a:1,,b:2",
            "tcp://h:1",
            "grpc://[::]:1",
            "0.0.0.0:9000",
            "grpc://h:0",
            "grpc://127.0.0.1:99999",
            "grpc://::1:7014",
            "grpc://not an address:1",
            "grpc://127.0.0.1:1/x",
        ] {
            let e = endpoint_urls(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("`{bad}`")), "{bad}: {e}");
        }
    }

    #[test]
    fn ids_are_v4_uuids() {
        let a = KratosInstance::new_id();
        assert_ne!(a, KratosInstance::new_id());
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'), "{a}");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{a}");
    }
}
