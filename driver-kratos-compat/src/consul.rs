//! kratos' consul format (`contrib/registry/consul`) on the consul engine of
//! `dtmdriver-consul`: [`KratosConsulFormat`]. Registers the instance with its endpoints
//! as tagged addresses, a TCP check per endpoint and a TTL check kept passing every
//! 10 s; resolves passing instances by blocking health queries. The field-by-field
//! layout and our one deliberate difference (checks start passing): `docs/kratos.md`.

use std::time::Duration;

use dtmdriver_consul::{
    AgentServiceCheck, AgentServiceRegistration, AgentTcpCheck, ConsulTarget, HealthQuery,
    ServiceAddress, ServiceEntry, ServiceExtras, ServiceKeeper, consul_duration, resolve_each,
};
use dtmdriver_core::resolve::{Endpoint, SnapshotSender};
use dtmdriver_core::{Error, Registration, Result, Target};

use crate::instance::{EndpointUrl, KratosInstance, Security};

/// kratos' consul layout; see the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct KratosConsulFormat;

impl KratosConsulFormat {
    /// Interval of the TCP checks and of the TTL heartbeat.
    pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);
    /// Timeout of one TCP check.
    pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
    /// TTL of the heartbeat check (twice the interval).
    pub const TTL: Duration = Duration::from_secs(20);
    /// How long a check may stay critical before consul removes the service.
    pub const DEREGISTER_AFTER: Duration = Duration::from_secs(600);

    /// The agent registration of `instance` and its extras (tagged addresses, TCP
    /// checks); the error names an endpoint that is not `scheme://host:port`.
    pub fn registration(
        instance: &KratosInstance,
    ) -> Result<(AgentServiceRegistration, ServiceExtras)> {
        let mut extras = ServiceExtras::default();
        let mut first = None;
        for raw in &instance.endpoints {
            let url = EndpointUrl::parse(raw).map_err(|reason| Error::bad_endpoint(raw, reason))?;
            let port = url.addr.port();
            let address = raw.clone();
            extras
                .tagged_addresses
                .insert(url.scheme.clone(), ServiceAddress { address, port });
            extras.checks.push(AgentTcpCheck {
                tcp: url.addr.to_string(),
                interval: consul_duration(Self::CHECK_INTERVAL),
                timeout: consul_duration(Self::CHECK_TIMEOUT),
                status: "passing".into(),
                deregister_critical_service_after: consul_duration(Self::DEREGISTER_AFTER),
            });
            first.get_or_insert(url.addr);
        }
        let Some(first) = first else {
            let why = "a kratos instance needs at least one endpoint, e.g. grpc://host:port";
            return Err(Error::bad_endpoint("", why));
        };
        let registration = AgentServiceRegistration {
            id: instance.id.clone(),
            name: instance.name.clone(),
            tags: vec![format!("version={}", instance.version)],
            address: first.host().to_string(),
            port: first.port(),
            meta: instance.metadata.clone().unwrap_or_default(),
            weights: None,
            check: AgentServiceCheck::service_ttl(&instance.id, Self::TTL, Self::DEREGISTER_AFTER),
        };
        Ok((registration, extras))
    }

    /// The kratos instance of one health entry, as kratos' consul registry reads it.
    pub fn instance(entry: &ServiceEntry) -> KratosInstance {
        let service = &entry.service;
        let mut version = entry
            .tags()
            .iter()
            .filter_map(|t| t.strip_prefix("version="));
        let mut endpoints: Vec<String> = entry
            .registered_tagged_addresses()
            .map(|(_, a)| a.address.clone())
            .collect();
        if endpoints.is_empty() && !service.address.is_empty() && service.port != 0 {
            endpoints.push(format!("http://{}:{}", service.address, service.port));
        }
        KratosInstance {
            id: service.id.clone(),
            name: service.service.clone(),
            version: version.next_back().unwrap_or_default().to_string(),
            metadata: service.meta.clone(),
            endpoints,
        }
    }

    /// The endpoint of one health entry for a client with `security`, if it has one.
    pub fn decode(entry: &ServiceEntry, security: Security) -> Option<Endpoint> {
        Self::instance(entry).endpoint(security)
    }
}

/// Follows the passing instances of the service of `target` (`consul://agent/name`).
pub(crate) fn resolve(target: &Target, security: Security, updates: SnapshotSender) -> Result<()> {
    let mut query = HealthQuery::from_target(target)?;
    query.passing_only = true;
    resolve_each(
        &query,
        move |e| KratosConsulFormat::decode(e, security),
        updates,
    );
    Ok(())
}

/// Registers `instance(name)` with the agent of `target`, heartbeating every 10 s.
pub(crate) async fn register(
    target: &Target,
    label: &str,
    endpoint: &str,
    instance: impl FnOnce(&str) -> Result<KratosInstance>,
) -> Result<Registration> {
    let t = ConsulTarget::from_target(target)?;
    let (registration, extras) = KratosConsulFormat::registration(&instance(&t.service)?)?;
    ServiceKeeper::new(t.config, registration, KratosConsulFormat::CHECK_INTERVAL)
        .extras(extras)
        .start(label, endpoint)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_matches_kratos() {
        let i = KratosInstance {
            id: "id1".into(),
            name: "busi".into(),
            version: "v3".into(),
            metadata: Some([("weight".to_string(), "2".to_string())].into()),
            endpoints: vec![
                "grpc://127.0.0.1:9000".into(),
                "grpcs://127.0.0.1:9443".into(),
            ],
        };
        let (r, extras) = KratosConsulFormat::registration(&i).unwrap();
        let mut body = serde_json::to_value(&r).unwrap();
        let extra = serde_json::to_value(&extras).unwrap();
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        assert_eq!(
            body,
            serde_json::json!({
                "ID": "id1", "Name": "busi", "Tags": ["version=v3"],
                "Address": "127.0.0.1", "Port": 9000, "Meta": {"weight": "2"},
                "Check": {"CheckID": "service:id1", "TTL": "20s", "Status": "passing",
                          "DeregisterCriticalServiceAfter": "600s"},
                "TaggedAddresses": {
                    "grpc": {"Address": "grpc://127.0.0.1:9000", "Port": 9000},
                    "grpcs": {"Address": "grpcs://127.0.0.1:9443", "Port": 9443}
                },
                "Checks": [
                    {"TCP": "127.0.0.1:9000", "Interval": "10s", "Timeout": "5s",
                     "Status": "passing", "DeregisterCriticalServiceAfter": "600s"},
                    {"TCP": "127.0.0.1:9443", "Interval": "10s", "Timeout": "5s",
                     "Status": "passing", "DeregisterCriticalServiceAfter": "600s"}
                ]
            })
        );
    }

    #[test]
    fn decoding_reads_tagged_addresses_like_kratos() {
        let entry: ServiceEntry = serde_json::from_value(serde_json::json!({
            "Node": {"Node": "n", "Address": "127.0.0.1"},
            "Service": {"ID": "id1", "Service": "busi", "Tags": ["version=v3"],
                "Address": "127.0.0.1", "Port": 9000, "Meta": {"weight": "2"},
                "TaggedAddresses": {
                    "lan_ipv4": {"Address": "127.0.0.1", "Port": 9000},
                    "grpc": {"Address": "grpc://127.0.0.1:9000", "Port": 9000}
                }}
        }))
        .unwrap();
        let i = KratosConsulFormat::instance(&entry);
        assert_eq!(i.version, "v3");
        assert_eq!(i.endpoints, ["grpc://127.0.0.1:9000"]);
        let e = KratosConsulFormat::decode(&entry, Security::Plaintext).unwrap();
        assert_eq!((e.addr.as_str(), e.weight), ("127.0.0.1:9000", 2));
        assert_eq!(e.metadata["version"], "v3");
        assert!(KratosConsulFormat::decode(&entry, Security::Tls).is_none());
        // A go-zero style registration (no tagged addresses) is http:// to kratos:
        // invisible to gRPC clients.
        let gozero: ServiceEntry = serde_json::from_value(serde_json::json!({
            "Node": {"Node": "n", "Address": "127.0.0.1"},
            "Service": {"ID": "busi-127.0.0.1-9000", "Service": "busi", "Tags": ["tag", "rpc"],
                "Address": "127.0.0.1", "Port": 9000, "TaggedAddresses": null}
        }))
        .unwrap();
        assert_eq!(
            KratosConsulFormat::instance(&gozero).endpoints,
            ["http://127.0.0.1:9000"]
        );
        assert!(KratosConsulFormat::decode(&gozero, Security::Plaintext).is_none());
    }
}
