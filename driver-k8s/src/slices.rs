//! What an EndpointSlice says about where a service can be dialled: [`ServiceSlice`],
//! and the set of a service's slices: [`SliceIndex`].
//!
//! Contract:
//!
//! * an endpoint is used when its `conditions.ready` is `true` or absent (the API says an
//!   absent condition is unknown and is to be taken as ready); `serving` and
//!   `terminating` are not read: a terminating endpoint is never ready, so it leaves the
//!   set when its pod starts to stop, and a not-ready one that still serves is not
//!   dialled. (go-zero v1.10.3 takes every address whatever its conditions.)
//! * every address of a used endpoint is taken, of any `addressType` (`IPv4`, `IPv6`,
//!   `FQDN`): a dual-stack service has a slice per family and both are dialled; an
//!   IPv6 address is written `[addr]:port`.
//! * without a port in the target, the port is the first port of the first slice, in
//!   slice-name order, that has one (go-zero takes the first port of the first slice the
//!   apiserver lists, which lists by name).
//! * a slice is decoded once when it changes; the index is keyed by slice name and
//!   shared between snapshots (a persistent map), so a change costs the size of the slice
//!   that changed plus a logarithm of the number of slices.

use std::sync::Arc;

use dtmdriver_core::address::HostPort;
use dtmdriver_core::resolve::Endpoint;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The part of one EndpointSlice a resolver uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceSlice {
    /// The ports, in the slice's order (`None` for a port without a number).
    pub ports: Vec<Option<u16>>,
    /// The addresses of ready endpoints, in the slice's order.
    pub ready: Vec<String>,
}

impl ServiceSlice {
    /// Decodes a slice: its ports and the addresses of its ready endpoints.
    ///
    /// ```
    /// use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
    /// let endpoint = |ip: &str, ready| Endpoint {
    ///     addresses: vec![ip.into()],
    ///     conditions: Some(EndpointConditions { ready, ..Default::default() }),
    ///     ..Default::default()
    /// };
    /// let slice = EndpointSlice {
    ///     address_type: "IPv4".into(),
    ///     endpoints: vec![endpoint("10.0.0.1", Some(true)), endpoint("10.0.0.2", Some(false)), endpoint("10.0.0.3", None)],
    ///     ports: Some(vec![EndpointPort { port: Some(8080), ..Default::default() }]),
    ///     ..Default::default()
    /// };
    /// let decoded = dtmdriver_k8s::ServiceSlice::decode(&slice);
    /// assert_eq!(decoded.ready, ["10.0.0.1", "10.0.0.3"]);
    /// assert_eq!(decoded.ports, [Some(8080)]);
    /// ```
    pub fn decode(slice: &EndpointSlice) -> Self {
        let ports = slice
            .ports
            .iter()
            .flatten()
            .map(|p| p.port.and_then(|n| u16::try_from(n).ok()))
            .collect();
        let ready = slice
            .endpoints
            .iter()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
            .flat_map(|e| e.addresses.iter().cloned())
            .collect();
        Self { ports, ready }
    }

    /// The slice's first port, if it has a number.
    pub fn first_port(&self) -> Option<u16> {
        self.ports.first().copied().flatten()
    }
}

/// A service's slices by name; cheap to clone (shares its nodes).
pub type SliceIndex = rpds::RedBlackTreeMapSync<String, Arc<ServiceSlice>>;

/// The port a target without one dials: the first port of the first slice (by name)
/// that has one.
pub fn default_port(index: &SliceIndex) -> Option<u16> {
    index.values().find_map(|s| s.first_port())
}

/// The endpoints of `index` on `port`: each ready address once, in slice-name order.
/// Addresses that do not form `host:port` are left out and named in the second value.
pub fn endpoints(index: &SliceIndex, port: u16) -> (Vec<Endpoint>, Vec<String>) {
    let mut bad = Vec::new();
    let mut out = Vec::with_capacity(index.values().map(|s| s.ready.len()).sum());
    for address in index.values().flat_map(|s| s.ready.iter()) {
        match HostPort::new(address, port) {
            Ok(a) => out.push(Endpoint::new(a.to_string())),
            Err(why) => bad.push(format!("`{address}`: {why}")),
        }
    }
    (out, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{
        Endpoint as K8sEndpoint, EndpointConditions, EndpointPort,
    };

    fn slice(ips: &[(&str, Option<bool>)], ports: &[Option<i32>]) -> EndpointSlice {
        EndpointSlice {
            endpoints: ips
                .iter()
                .map(|(ip, ready)| K8sEndpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        serving: Some(true),
                        terminating: Some(!ready.unwrap_or(true)),
                    }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(
                ports
                    .iter()
                    .map(|p| EndpointPort {
                        port: *p,
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn addrs(index: &SliceIndex, port: u16) -> Vec<String> {
        endpoints(index, port)
            .0
            .into_iter()
            .map(|e| e.addr)
            .collect()
    }

    #[test]
    fn ready_addresses_of_every_slice_in_name_order_dual_stack_bracketed() {
        let mut index = SliceIndex::new_sync();
        index.insert_mut(
            "svc-v6".into(),
            Arc::new(ServiceSlice::decode(&slice(
                &[("fd00::1", Some(true)), ("fd00::2", Some(false))],
                &[Some(81)],
            ))),
        );
        index.insert_mut(
            "svc-v4".into(),
            Arc::new(ServiceSlice::decode(&slice(
                &[("10.0.0.1", None), ("10.0.0.2", Some(true))],
                &[None, Some(80)],
            ))),
        );
        assert_eq!(
            addrs(&index, 9),
            ["10.0.0.1:9", "10.0.0.2:9", "[fd00::1]:9"]
        );
        // The first slice by name has no numbered first port: the next one's counts.
        assert_eq!(default_port(&index), Some(81));
        index.insert_mut(
            "svc-a".into(),
            Arc::new(ServiceSlice::decode(&slice(&[], &[Some(7)]))),
        );
        assert_eq!(default_port(&index), Some(7));
        assert_eq!(default_port(&SliceIndex::new_sync()), None);
    }

    #[test]
    fn addresses_that_are_not_hosts_are_reported() {
        let mut index = SliceIndex::new_sync();
        index.insert_mut(
            "s".into(),
            Arc::new(ServiceSlice::decode(&slice(
                &[("10.0.0.1", None), ("not a host", None)],
                &[],
            ))),
        );
        let (ok, bad) = endpoints(&index, 80);
        assert_eq!(ok.len(), 1);
        assert!(bad[0].contains("not a host"), "{bad:?}");
    }
}
