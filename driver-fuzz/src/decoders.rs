//! Bodies for the registry value decoders: whatever some process wrote under a prefix
//! (etcd values) or a health answer holds (consul entries) never panics a decoder, and
//! every endpoint a decoder returns is a dialable `host:port`.
//!
//! Consul bodies read the input as the JSON array of `/v1/health/service/NAME`, as the
//! engine does (`serde_json` into [`ServiceEntry`]), then decode it.

use dtmdriver_consul::{NativeConsulFormat, ServiceEntry};
use dtmdriver_core::Endpoint;
use dtmdriver_core::address::HostPort;
use dtmdriver_etcd::{Instance, NativeEtcdFormat};
use dtmdriver_gozero::{GoZeroConsulFormat, GoZeroEtcdFormat};
use dtmdriver_kratos::instance::{EndpointUrl, endpoint_urls};
use dtmdriver_kratos::{KratosConsulFormat, KratosEtcdFormat, KratosInstance, Security};

/// Asserts that a decoder gave a usable address.
fn dialable(what: &str, e: &Endpoint) {
    if let Err(why) = HostPort::parse(&e.addr) {
        panic!("{what} returned the endpoint {:?}: {why}", e.addr);
    }
}

fn entries(data: &[u8]) -> Option<Vec<ServiceEntry>> {
    serde_json::from_slice(data).ok()
}

/// [`GoZeroEtcdFormat::decode`]: an accepted value is a `host:port`, taken as
/// [`HostPort`] reads and prints it (`h:080` is `h:80`).
pub fn gozero_etcd_value(data: &[u8]) {
    if let Ok(e) = GoZeroEtcdFormat::decode(data) {
        dialable("GoZeroEtcdFormat::decode", &e);
        let written = HostPort::parse(&crate::text(data)).map(|a| a.to_string());
        assert_eq!(Ok(&e.addr), written.as_ref(), "{data:?}");
    }
}

/// [`GoZeroConsulFormat::decode`] with and without a limit: at most `limit`
/// endpoints, each dialable; the entry accessors on every entry.
pub fn gozero_consul_entries(data: &[u8]) {
    let Some(entries) = entries(data) else {
        return;
    };
    for e in &entries {
        let _ = (e.addr(), e.tags(), e.meta("weight"), e.status());
    }
    for limit in [None, Some(0), Some(1), Some(entries.len())] {
        let decoded = GoZeroConsulFormat::decode(&entries, limit);
        assert!(decoded.len() <= limit.unwrap_or(usize::MAX));
        assert!(decoded.len() <= entries.len());
        for e in &decoded {
            dialable("GoZeroConsulFormat::decode", e);
        }
    }
}

/// [`KratosEtcdFormat::decode`] for both securities, for the instance's own name and
/// another; a value that is an instance re-encodes ([`KratosEtcdFormat::value`]) to one
/// that decodes alike. The endpoint URL parsers on each URL.
pub fn kratos_etcd_value(data: &[u8]) {
    let instance: Option<KratosInstance> = serde_json::from_slice(data).ok();
    let own = instance.as_ref().map_or("busi", |i| i.name.as_str());
    for name in [own, "busi", ""] {
        for security in [Security::Plaintext, Security::Tls] {
            let first = KratosEtcdFormat::decode(name, data, security);
            if let Ok(Some(e)) = &first {
                dialable("KratosEtcdFormat::decode", e);
            }
            if let Some(i) = &instance {
                let again =
                    KratosEtcdFormat::decode(name, KratosEtcdFormat::value(i).as_bytes(), security);
                assert_eq!(
                    again, first,
                    "re-encoding the instance changed what it decodes to"
                );
            }
        }
    }
    if let Some(i) = &instance {
        kratos_urls(i);
    }
}

/// The URL parsing a kratos instance goes through.
fn kratos_urls(instance: &KratosInstance) {
    for url in &instance.endpoints {
        if let Ok(u) = EndpointUrl::parse(url) {
            assert!(HostPort::parse(&u.addr.to_string()).is_ok(), "{url:?}");
            let _ = Security::of(&u);
        }
        let _ = endpoint_urls(url);
    }
    let _ = endpoint_urls(&instance.endpoints.join(","));
}

/// [`KratosConsulFormat::decode`] for both securities and
/// [`KratosConsulFormat::instance`] of every entry: each endpoint dialable.
pub fn kratos_consul_entries(data: &[u8]) {
    let Some(entries) = entries(data) else {
        return;
    };
    for entry in &entries {
        for security in [Security::Plaintext, Security::Tls] {
            if let Some(e) = KratosConsulFormat::decode(entry, security) {
                dialable("KratosConsulFormat::decode", &e);
            }
        }
        kratos_urls(&KratosConsulFormat::instance(entry));
    }
}

/// [`NativeEtcdFormat::decode`] with no group, an empty group and the value's own
/// group: a kept endpoint is dialable with a weight of at least 1, and a value that is
/// an instance re-encodes ([`NativeEtcdFormat::value`]) to one that decodes alike.
pub fn native_etcd_value(data: &[u8]) {
    let first = NativeEtcdFormat::decode(data, None);
    if let Ok(Some(e)) = &first {
        dialable("NativeEtcdFormat::decode", e);
        assert!(e.weight >= 1, "weight {} read from {data:?}", e.weight);
    }
    let instance: Option<Instance> = serde_json::from_slice(data).ok();
    let own = instance.as_ref().map_or("", |i| i.group.as_str());
    for group in [Some(""), Some(own), Some("blue")] {
        if let Ok(Some(e)) = NativeEtcdFormat::decode(data, group) {
            dialable("NativeEtcdFormat::decode", &e);
        }
    }
    if let Some(i) = &instance {
        let again = NativeEtcdFormat::decode(NativeEtcdFormat::value(i).as_bytes(), None);
        assert_eq!(
            again, first,
            "re-encoding the instance changed what it decodes to"
        );
    }
}

/// [`NativeConsulFormat::decode`] of every entry with no group and with its own group:
/// each kept endpoint dialable.
pub fn native_consul_entries(data: &[u8]) {
    let Some(entries) = entries(data) else {
        return;
    };
    for entry in &entries {
        let own = entry.meta("group").map(str::to_string);
        for group in [None, Some(""), own.as_deref(), Some("blue")] {
            if let Some(e) = NativeConsulFormat::decode(entry, group) {
                dialable("NativeConsulFormat::decode", &e);
            }
        }
    }
}
