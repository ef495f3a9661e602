//! [`SortedMap`]: a persistent map in key order, built in one pass from sorted entries.
//!
//! Contract: a `SortedMap` iterates in key order; cloning it is one reference count;
//! a map made from another by one insertion or removal shares every node off that
//! key's path with it, O(B log N) for B = [`NODE`] (clones of keys and values, which
//! should therefore be cheap: `Arc`s, `Bytes`); a map built from entries already in
//! key order ([`from_entries`](SortedMap::from_entries)) costs O(N), with no comparison
//! but the check of the order. Two maps are equal when they hold equal entries.
//!
//! How: a B+tree whose nodes are shared (`Arc`) and copied on write; every entry is in
//! a leaf, and an inner node knows each child's smallest key. Removal takes an emptied
//! node out and does not merge thin ones: a node holds at least one entry or child, so
//! there are never more nodes than entries, and removals never deepen the tree.
//!
//! Why hand-rolled: the resolvers keep two persistent maps of every instance (the etcd
//! engine's copy of a prefix, the published endpoint set), and building them one
//! insertion at a time was a fifth of a resolver's CPU to its first set of 100,000
//! instances. Neither persistent map at hand builds from sorted input: `rpds`'
//! red-black tree (used before) and `imbl`'s B-tree insert one entry at a time, and
//! `imbl` copies 64 entries a node on a change (tried for the endpoint set: 3× `rpds`'
//! cost a change). With this map (`cargo bench -p dtmdriver-gozero --bench scale`,
//! `SCALE_SIZES=10000,100000`, the two builds alternated twice, load 1.2–1.8), a go-zero
//! resolver of 100,000 instances takes 131–133 ms of CPU to its first set against
//! 187–191 ms (go-zero's `discov` 147–181 ms in the same runs) and 81 MB of RSS against
//! 90 MB; a channel 255–264 ms against 318–334 ms and 196 MB against 209 MB. A change
//! costs about what it did: one keyed change to a set of 100,000, 1.9 µs against 1.6 µs
//! (`BENCH_PART=apply cargo bench -p dtmdriver-core --bench endpoints`, "keyed µs").

mod diff;

pub use diff::Diff;

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// Most entries of a leaf, and most children of an inner node. Of 8 and 16, 8 copied
/// less a change (one keyed change to a set of 100,000: 1.9 against 2.3 µs) and built
/// as fast (the first set of 100,000: 79–87 against 85–89 ms; `BENCH_PART=apply cargo
/// bench -p dtmdriver-core --bench endpoints`).
pub const NODE: usize = 8;

#[derive(Clone)]
enum Node<K, V> {
    Leaf(Vec<(K, V)>),
    /// Each child with its smallest key, in key order.
    Inner(Vec<(K, Arc<Node<K, V>>)>),
}

impl<K, V> Node<K, V> {
    fn len(&self) -> usize {
        match self {
            Self::Leaf(entries) => entries.len(),
            Self::Inner(children) => children.len(),
        }
    }
}

/// A persistent sorted map; see the [module docs](self).
pub struct SortedMap<K, V> {
    root: Option<Arc<Node<K, V>>>,
    len: usize,
}

impl<K, V> Clone for SortedMap<K, V> {
    fn clone(&self) -> Self {
        Self {
            root: self.root.clone(),
            len: self.len,
        }
    }
}

impl<K, V> Default for SortedMap<K, V> {
    fn default() -> Self {
        Self { root: None, len: 0 }
    }
}

/// Where `key` goes among children with these smallest keys: the last child whose
/// smallest key is not above it, or the first.
fn child_of<K: Borrow<Q>, Q: Ord + ?Sized, T>(children: &[(K, T)], key: &Q) -> usize {
    children
        .partition_point(|(k, _)| k.borrow() <= key)
        .saturating_sub(1)
}

impl<K: Ord + Clone, V: Clone> SortedMap<K, V> {
    /// The empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `other` is this very map (the same root, not just equal entries).
    pub fn ptr_eq(&self, other: &Self) -> bool {
        match (&self.root, &other.root) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    /// The value of `key`.
    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.get_key_value(key).map(|(_, v)| v)
    }

    /// The entry of `key`.
    pub fn get_key_value<Q: Ord + ?Sized>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
    {
        let mut node = self.root.as_deref()?;
        loop {
            match node {
                Node::Inner(children) => node = &children[child_of(children, key)].1,
                Node::Leaf(entries) => {
                    let i = entries
                        .binary_search_by(|(k, _)| k.borrow().cmp(key))
                        .ok()?;
                    let (k, v) = &entries[i];
                    return Some((k, v));
                }
            }
        }
    }

    /// Whether it holds `key`.
    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.get_key_value(key).is_some()
    }

    /// The entries in key order.
    pub fn iter(&self) -> Iter<'_, K, V> {
        Iter {
            stack: self.root.as_deref().map(|n| (n, 0)).into_iter().collect(),
            left: self.len,
        }
    }

    /// The keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// The values in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.iter().map(|(_, v)| v)
    }

    /// Puts `value` at `key`, replacing the entry of an equal key (its key too: a key
    /// may carry more than its order); the value it replaces.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let Some(root) = &mut self.root else {
            self.root = Some(Arc::new(Node::Leaf(vec![(key, value)])));
            self.len = 1;
            return None;
        };
        let (replaced, split) = insert(Arc::make_mut(root), key, value);
        if let Some(right) = split {
            let left = self.root.take().expect("a root");
            let left_key = first_key(&left).clone();
            self.root = Some(Arc::new(Node::Inner(vec![(left_key, left), right])));
        }
        if replaced.is_none() {
            self.len += 1;
        }
        replaced
    }

    /// Takes `key`'s entry out; its value. A key it does not hold copies nothing.
    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        if !self.contains_key(key) {
            return None;
        }
        let root = self.root.as_mut()?;
        let removed = remove(Arc::make_mut(root), key);
        self.len -= usize::from(removed.is_some());
        // An emptied root goes; an inner root of one child gives way to it.
        loop {
            match self.root.as_deref() {
                Some(node) if node.len() == 0 => self.root = None,
                Some(Node::Inner(children)) if children.len() == 1 => {
                    self.root = Some(children[0].1.clone());
                }
                _ => break,
            }
        }
        removed
    }

    /// The map of `entries`; of two with one key, the later one stays. Entries already
    /// in strictly increasing key order (a listing, a sorted batch) are built in one
    /// pass: full nodes, no key compared but neighbours; others are sorted first.
    pub fn from_entries(mut entries: Vec<(K, V)>) -> Self {
        if entries.windows(2).any(|w| w[0].0 >= w[1].0) {
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            // Of a run of one key, keep the last.
            entries.reverse();
            entries.dedup_by(|later, earlier| later.0 == earlier.0);
            entries.reverse();
        }
        let len = entries.len();
        if len == 0 {
            return Self::new();
        }
        let mut level: Vec<(K, Arc<Node<K, V>>)> = Vec::with_capacity(len.div_ceil(NODE));
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            let leaf: Vec<(K, V)> = entries.by_ref().take(NODE).collect();
            level.push((leaf[0].0.clone(), Arc::new(Node::Leaf(leaf))));
        }
        while level.len() > 1 {
            let mut children = level.into_iter().peekable();
            let mut up = Vec::new();
            while children.peek().is_some() {
                let node: Vec<(K, Arc<Node<K, V>>)> = children.by_ref().take(NODE).collect();
                up.push((node[0].0.clone(), Arc::new(Node::Inner(node))));
            }
            level = up;
        }
        Self {
            root: level.pop().map(|(_, node)| node),
            len,
        }
    }
}

fn first_key<K, V>(node: &Node<K, V>) -> &K {
    match node {
        Node::Leaf(entries) => &entries[0].0,
        Node::Inner(children) => &children[0].0,
    }
}

/// Puts `key` under `node`: the value replaced, and the right half of `node` when it
/// split (with its smallest key).
#[allow(clippy::type_complexity)]
fn insert<K: Ord + Clone, V: Clone>(
    node: &mut Node<K, V>,
    key: K,
    value: V,
) -> (Option<V>, Option<(K, Arc<Node<K, V>>)>) {
    let replaced = match node {
        Node::Leaf(entries) => match entries.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => {
                let (_, old) = std::mem::replace(&mut entries[i], (key, value));
                return (Some(old), None);
            }
            Err(i) => {
                entries.insert(i, (key, value));
                None
            }
        },
        Node::Inner(children) => {
            let i = child_of(children, &key);
            if key <= children[i].0 {
                children[i].0 = key.clone();
            }
            let (replaced, split) = insert(Arc::make_mut(&mut children[i].1), key, value);
            if let Some(right) = split {
                children.insert(i + 1, right);
            }
            replaced
        }
    };
    if node.len() <= NODE {
        return (replaced, None);
    }
    let right = match node {
        Node::Leaf(entries) => Node::Leaf(entries.split_off(entries.len() / 2)),
        Node::Inner(children) => Node::Inner(children.split_off(children.len() / 2)),
    };
    let right_key = first_key(&right).clone();
    (replaced, Some((right_key, Arc::new(right))))
}

/// Takes `key` out from under `node`, which holds it; takes emptied children out and
/// keeps each child's smallest key.
fn remove<K: Ord + Clone + Borrow<Q>, V: Clone, Q: Ord + ?Sized>(
    node: &mut Node<K, V>,
    key: &Q,
) -> Option<V> {
    match node {
        Node::Leaf(entries) => {
            let i = entries
                .binary_search_by(|(k, _)| k.borrow().cmp(key))
                .ok()?;
            Some(entries.remove(i).1)
        }
        Node::Inner(children) => {
            let i = child_of(children, key);
            let child = Arc::make_mut(&mut children[i].1);
            let removed = remove(child, key);
            if child.len() == 0 {
                children.remove(i);
            } else if children[i].0.borrow().cmp(key) == Ordering::Equal {
                children[i].0 = first_key(&children[i].1).clone();
            }
            removed
        }
    }
}

/// The entries of a [`SortedMap`] in key order.
pub struct Iter<'a, K, V> {
    /// The nodes on the way to the next entry, each with the index of its next item.
    stack: Vec<(&'a Node<K, V>, usize)>,
    left: usize,
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (node, i) = self.stack.last_mut()?;
            match *node {
                Node::Leaf(entries) if *i < entries.len() => {
                    let (k, v) = &entries[*i];
                    *i += 1;
                    self.left -= 1;
                    return Some((k, v));
                }
                Node::Inner(children) if *i < children.len() => {
                    let child = &*children[*i].1;
                    *i += 1;
                    self.stack.push((child, 0));
                }
                _ => {
                    self.stack.pop();
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<K, V> ExactSizeIterator for Iter<'_, K, V> {}

impl<K: Ord + Clone, V: Clone> FromIterator<(K, V)> for SortedMap<K, V> {
    /// The map of these entries; of two with one key, the later one stays
    /// ([`from_entries`](SortedMap::from_entries)).
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self::from_entries(iter.into_iter().collect())
    }
}

impl<K: Ord + Clone, V: Clone + PartialEq> PartialEq for SortedMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && (self.ptr_eq(other) || self.iter().eq(other.iter()))
    }
}

impl<K: Ord + Clone, V: Clone + Eq> Eq for SortedMap<K, V> {}

impl<K: Ord + Clone + fmt::Debug, V: Clone + fmt::Debug> fmt::Debug for SortedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Checks every inner node's keys against its children, the order of all keys and
    /// the length; the depth.
    fn check<K: Ord + Clone + fmt::Debug, V: Clone>(map: &SortedMap<K, V>) -> usize {
        fn walk<K: Ord + Clone + fmt::Debug, V>(node: &Node<K, V>, keys: &mut Vec<K>) -> usize {
            assert!(
                node.len() > 0 && node.len() <= NODE,
                "node of {}",
                node.len()
            );
            match node {
                Node::Leaf(entries) => {
                    keys.extend(entries.iter().map(|(k, _)| k.clone()));
                    1
                }
                Node::Inner(children) => {
                    let mut depth = None;
                    for (k, child) in children {
                        assert_eq!(k, first_key(child));
                        let d = walk(child, keys);
                        assert_eq!(*depth.get_or_insert(d), d, "leaves at one depth");
                    }
                    depth.unwrap_or(0) + 1
                }
            }
        }
        let mut keys = Vec::new();
        let depth = map.root.as_deref().map_or(0, |n| walk(n, &mut keys));
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys in order");
        assert_eq!(keys.len(), map.len());
        depth
    }

    /// A small deterministic generator (xorshift), so that a failure replays.
    pub(super) struct Rng(pub(super) u64);
    impl Rng {
        pub(super) fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn follows_a_btreemap_through_random_changes_and_keeps_old_versions() {
        for seed in 1..=20u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let span = [50, 400, 3000][seed as usize % 3];
            let mut map: SortedMap<u32, u64> = SortedMap::new();
            let mut model = BTreeMap::new();
            let mut kept: Vec<(SortedMap<u32, u64>, BTreeMap<u32, u64>)> = Vec::new();
            for step in 0..4000u64 {
                let key = rng.below(span) as u32;
                if rng.below(3) == 0 {
                    assert_eq!(
                        map.remove(&key),
                        model.remove(&key),
                        "seed {seed} step {step}"
                    );
                } else {
                    assert_eq!(map.insert(key, step), model.insert(key, step));
                }
                if step % 500 == 0 {
                    kept.push((map.clone(), model.clone()));
                }
                assert_eq!(map.len(), model.len());
                assert_eq!(map.get(&key), model.get(&key));
            }
            check(&map);
            assert!(map.iter().map(|(k, v)| (*k, *v)).eq(model.clone()));
            // Versions kept along the way did not change.
            for (old, old_model) in &kept {
                check(old);
                assert!(old.iter().map(|(k, v)| (*k, *v)).eq(old_model.clone()));
            }
            // Emptied: no node left.
            for key in model.keys() {
                assert!(map.remove(key).is_some());
            }
            assert!(map.is_empty() && map.root.is_none());
        }
    }

    #[test]
    fn built_from_sorted_entries_it_is_full_and_changes_like_any_other() {
        for n in [0usize, 1, NODE - 1, NODE, NODE + 1, NODE * NODE, 40_000] {
            let entries: Vec<(u32, u32)> = (0..n as u32).map(|i| (i * 2, i)).collect();
            let mut map = SortedMap::from_entries(entries.clone());
            let depth = check(&map);
            let full = (1..).find(|d| NODE.pow(*d as u32) >= n.max(1)).unwrap();
            assert_eq!(depth, if n == 0 { 0 } else { full }, "n = {n}");
            assert!(
                map.iter()
                    .map(|(k, v)| (*k, *v))
                    .eq(entries.iter().copied())
            );
            assert_eq!(map, entries.iter().copied().collect());
            // Odd keys go in between, every tenth even one goes.
            let shared = map.clone();
            for i in 0..n as u32 {
                map.insert(i * 2 + 1, 0);
                if i % 10 == 0 {
                    assert_eq!(map.remove(&(i * 2)), Some(i));
                }
            }
            check(&map);
            assert_eq!(map.len(), n + n - n.div_ceil(10));
            assert_eq!(shared.len(), n);
            assert!(
                shared
                    .iter()
                    .map(|(k, v)| (*k, *v))
                    .eq(entries.iter().copied())
            );
        }
        let unsorted = SortedMap::from_entries(vec![(2, 'a'), (1, 'b'), (2, 'c')]);
        assert!(
            unsorted
                .iter()
                .map(|(k, v)| (*k, *v))
                .eq([(1, 'b'), (2, 'c')])
        );
    }

    #[test]
    fn a_change_copies_only_its_path() {
        let map: SortedMap<u32, u32> = (0..NODE as u32 * NODE as u32 * 4).map(|i| (i, i)).collect();
        let mut changed = map.clone();
        assert_eq!(changed.insert(5, 0), Some(5));
        let (Some(Node::Inner(a)), Some(Node::Inner(b))) =
            (map.root.as_deref(), changed.root.as_deref())
        else {
            panic!("inner roots");
        };
        // The root and the first child differ; every other child is shared.
        assert!(!Arc::ptr_eq(&a[0].1, &b[0].1));
        assert!(
            a[1..]
                .iter()
                .zip(&b[1..])
                .all(|(x, y)| Arc::ptr_eq(&x.1, &y.1))
        );
        // Removing a key it does not hold copies nothing.
        let mut same = map.clone();
        assert_eq!(same.remove(&u32::MAX), None);
        assert!(same.ptr_eq(&map));
    }

    #[test]
    fn collecting_keeps_the_last_of_a_key() {
        let map: SortedMap<&str, u32> = [("b", 1), ("a", 2), ("b", 3), ("c", 4), ("a", 5)]
            .into_iter()
            .collect();
        let got: Vec<(&str, u32)> = map.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(got, [("a", 5), ("b", 3), ("c", 4)]);
        check(&map);
    }
}
