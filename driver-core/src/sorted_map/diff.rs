//! [`SortedMap::diff`]: the entries two versions of a map differ in, found by walking
//! both trees together and skipping every subtree they share.
//!
//! Contract: `old.diff(new, same, each)` calls `each` once for every key held by only
//! one of the two ([`Diff::Removed`], [`Diff::Added`]) and for every key both hold whose
//! entries `same` says differ ([`Diff::Changed`]), in key order; nothing for the rest.
//! Any two maps give the right answer. Two versions of one map (one made from the other
//! by C insertions and removals, or both from a third) cost O(C · B · log N) for B =
//! [`NODE`](super::NODE): every node off the changed paths is shared, and a shared
//! subtree is skipped whole; maps built apart cost O(N).
//!
//! Why: a consumer that follows a map version by version (a channel's table, an etcd
//! subscriber's decoded index) sometimes finds that it skipped versions (it is woken
//! once for several). Comparing the whole map then made each such catch-up O(N), and
//! under steady churn of a large set nearly every catch-up was one: at 100,000
//! endpoints a channel behind by a version took milliseconds where applying the
//! changes takes microseconds (`BENCH_PART=apply cargo bench -p dtmdriver-core --bench
//! endpoints`, the "behind µs" column).

use std::cmp::Ordering;
use std::sync::Arc;

use super::{Node, SortedMap, first_key};

/// One difference between two maps, old side first.
#[derive(Debug, PartialEq, Eq)]
pub enum Diff<'a, K, V> {
    /// Only the old map holds this entry.
    Removed(&'a K, &'a V),
    /// Only the new map holds this entry.
    Added(&'a K, &'a V),
    /// Both hold the key, with entries `same` tells apart: old, then new.
    Changed((&'a K, &'a V), (&'a K, &'a V)),
}

/// What a [`Cursor`] stands before.
enum Head<'a, K, V> {
    /// A whole subtree, not entered yet.
    Node(&'a Arc<Node<K, V>>),
    /// One entry of a leaf.
    Entry(&'a K, &'a V),
    /// The end of the map.
    End,
}

/// A place in a map: the path of nodes entered, each with the index of its next item.
struct Cursor<'a, K, V> {
    /// The root until it is entered.
    root: Option<&'a Arc<Node<K, V>>>,
    stack: Vec<(&'a Node<K, V>, usize)>,
}

impl<'a, K, V> Cursor<'a, K, V> {
    fn new(map: &'a SortedMap<K, V>) -> Self {
        Self {
            root: map.root.as_ref(),
            stack: Vec::new(),
        }
    }

    /// What comes next; leaves the nodes it finished.
    fn head(&mut self) -> Head<'a, K, V> {
        if let Some(root) = self.root {
            return Head::Node(root);
        }
        while let Some(&(node, i)) = self.stack.last() {
            match node {
                Node::Leaf(entries) if i < entries.len() => {
                    let (k, v) = &entries[i];
                    return Head::Entry(k, v);
                }
                Node::Inner(children) if i < children.len() => return Head::Node(&children[i].1),
                _ => {
                    self.stack.pop();
                }
            }
        }
        Head::End
    }

    /// Steps over the head (a whole subtree, or one entry).
    fn skip(&mut self) {
        if self.root.take().is_some() {
            return;
        }
        if let Some((_, i)) = self.stack.last_mut() {
            *i += 1;
        }
    }

    /// Enters the head, which is a node.
    fn enter(&mut self, node: &'a Arc<Node<K, V>>) {
        self.skip();
        self.stack.push((&**node, 0));
    }
}

/// How many levels are below `node` (0 for a leaf).
fn height<K, V>(mut node: &Node<K, V>) -> usize {
    let mut h = 0;
    while let Node::Inner(children) = node {
        node = &children[0].1;
        h += 1;
    }
    h
}

impl<K: Ord + Clone, V: Clone> SortedMap<K, V> {
    /// Calls `each`, in key order, for every key only one of this map and `new` holds
    /// ([`Diff::Removed`], [`Diff::Added`]) and every key both hold with entries `same`
    /// tells apart ([`Diff::Changed`]); `same` should compare what a key carries beyond
    /// its order, too, if it carries more. Right for any two maps; two versions of one
    /// map C insertions and removals apart cost O(C · B · log N) for
    /// B = [`NODE`](crate::sorted_map::NODE) (every subtree they share is skipped
    /// whole), maps built apart O(N).
    ///
    /// ```
    /// use dtmdriver_core::sorted_map::{Diff, SortedMap};
    /// let old: SortedMap<u32, &str> = [(1, "a"), (2, "b"), (3, "c")].into_iter().collect();
    /// let mut new = old.clone();
    /// new.remove(&1);
    /// new.insert(3, "C");
    /// new.insert(4, "d");
    /// let mut seen = Vec::new();
    /// old.diff(&new, |a, b| a == b, |d| seen.push(d));
    /// assert_eq!(seen, [Diff::Removed(&1, &"a"), Diff::Changed((&3, &"c"), (&3, &"C")), Diff::Added(&4, &"d")]);
    /// ```
    pub fn diff<'a>(
        &'a self,
        new: &'a Self,
        same: impl Fn((&K, &V), (&K, &V)) -> bool,
        mut each: impl FnMut(Diff<'a, K, V>),
    ) {
        let (mut a, mut b) = (Cursor::new(self), Cursor::new(new));
        loop {
            match (a.head(), b.head()) {
                (Head::End, Head::End) => return,
                (Head::Node(x), Head::Node(y)) if Arc::ptr_eq(x, y) => {
                    a.skip();
                    b.skip();
                }
                // Whichever starts first is entered; of two starting at one key, the
                // taller (both when equally tall): shared subtrees then line up.
                (Head::Node(x), Head::Node(y)) => match first_key(x).cmp(first_key(y)) {
                    Ordering::Less => a.enter(x),
                    Ordering::Greater => b.enter(y),
                    Ordering::Equal => match height(x).cmp(&height(y)) {
                        Ordering::Greater => a.enter(x),
                        Ordering::Less => b.enter(y),
                        Ordering::Equal => {
                            a.enter(x);
                            b.enter(y);
                        }
                    },
                },
                // Everything before both heads is done, so an entry before the other
                // side's next subtree is not in the other map.
                (Head::Node(x), Head::Entry(k, v)) => {
                    if k < first_key(x) {
                        each(Diff::Added(k, v));
                        b.skip();
                    } else {
                        a.enter(x);
                    }
                }
                (Head::Entry(k, v), Head::Node(y)) => {
                    if k < first_key(y) {
                        each(Diff::Removed(k, v));
                        a.skip();
                    } else {
                        b.enter(y);
                    }
                }
                (Head::Node(x), Head::End) => a.enter(x),
                (Head::End, Head::Node(y)) => b.enter(y),
                (Head::Entry(k, v), Head::End) => {
                    each(Diff::Removed(k, v));
                    a.skip();
                }
                (Head::End, Head::Entry(k, v)) => {
                    each(Diff::Added(k, v));
                    b.skip();
                }
                (Head::Entry(ka, va), Head::Entry(kb, vb)) => match ka.cmp(kb) {
                    Ordering::Less => {
                        each(Diff::Removed(ka, va));
                        a.skip();
                    }
                    Ordering::Greater => {
                        each(Diff::Added(kb, vb));
                        b.skip();
                    }
                    Ordering::Equal => {
                        if !same((ka, va), (kb, vb)) {
                            each(Diff::Changed((ka, va), (kb, vb)));
                        }
                        a.skip();
                        b.skip();
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::BTreeMap;

    use super::*;
    use crate::sorted_map::tests::Rng;

    type Model = BTreeMap<u32, u64>;

    /// `old.diff(new)` as (key, old value, new value) triples.
    fn diff(
        old: &SortedMap<u32, u64>,
        new: &SortedMap<u32, u64>,
    ) -> Vec<(u32, Option<u64>, Option<u64>)> {
        let mut out = Vec::new();
        old.diff(
            new,
            |a, b| a == b,
            |d| {
                out.push(match d {
                    Diff::Removed(k, v) => (*k, Some(*v), None),
                    Diff::Added(k, v) => (*k, None, Some(*v)),
                    Diff::Changed((k, a), (_, b)) => (*k, Some(*a), Some(*b)),
                })
            },
        );
        out
    }

    /// The same, from two models.
    fn model_diff(old: &Model, new: &Model) -> Vec<(u32, Option<u64>, Option<u64>)> {
        let keys: std::collections::BTreeSet<u32> = old.keys().chain(new.keys()).copied().collect();
        keys.into_iter()
            .map(|k| (k, old.get(&k).copied(), new.get(&k).copied()))
            .filter(|(_, a, b)| a != b)
            .collect()
    }

    #[test]
    fn versions_of_one_map_and_maps_built_apart_differ_as_their_entries_do() {
        for seed in 1..=9u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let span = [40, 500, 5000][seed as usize % 3];
            let start: Vec<(u32, u64)> = (0..span as u32)
                .filter(|k| k % 3 != 0)
                .map(|k| (k, 0))
                .collect();
            let mut map = SortedMap::from_entries(start.clone());
            let mut model: Model = start.into_iter().collect();
            let mut kept: Vec<(SortedMap<u32, u64>, Model)> = vec![(map.clone(), model.clone())];
            for step in 1..=600u64 {
                let key = rng.below(span) as u32;
                if rng.below(3) == 0 {
                    map.remove(&key);
                    model.remove(&key);
                } else {
                    map.insert(key, step % 4);
                    model.insert(key, step % 4);
                }
                if rng.below(75) == 0 {
                    kept.push((map.clone(), model.clone()));
                }
            }
            kept.push((map, model));
            for (i, (old, old_model)) in kept.iter().enumerate() {
                for (new, new_model) in &kept[i..] {
                    assert_eq!(
                        diff(old, new),
                        model_diff(old_model, new_model),
                        "seed {seed}"
                    );
                    assert_eq!(
                        diff(new, old),
                        model_diff(new_model, old_model),
                        "seed {seed}"
                    );
                }
                // Built apart: nothing shared, the same answer.
                let apart: SortedMap<u32, u64> = old_model.iter().map(|(k, v)| (*k, *v)).collect();
                let (new, new_model) = kept.last().unwrap();
                assert_eq!(diff(&apart, new), model_diff(old_model, new_model));
                assert!(diff(&apart, old).is_empty());
            }
        }
        let empty = SortedMap::new();
        let one = SortedMap::from_entries(vec![(1, 1)]);
        assert_eq!(diff(&empty, &one), [(1, None, Some(1))]);
        assert_eq!(diff(&one, &empty), [(1, Some(1), None)]);
        assert!(diff(&empty, &empty).is_empty());
    }

    /// What makes the diff worth having: two versions C changes apart compare O(C)
    /// entries, not N.
    #[test]
    fn a_few_changes_to_a_large_map_compare_a_few_leaves() {
        let n = 100_000u32;
        let old = SortedMap::from_entries((0..n).map(|k| (k * 2, 0u64)).collect());
        let mut new = old.clone();
        new.insert(50_001, 1); // added (odd)
        new.remove(&1_000); // removed
        new.insert(150_000, 7); // changed
        let compared = Cell::new(0);
        let mut found = Vec::new();
        old.diff(
            &new,
            |a, b| {
                compared.set(compared.get() + 1);
                a == b
            },
            |d| found.push(format!("{d:?}")),
        );
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            compared.get() <= 3 * 2 * super::super::NODE,
            "{} entries compared for 3 changes",
            compared.get()
        );
        // No change: the roots are one node, nothing is compared.
        compared.set(0);
        old.diff(
            &old.clone(),
            |_, _| {
                compared.set(compared.get() + 1);
                true
            },
            |_| panic!("no difference"),
        );
        assert_eq!(compared.get(), 0);
    }
}
