//! [`EndpointSet`]: the endpoint set a resolver publishes, and [`SetChange`], one step
//! from one published set to the next.
//!
//! The contract is on [`EndpointSet`].

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use super::Endpoint;
use crate::sorted_map::SortedMap;

/// One step between two published sets: an address now holding this endpoint (new,
/// or with another weight or metadata), or an address gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetChange {
    /// The endpoint of this address is added or replaced.
    Put(Endpoint),
    /// The address left the set.
    Remove(String),
}

impl SetChange {
    /// The address this change is about.
    pub fn addr(&self) -> &str {
        match self {
            Self::Put(e) => &e.addr,
            Self::Remove(addr) => addr,
        }
    }
}

/// One step of [`EndpointSet::diff`]: `Ok` the endpoint an address now holds, `Err` the
/// endpoint of an address gone, each as the sets share it.
pub(crate) type SetStep<'a> = Result<&'a Arc<Endpoint>, &'a Arc<Endpoint>>;

/// A batch of more changes than this goes into a set in address order
/// ([`EndpointSet::apply_batch`]).
const SORTED_BATCH: usize = 64;

/// An endpoint ordered and looked up by its address alone; shared, so that copying a
/// node of the set on a change copies pointers, not endpoints.
#[derive(Clone, Debug)]
struct ByAddr(Arc<Endpoint>);

impl PartialEq for ByAddr {
    fn eq(&self, other: &Self) -> bool {
        self.0.addr == other.0.addr
    }
}
impl Eq for ByAddr {}
impl PartialOrd for ByAddr {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ByAddr {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.addr.cmp(&other.0.addr)
    }
}
impl Borrow<str> for ByAddr {
    fn borrow(&self) -> &str {
        &self.0.addr
    }
}

/// A persistent set of endpoints, one per address.
///
/// Contract: an `EndpointSet` holds each address once, iterates in address order
/// (byte order of the `host:port` string), and is persistent: cloning it is one
/// reference count, and a set made from another by one insertion or removal shares
/// every untouched entry with it (a [`SortedMap`], O(log N) an insertion or removal;
/// a first set is built in one pass). Two sets are equal when they hold the same
/// endpoints.
///
/// Why persistent: a resolver publishes a whole set on every change, and every
/// subscriber keeps the one it last read. With a `Vec` each change copied the set
/// (10,000 instances: about 1.3 ms of CPU a change, issue #12); with a shared tree
/// publishing costs the change, and the [`SetChange`]s beside it let a subscriber that
/// kept up apply only those.
#[derive(Clone, Default)]
pub struct EndpointSet {
    tree: SortedMap<ByAddr, ()>,
}

impl EndpointSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many endpoints the set holds.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether the set holds no endpoint.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// The endpoints in address order.
    pub fn iter(&self) -> impl Iterator<Item = &Endpoint> + '_ {
        self.tree.keys().map(|e| &*e.0)
    }

    /// The endpoints in address order, as the set shares them.
    pub(crate) fn iter_shared(&self) -> impl Iterator<Item = &Arc<Endpoint>> + '_ {
        self.tree.keys().map(|e| &e.0)
    }

    /// The endpoint of `addr`, if the set holds it.
    pub fn get(&self, addr: &str) -> Option<&Endpoint> {
        self.tree.get_key_value(addr).map(|(e, ())| &*e.0)
    }

    /// Whether the set holds `addr`.
    pub fn contains(&self, addr: &str) -> bool {
        self.tree.contains_key(addr)
    }

    /// The endpoints in address order, copied into a `Vec` (O(N): for display and
    /// tests, not for a path that runs per change).
    pub fn to_vec(&self) -> Vec<Endpoint> {
        self.iter().cloned().collect()
    }

    /// Calls `each` for every address this set and `newer` differ in, in address
    /// order: `Err(old endpoint)` for one `newer` lacks, `Ok(new endpoint)` for one it
    /// adds or holds with another weight or metadata. Two versions of one resolver's
    /// set, C changes apart, cost O(C log N) ([`SortedMap::diff`]); others O(N).
    pub(crate) fn diff<'a>(&'a self, newer: &'a Self, mut each: impl FnMut(SetStep<'a>)) {
        use crate::sorted_map::Diff;
        let same = |(a, ()): (&ByAddr, &()), (b, ()): (&ByAddr, &())| {
            Arc::ptr_eq(&a.0, &b.0) || a.0 == b.0
        };
        self.tree.diff(&newer.tree, same, |d| match d {
            Diff::Removed(e, ()) => each(Err(&e.0)),
            Diff::Added(e, ()) | Diff::Changed(_, (e, ())) => each(Ok(&e.0)),
        });
    }

    /// Whether `other` is this very set (the same tree, not just equal contents).
    pub fn ptr_eq(&self, other: &Self) -> bool {
        self.tree.ptr_eq(&other.tree)
    }

    /// Applies `change`, returning whether it changed the set (a `Put` of the
    /// endpoint already held, or a `Remove` of an address not held, changes nothing).
    pub fn apply(&mut self, change: &SetChange) -> bool {
        match change {
            SetChange::Put(endpoint) => {
                if self.get(&endpoint.addr) == Some(endpoint) {
                    return false;
                }
                self.tree.insert(ByAddr(Arc::new(endpoint.clone())), ());
                true
            }
            SetChange::Remove(addr) => self.tree.remove(addr.as_str()).is_some(),
        }
    }

    /// Applies a batch of `changes` in order, as [`apply`](Self::apply) each; the ones
    /// that changed the set. A caller with no use for those (`keep` false: a resolver's
    /// first set, which subscribers read whole) may get none back, and then the
    /// endpoints of a first batch move into the set instead of being copied.
    ///
    /// A batch of more than [`SORTED_BATCH`] goes in sorted by address (stable: the
    /// changes of one address keep their order), so each insertion walks the path the
    /// last one warmed, where in key order each missed the cache at every level; into
    /// an empty set, puts of distinct addresses then build it in one pass.
    pub(crate) fn apply_batch(
        &mut self,
        mut changes: Vec<SetChange>,
        keep: bool,
    ) -> Vec<SetChange> {
        if changes.len() > SORTED_BATCH {
            changes.sort_by(|a, b| a.addr().cmp(b.addr()));
            if self.fills_sorted(&changes) {
                if !keep {
                    self.fill_sorted(changes);
                    return Vec::new();
                }
                self.fill_sorted(changes.iter().cloned());
                return changes;
            }
        }
        changes.into_iter().filter(|c| self.apply(c)).collect()
    }

    /// Whether [`fill_sorted`](Self::fill_sorted) may take `changes`: this set is
    /// empty and they are all puts of distinct addresses in increasing order (a first
    /// batch, sorted).
    fn fills_sorted(&self, changes: &[SetChange]) -> bool {
        self.is_empty()
            && changes.iter().all(|c| matches!(c, SetChange::Put(_)))
            && changes.windows(2).all(|w| w[0].addr() < w[1].addr())
    }

    /// Fills this set with the endpoints put by changes that
    /// [`fills_sorted`](Self::fills_sorted) accepted, in one pass
    /// ([`SortedMap::from_entries`]).
    fn fill_sorted(&mut self, changes: impl IntoIterator<Item = SetChange>) {
        self.tree = changes
            .into_iter()
            .filter_map(|change| match change {
                SetChange::Put(endpoint) => Some((ByAddr(Arc::new(endpoint)), ())),
                SetChange::Remove(_) => None,
            })
            .collect();
    }

    /// Puts `endpoint`, replacing the one of its address.
    pub fn insert(&mut self, endpoint: Endpoint) {
        self.tree.insert(ByAddr(Arc::new(endpoint)), ());
    }
}

impl FromIterator<Endpoint> for EndpointSet {
    /// The set of these endpoints; of two with one address, the later one stays.
    fn from_iter<I: IntoIterator<Item = Endpoint>>(iter: I) -> Self {
        Self {
            tree: iter
                .into_iter()
                .map(|e| (ByAddr(Arc::new(e)), ()))
                .collect(),
        }
    }
}

impl PartialEq for EndpointSet {
    fn eq(&self, other: &Self) -> bool {
        self.ptr_eq(other) || (self.len() == other.len() && self.iter().eq(other.iter()))
    }
}
impl Eq for EndpointSet {}

impl fmt::Debug for EndpointSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl serde::Serialize for EndpointSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'a> IntoIterator for &'a EndpointSet {
    type Item = &'a Endpoint;
    type IntoIter = Box<dyn Iterator<Item = &'a Endpoint> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sorted_batch_of_distinct_puts_fills_an_empty_set_and_nothing_else_does() {
        let put = |a: &str| SetChange::Put(Endpoint::new(a));
        let sorted = [put("a:1"), put("b:1"), put("c:1")];
        let mut set = EndpointSet::default();
        assert!(set.fills_sorted(&sorted));
        set.fill_sorted(sorted);
        let addrs: Vec<&str> = set.iter().map(|e| e.addr.as_str()).collect();
        assert_eq!(addrs, ["a:1", "b:1", "c:1"]);
        // Not empty any more, out of order, twice one address, a removal: refused.
        assert!(!set.fills_sorted(&[put("d:1")]));
        for changes in [
            vec![put("b:1"), put("a:1")],
            vec![put("a:1"), put("a:1")],
            vec![put("a:1"), SetChange::Remove("b:1".into())],
        ] {
            let empty = EndpointSet::default();
            assert!(!empty.fills_sorted(&changes), "{changes:?}");
        }
        assert_eq!(set.len(), 3);
    }

    #[test]
    fn a_set_is_ordered_by_address_and_shares_its_entries() {
        let set: EndpointSet = ["b:1", "a:1", "c:1"]
            .into_iter()
            .map(Endpoint::new)
            .collect();
        let addrs: Vec<&str> = set.iter().map(|e| e.addr.as_str()).collect();
        assert_eq!(addrs, ["a:1", "b:1", "c:1"]);

        let mut next = set.clone();
        assert!(next.ptr_eq(&set));
        assert!(!next.apply(&SetChange::Put(Endpoint::new("a:1"))));
        assert!(next.ptr_eq(&set), "an unchanged put copies nothing");
        assert!(next.apply(&SetChange::Put(Endpoint::new("a:1").with_weight(3))));
        assert!(next.apply(&SetChange::Remove("b:1".into())));
        assert!(!next.apply(&SetChange::Remove("b:1".into())));
        assert_eq!(next.get("a:1").map(|e| e.weight), Some(3));
        assert!(!next.contains("b:1") && set.contains("b:1"));
        assert_eq!(set.len(), 3);
        assert_eq!(next.len(), 2);
        assert_ne!(next, set);
        let rebuilt: EndpointSet = next.to_vec().into_iter().collect();
        assert_eq!(rebuilt, next);
    }
}
