//! Weight classes: the slots grouped by weight, which weighted round robin takes turns
//! over when the set has a few distinct weights.
//!
//! Contract: the channel's index keeps one [`Classes`] beside its slots, each slot at
//! its place in the class of its weight (0 counted as 1); adding, removing or
//! re-weighting a slot costs O(1) (plus a copy of one chunk of 64 pointers when a
//! table shares it, as [`Slots`]). While the set has between 2 and [`MAX_CLASSES`]
//! distinct weights, each table carries [`WeightedTurns`]: the classes as of that
//! table, shared in chunks with the index (O(K + N / 64) to make for K classes), and
//! the turn state of smooth weighted round robin over them. A turn costs O(K) under
//! one lock: the class is chosen by smooth WRR (nginx's) with the class's weight
//! times its size as weight, then the class's next member in turn. Over a cycle of
//! the classes' total weight every slot gets exactly its weight's share; a turn that
//! lands on a slot out of rotation is skipped by the caller, so the ready slots keep
//! exact shares among themselves. A new table carries the turn state of the one it
//! replaces, class by class (O(K)), so a stream of changes does not restart the
//! interleaving, which would favour the heaviest class.
//!
//! Why: the precomputed schedule of `policy` (one cycle of every slot's turns) costs
//! O(total weight) to build after every change: 13 ms at 100,000 endpoints of unequal
//! weights, paid by the first weighted call after the change. Sets have few distinct
//! weights (a weight per machine size, a canary at a tenth), so grouping by weight
//! makes a change cost what any other change costs and keeps the pick O(K): a turn
//! took 14 ns with 2 classes and 39 ns with 32 (release build, 1,000 slots), and one
//! change up to the first pick after it 77 µs at 100,000 endpoints of 4 weights,
//! against 32 ms with the schedule (`BENCH_PART=apply cargo bench -p dtmdriver-core
//! --bench endpoints`, docs/performance.md). A set with more distinct weights than
//! [`MAX_CLASSES`] still uses the schedule.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::slots::Slots;
use super::table::Slot;

/// The most distinct weights taken turns over by class; beyond, the schedule.
pub(super) const MAX_CLASSES: usize = 32;

/// The weight a slot counts with: 0 counts as 1.
fn weight_of(slot: &Slot) -> u32 {
    slot.endpoint.weight.max(1)
}

/// The index's slots by weight; see the [module docs](self).
#[derive(Default)]
pub(super) struct Classes {
    by_weight: HashMap<u32, Slots>,
}

impl Classes {
    /// The number of distinct weights.
    pub(super) fn len(&self) -> usize {
        self.by_weight.len()
    }

    /// Puts `slot` at the end of its weight's class.
    pub(super) fn add(&mut self, slot: &Arc<Slot>) {
        let class = self.by_weight.entry(weight_of(slot)).or_default();
        slot.class_pos.store(class.len(), Ordering::Relaxed);
        class.push(slot.clone());
    }

    /// Takes `slot` out of its class, the class's last member taking its place.
    pub(super) fn remove(&mut self, slot: &Slot) {
        let weight = weight_of(slot);
        let Some(class) = self.by_weight.get_mut(&weight) else {
            return;
        };
        let (_, moved) = class.swap_remove(slot.class_pos.load(Ordering::Relaxed));
        if let Some(moved) = moved {
            moved
                .class_pos
                .store(slot.class_pos.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        if class.is_empty() {
            self.by_weight.remove(&weight);
        }
    }

    /// Puts `new` where `old` was (same weight), or moves it to its new weight's class.
    pub(super) fn replace(&mut self, old: &Slot, new: &Arc<Slot>) {
        let pos = old.class_pos.load(Ordering::Relaxed);
        match self.by_weight.get_mut(&weight_of(old)) {
            Some(class) if weight_of(old) == weight_of(new) => {
                new.class_pos.store(pos, Ordering::Relaxed);
                class.set(pos, new.clone());
            }
            _ => {
                self.remove(old);
                self.add(new);
            }
        }
    }

    /// The classes for a new table, heaviest first, with the turn state of `old` (the
    /// table it replaces) carried over by weight.
    pub(super) fn turns(&self, old: Option<&WeightedTurns>) -> WeightedTurns {
        let mut classes: Vec<(u32, Slots)> = (self.by_weight.iter())
            .map(|(&w, members)| (w, members.clone()))
            .collect();
        classes.sort_unstable_by_key(|(w, _)| std::cmp::Reverse(*w));
        let old_turns = old.map(|o| (o.weights(), o.state()));
        let state = (classes.iter())
            .map(|(w, _)| {
                let carried = old_turns.as_ref().and_then(|(weights, state)| {
                    let i = weights.iter().position(|x| x == w)?;
                    state.get(i).copied()
                });
                carried.unwrap_or_default()
            })
            .collect();
        WeightedTurns {
            classes,
            state: Mutex::new(state),
        }
    }
}

/// Smooth WRR's running weight of a class and where its members' turn is.
#[derive(Clone, Copy, Default)]
struct Turn {
    current: i64,
    cursor: usize,
}

/// A table's weight classes and the turns over them; see the [module docs](self).
pub(super) struct WeightedTurns {
    /// Each weight with its members, heaviest first (ties of smooth WRR go to the
    /// heavier class).
    classes: Vec<(u32, Slots)>,
    state: Mutex<Vec<Turn>>,
}

impl WeightedTurns {
    fn weights(&self) -> Vec<u32> {
        self.classes.iter().map(|(w, _)| *w).collect()
    }

    fn state(&self) -> Vec<Turn> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The slot whose turn it is (ready or not): O(classes).
    pub(super) fn next(&self) -> &Arc<Slot> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = 0i64;
        let mut best: Option<(usize, i64)> = None;
        for (i, ((weight, members), turn)) in self.classes.iter().zip(state.iter_mut()).enumerate()
        {
            let share = i64::from(*weight) * members.len() as i64;
            total += share;
            turn.current += share;
            if best.is_none_or(|(_, b)| turn.current > b) {
                best = Some((i, turn.current));
            }
        }
        let (i, _) = best.expect("a table with weight classes has at least two");
        let turn = &mut state[i];
        turn.current -= total;
        let members = &self.classes[i].1;
        let slot = &members[turn.cursor % members.len()];
        turn.cursor = turn.cursor.wrapping_add(1);
        slot
    }
}

#[cfg(test)]
impl Classes {
    /// Panics unless every member sits at its recorded place in the class of its
    /// weight.
    pub(super) fn check(&self) {
        for (&weight, members) in &self.by_weight {
            assert!(!members.is_empty(), "empty class {weight}");
            for (i, s) in members.iter().enumerate() {
                assert_eq!(weight_of(s), weight, "{}", s.endpoint.addr);
                assert_eq!(
                    s.class_pos.load(Ordering::Relaxed),
                    i,
                    "{}",
                    s.endpoint.addr
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::balance::Policy;
    use crate::balance::channel::test_channel;
    use crate::resolve::{Endpoint, ResolverState};

    #[tokio::test]
    async fn classes_follow_every_kind_of_change() {
        let inner = test_channel(Policy::WeightedRoundRobin);
        // A bounded pseudo-random walk of sets: endpoints come, go and change weight.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut set: Vec<Endpoint> = Vec::new();
        for version in 1..=300u64 {
            match next(3) {
                0 if !set.is_empty() => {
                    set.swap_remove(next(set.len() as u64) as usize);
                }
                1 if !set.is_empty() => {
                    let i = next(set.len() as u64) as usize;
                    set[i] = set[i].clone().with_weight(next(4) as u32);
                }
                _ => set.push(
                    Endpoint::new(format!("10.7.0.{version}:80")).with_weight(next(4) as u32),
                ),
            }
            inner.apply(&ResolverState {
                version,
                ..ResolverState::with_endpoints(set.clone())
            });
            let index = inner.index.lock().unwrap();
            index.classes.check();
            let distinct: std::collections::BTreeSet<u32> =
                set.iter().map(|e| e.weight.max(1)).collect();
            assert_eq!(index.classes.len(), distinct.len());
            let table = inner.table();
            assert_eq!(table.weighted.is_some(), (2..=3).contains(&distinct.len()));
        }
    }
}
