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
//!   that changed plus a logarithm of the number of slices;
//! * what a resolver publishes is keyed by slice and address ([`keyed_changes`]): from
//!   one index to the next, only the slices that changed (a slice left as it was is the
//!   same `Arc`) give changes, found by walking the two indexes together and skipping
//!   the parts they share (`SortedMap::diff`), so a change costs the changed slices'
//!   sizes plus a logarithm of the number of slices, never a pass over every address.

use std::sync::Arc;

use dtmdriver_core::address::HostPort;
use dtmdriver_core::resolve::Endpoint;
use dtmdriver_core::sorted_map::SortedMap;
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
pub type SliceIndex = SortedMap<String, Arc<ServiceSlice>>;

/// The port a target without one dials: the first port of the first slice (by name)
/// that has one.
pub fn default_port(index: &SliceIndex) -> Option<u16> {
    index.values().find_map(|s| s.first_port())
}

/// Keyed changes (`SnapshotSender::apply`) of the endpoints on `port`: one key per
/// slice and ready address (`SLICE/ADDRESS`).
pub type KeyedChanges = Vec<(String, Option<Endpoint>)>;

/// The keyed changes that turn the endpoints of `old` (the index and port published
/// last; `None` if nothing was) into those of `new` on `port`, and the addresses of
/// changed slices that do not form `host:port` (left out). With the port unchanged,
/// only slices that are not the same `Arc` in both indexes are read, the shared parts
/// of the two indexes skipped whole; a new port changes every key.
pub fn keyed_changes(
    old: Option<(&SliceIndex, u16)>,
    new: &SliceIndex,
    port: u16,
) -> (KeyedChanges, Vec<String>) {
    use std::collections::HashSet;

    use dtmdriver_core::sorted_map::Diff;

    let key = |slice: &str, address: &str| format!("{slice}/{address}");
    let mut out = KeyedChanges::new();
    let mut bad = Vec::new();
    let mut put = |out: &mut KeyedChanges, slice: &str, address: &String| match HostPort::new(
        address, port,
    ) {
        Ok(a) => out.push((key(slice, address), Some(Endpoint::new(a.to_string())))),
        Err(why) => bad.push(format!("`{address}`: {why}")),
    };
    let gone = |out: &mut KeyedChanges, slice: &str, address: &String| {
        out.push((key(slice, address), None));
    };
    let old = match old {
        Some((old, old_port)) if old_port == port => old,
        Some((old, _)) => {
            for (name, slice) in old.iter() {
                slice.ready.iter().for_each(|a| gone(&mut out, name, a));
            }
            &SliceIndex::new()
        }
        None => &SliceIndex::new(),
    };
    // Only the slices that are not the same `Arc` in both are read: O(C log S) for C
    // changed slices of S (`SortedMap::diff`).
    let same = |(_, a): (&String, &Arc<ServiceSlice>), (_, b): (&String, &Arc<ServiceSlice>)| {
        Arc::ptr_eq(a, b)
    };
    old.diff(new, same, |d| match d {
        Diff::Removed(name, slice) => slice.ready.iter().for_each(|a| gone(&mut out, name, a)),
        Diff::Added(name, slice) => slice.ready.iter().for_each(|a| put(&mut out, name, a)),
        Diff::Changed((name, before), (_, after)) => {
            let kept: HashSet<&String> = after.ready.iter().collect();
            let had: HashSet<&String> = before.ready.iter().collect();
            for a in before.ready.iter().filter(|a| !kept.contains(a)) {
                gone(&mut out, name, a);
            }
            for a in after.ready.iter().filter(|a| !had.contains(a)) {
                put(&mut out, name, a);
            }
        }
    });
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

    /// The addresses `index` gives on `port`, as its first publication puts them, in
    /// slice-name order.
    fn addrs(index: &SliceIndex, port: u16) -> Vec<String> {
        keyed_changes(None, index, port)
            .0
            .into_iter()
            .filter_map(|(_, e)| e.map(|e| e.addr))
            .collect()
    }

    #[test]
    fn ready_addresses_of_every_slice_in_name_order_dual_stack_bracketed() {
        let mut index = SliceIndex::new();
        index.insert(
            "svc-v6".into(),
            Arc::new(ServiceSlice::decode(&slice(
                &[("fd00::1", Some(true)), ("fd00::2", Some(false))],
                &[Some(81)],
            ))),
        );
        index.insert(
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
        index.insert(
            "svc-a".into(),
            Arc::new(ServiceSlice::decode(&slice(&[], &[Some(7)]))),
        );
        assert_eq!(default_port(&index), Some(7));
        assert_eq!(default_port(&SliceIndex::new()), None);
    }

    #[test]
    fn addresses_that_are_not_hosts_are_reported() {
        let mut index = SliceIndex::new();
        index.insert(
            "s".into(),
            Arc::new(ServiceSlice::decode(&slice(
                &[("10.0.0.1", None), ("not a host", None)],
                &[],
            ))),
        );
        let (ok, bad) = keyed_changes(None, &index, 80);
        assert_eq!(ok.len(), 1);
        assert!(bad[0].contains("not a host"), "{bad:?}");
    }

    fn decoded(ips: &[&str]) -> Arc<ServiceSlice> {
        let ips: Vec<(&str, Option<bool>)> = ips.iter().map(|ip| (*ip, None)).collect();
        Arc::new(ServiceSlice::decode(&slice(&ips, &[Some(80)])))
    }

    /// The changes, sorted, as `key=addr` or `key gone`.
    fn shown(changes: KeyedChanges) -> Vec<String> {
        let mut shown: Vec<String> = changes
            .into_iter()
            .map(|(k, e)| match e {
                Some(e) => format!("{k}={}", e.addr),
                None => format!("{k} gone"),
            })
            .collect();
        shown.sort_unstable();
        shown
    }

    #[test]
    fn changes_come_from_the_changed_slices_alone() {
        let mut old = SliceIndex::new();
        old.insert("a".into(), decoded(&["10.0.0.1", "10.0.0.2"]));
        old.insert("b".into(), decoded(&["10.0.1.1"]));
        old.insert("c".into(), decoded(&["10.0.2.1"]));
        let mut new = old.clone();
        // Nothing changed: no change, whatever the slices hold.
        assert!(keyed_changes(Some((&old, 80)), &new, 80).0.is_empty());
        // One slice replaced (one address gone, one new), one removed, one added.
        new.insert("a".into(), decoded(&["10.0.0.2", "10.0.0.3"]));
        new.remove("c");
        new.insert("d".into(), decoded(&["10.0.3.1"]));
        let (changes, bad) = keyed_changes(Some((&old, 80)), &new, 80);
        assert!(bad.is_empty());
        assert_eq!(
            shown(changes),
            [
                "a/10.0.0.1 gone",
                "a/10.0.0.3=10.0.0.3:80",
                "c/10.0.2.1 gone",
                "d/10.0.3.1=10.0.3.1:80",
            ]
        );
        // A slice whose content is equal but decoded anew (a re-list) changes nothing.
        let mut relisted = new.clone();
        relisted.insert("b".into(), decoded(&["10.0.1.1"]));
        assert!(keyed_changes(Some((&new, 80)), &relisted, 80).0.is_empty());
        // Another port: every key changes.
        let (changes, _) = keyed_changes(Some((&new, 80)), &new, 81);
        let shown = shown(changes);
        assert_eq!(shown.len(), 8, "{shown:?}");
        assert!(shown.contains(&"b/10.0.1.1=10.0.1.1:81".to_string()));
        assert!(shown.contains(&"b/10.0.1.1 gone".to_string()));
    }

    #[test]
    fn published_through_a_sender_the_changes_give_the_index_s_set() {
        use dtmdriver_core::resolve::SnapshotSender;
        let (tx, rx) = SnapshotSender::channel();
        let mut index = SliceIndex::new();
        let mut published: Option<SliceIndex> = None;
        let step = |index: &SliceIndex, published: &mut Option<SliceIndex>| {
            tx.apply(keyed_changes(published.as_ref().map(|p| (p, 80)), index, 80).0);
            *published = Some(index.clone());
            let mut got: Vec<String> = rx
                .borrow()
                .endpoints
                .as_ref()
                .expect("resolved")
                .iter()
                .map(|e| e.addr.clone())
                .collect();
            got.sort_unstable();
            let mut want = addrs(index, 80);
            want.sort_unstable();
            want.dedup();
            assert_eq!(got, want);
        };
        for round in 0..40u32 {
            let name = format!("s{}", round % 7);
            let ips: Vec<String> = (0..(round % 5))
                .map(|i| format!("10.1.{}.{}", (round + i) % 3, i))
                .collect();
            let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
            if round % 6 == 5 {
                index.remove(&name);
            } else {
                index.insert(name, decoded(&ips));
            }
            step(&index, &mut published);
        }
    }
}
