//! One instance of a consul health answer as the resolvers read it: [`ServiceEntry`]
//! (`GET /v1/health/service/<name>`, the fields we use), with the address to dial, the
//! tags, metadata and tagged addresses the formats read, and the worst check status.
//!
//! Contract: an entry decodes from consul's JSON whatever of these fields it lacks (a
//! missing one reads as empty); [`ServiceEntry::dialable_addr`] is the one rule every
//! format applies to an instance no client can dial (left out, said once). The watcher
//! that fetches the answers is [`crate::watch`].

use std::collections::BTreeMap;

use dtmdriver_core::address::HostPort;
use dtmdriver_core::warn_once;
use serde::Deserialize;

use crate::registration::{ServiceAddress, Weights};

/// One instance in a health answer (the fields we use).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    /// The node the instance runs on.
    pub node: Node,
    /// The instance.
    pub service: AgentService,
    /// Its checks (node and service checks).
    #[serde(default)]
    pub checks: Option<Vec<HealthCheck>>,
}

/// A node in a health answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    /// The node name.
    #[serde(default)]
    pub node: String,
    /// The node's address, used when the service has none.
    #[serde(default)]
    pub address: String,
}

/// A service instance in a health answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    /// The instance id.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// The service name.
    #[serde(default)]
    pub service: String,
    /// Tags (consul may send `null`).
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// The address; empty means the node's.
    #[serde(default)]
    pub address: String,
    /// The port.
    #[serde(default)]
    pub port: u16,
    /// Metadata (consul may send `null`).
    #[serde(default)]
    pub meta: Option<BTreeMap<String, String>>,
    /// consul's weights.
    #[serde(default)]
    pub weights: Option<Weights>,
    /// Addresses by tag (consul may send `null`); kratos keeps its endpoint URLs here.
    #[serde(default)]
    pub tagged_addresses: Option<BTreeMap<String, ServiceAddress>>,
}

/// One check in a health answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    /// The check id.
    #[serde(rename = "CheckID", default)]
    pub check_id: String,
    /// `passing`, `warning` or `critical`.
    #[serde(default)]
    pub status: String,
}

impl ServiceEntry {
    /// `host:port` to dial: the service address, else the node address (IPv6 in
    /// brackets), checked by [`HostPort`]. The error says why the instance cannot be
    /// dialled (no address, no port, an address that is not a host).
    pub fn addr(&self) -> std::result::Result<String, String> {
        let host = if self.service.address.is_empty() {
            &self.node.address
        } else {
            &self.service.address
        };
        if host.is_empty() {
            return Err("the instance has no Address and its node none either".into());
        }
        HostPort::new(host, self.service.port)
            .map(|a| a.to_string())
            .map_err(|why| format!("Address and Port do not form host:port: {why}"))
    }

    /// [`addr`](Self::addr), or `None` with a warning naming the instance and why it
    /// cannot be dialled: what every format's decoder does with such an entry. The
    /// warning is given once per instance and reason in the process (every answer
    /// holds the whole service; see [`warn_once!`]), at DEBUG after that.
    pub fn dialable_addr(&self) -> Option<String> {
        let id = &self.service.id;
        self.addr()
            .inspect_err(|why| {
                let subject = format!("consul instance {id}");
                warn_once!(subject, why, %id, %why, "skipping a consul instance that cannot be dialled");
            })
            .ok()
    }

    /// The tagged addresses the registrant wrote, by tag: all but those consul fills in
    /// itself (`lan_ipv4`, `wan_ipv4`, `lan_ipv6`, `wan_ipv6`).
    pub fn registered_tagged_addresses(&self) -> impl Iterator<Item = (&str, &ServiceAddress)> {
        const CONSUL_OWN: [&str; 4] = ["lan_ipv4", "wan_ipv4", "lan_ipv6", "wan_ipv6"];
        self.service
            .tagged_addresses
            .iter()
            .flatten()
            .filter(|(tag, _)| !CONSUL_OWN.contains(&tag.as_str()))
            .map(|(tag, a)| (tag.as_str(), a))
    }

    /// The tags, empty when consul sent none.
    pub fn tags(&self) -> &[String] {
        self.service.tags.as_deref().unwrap_or_default()
    }

    /// One metadata value.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.service.meta.as_ref()?.get(key).map(String::as_str)
    }

    /// The worst status of the instance's checks (`passing` when it has none).
    pub fn status(&self) -> &'static str {
        let checks = self.checks.as_deref().unwrap_or_default();
        if checks.iter().any(|c| c.status == "critical") {
            "critical"
        } else if checks.iter().any(|c| c.status == "warning") {
            "warning"
        } else {
            "passing"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_fall_back_to_the_node_and_bracket_ipv6() {
        let mut e = ServiceEntry::default();
        e.node.address = "10.0.0.1".into();
        e.service.port = 80;
        assert_eq!(e.addr().as_deref(), Ok("10.0.0.1:80"));
        e.service.address = "::1".into();
        assert_eq!(e.addr().as_deref(), Ok("[::1]:80"));
        e.service.port = 0;
        assert!(e.addr().unwrap_err().contains("no port"));
    }

    /// Issue #11 item 6: consul's `Address` was formatted into an endpoint whatever it
    /// held.
    #[test]
    fn addresses_that_are_not_hosts_are_refused_with_the_reason() {
        let mut e = ServiceEntry::default();
        e.service.port = 7103;
        for (address, why) in [
            ("not an address", "characters a host name cannot have"),
            ("http://127.0.0.1", "not an IPv6 address"),
            ("127.0.0.1:80", "not an IPv6 address"),
            ("", "no Address"),
        ] {
            e.service.address = address.into();
            let err = e.addr().expect_err(address);
            assert!(err.contains(why), "{address}: {err}");
        }
    }

    #[test]
    fn status_is_the_worst_check() {
        let check = |s: &str| HealthCheck {
            check_id: "c".into(),
            status: s.into(),
        };
        let mut e = ServiceEntry::default();
        assert_eq!(e.status(), "passing");
        e.checks = Some(vec![check("passing"), check("warning")]);
        assert_eq!(e.status(), "warning");
        e.checks = Some(vec![check("critical"), check("warning")]);
        assert_eq!(e.status(), "critical");
    }

    #[test]
    fn null_tags_and_meta_decode() {
        let e: Vec<ServiceEntry> = serde_json::from_str(
            r#"[{"Node":{"Node":"n","Address":"1.2.3.4"},"Service":{"ID":"i","Service":"s","Tags":null,"Address":"","Port":5,"Meta":null},"Checks":null}]"#,
        )
        .unwrap();
        assert!(e[0].tags().is_empty());
        assert_eq!(e[0].meta("x"), None);
        assert_eq!(e[0].addr().as_deref(), Ok("1.2.3.4:5"));
    }
}
