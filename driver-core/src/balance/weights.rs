//! Weight groups: the slots grouped by weight, which weighted round robin takes turns
//! over.
//!
//! Contract: the channel's index keeps one [`Classes`] beside its slots: each slot at
//! its place in the class of its weight (0 counted as 1) and in the band of its
//! weight's power of two (`[2^b, 2^(b+1))`, at most 32 bands); adding, removing or
//! re-weighting a slot costs O(1) (plus a copy of one chunk of 64 pointers when a
//! table shares it, as [`Slots`]). A table of unequal weights carries
//! [`WeightedTurns`]: its groups (the classes while the set has at most
//! [`MAX_CLASSES`] distinct weights, else the bands), shared in chunks with the index
//! (O(groups + N / 4,096) to make), and the turn state of smooth weighted round robin
//! over them. A turn costs O(groups) under one lock, at most 32 + a few member visits:
//! the group is chosen by smooth WRR (nginx's) with the group's total weight, then the
//! group's next member in turn. In a class every member weighs the same, so each turn
//! of the class is its next member's: over a cycle of the total weight every slot gets
//! exactly its weight's share. In a band, weights differ by less than a factor of two:
//! a member visited gains its weight in credit and takes the turn once the credit
//! reaches the band's bound `2^(b+1)` (so at most two visits a turn on average, and
//! at most [`MAX_VISITS`]), which gives each its weight's share to within a turn or
//! two however long the run. A turn that lands on a slot out of rotation is skipped by
//! the caller, so the ready slots keep their shares among themselves; when the turns
//! keep landing out of rotation (those slots hold most of the weight), the caller
//! walks its list of ready slots by weight instead ([`WeightWalk`]: built once per
//! list, O(log ready) a pick, exact over a cycle). A new table
//! carries the turn state of the one it replaces, group by group (O(groups)), so a
//! stream of changes does not restart the interleaving, which would favour the
//! heaviest group.
//!
//! Why: a precomputed schedule of every slot's turns (what weighted round robin used
//! before) costs O(total weight) to build after every change: 32 ms at 100,000
//! endpoints of 4 weights and 120 ms of 40, paid by the first weighted call after the
//! change. Grouped by weight, a change costs what any other change costs: 76 and 88 µs
//! up to the first pick at 100,000 endpoints of 4 and 40 weights (`BENCH_PART=apply
//! cargo bench -p dtmdriver-core --bench endpoints`, docs/performance.md). A turn took
//! 13 ns over 2 classes, 29 ns over 32 and 30 ns over the bands of 40 weights (1,000
//! slots), 81–91 ns over bands of 100,000 slots whose members are cold (release build,
//! a loop of a million turns).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::slots::Slots;
use super::table::Slot;

/// The most distinct weights taken turns over by exact class; beyond, by band.
pub(super) const MAX_CLASSES: usize = 32;

/// The most members a turn visits in a band before it takes the last one visited
/// (members in lockstep: a bound, not the usual case, which is one or two).
const MAX_VISITS: usize = 64;

/// The weight a slot counts with: 0 counts as 1.
fn weight_of(slot: &Slot) -> u32 {
    slot.endpoint.weight.max(1)
}

/// The band of a weight: the power of two at or below it.
fn band_of(weight: u32) -> u32 {
    31 - weight.leading_zeros()
}

/// The slots of one band and their total weight.
#[derive(Clone, Default)]
struct Band {
    members: Slots,
    total: u64,
}

/// The index's slots by weight and by band; see the [module docs](self).
#[derive(Default)]
pub(super) struct Classes {
    by_weight: HashMap<u32, Slots>,
    by_band: HashMap<u32, Band>,
}

impl Classes {
    /// The number of distinct weights.
    pub(super) fn len(&self) -> usize {
        self.by_weight.len()
    }

    /// Puts `slot` at the end of its weight's class and of its band, with a credit
    /// drawn at random so that members of a band do not move in lockstep.
    pub(super) fn add(&mut self, slot: &Arc<Slot>) {
        let weight = weight_of(slot);
        let b = band_of(weight);
        let class = self.by_weight.entry(weight).or_default();
        class.push_placed(slot, |s| &s.class_pos);
        let band = self.by_band.entry(b).or_default();
        band.members.push_placed(slot, |s| &s.band_pos);
        band.total += u64::from(weight);
        let credit = rand::random_range(0..2u64 << b);
        slot.credit.store(credit, Ordering::Relaxed);
    }

    /// Takes `slot` out of its class and band, their last members taking its places.
    pub(super) fn remove(&mut self, slot: &Slot) {
        let weight = weight_of(slot);
        if let Some(class) = self.by_weight.get_mut(&weight) {
            class.swap_out(slot, |s| &s.class_pos);
            if class.is_empty() {
                self.by_weight.remove(&weight);
            }
        }
        if let Some(band) = self.by_band.get_mut(&band_of(weight)) {
            band.members.swap_out(slot, |s| &s.band_pos);
            band.total -= u64::from(weight);
            if band.members.is_empty() {
                self.by_band.remove(&band_of(weight));
            }
        }
    }

    /// Puts `new` where `old` was (same weight), or moves it to its new weight's class
    /// and band.
    pub(super) fn replace(&mut self, old: &Slot, new: &Arc<Slot>) {
        let weight = weight_of(old);
        if weight != weight_of(new) {
            self.remove(old);
            self.add(new);
            return;
        }
        let (class_pos, band_pos) = (
            old.class_pos.load(Ordering::Relaxed),
            old.band_pos.load(Ordering::Relaxed),
        );
        new.class_pos.store(class_pos, Ordering::Relaxed);
        new.band_pos.store(band_pos, Ordering::Relaxed);
        new.credit
            .store(old.credit.load(Ordering::Relaxed), Ordering::Relaxed);
        if let Some(class) = self.by_weight.get_mut(&weight) {
            class.set(class_pos, new.clone());
        }
        if let Some(band) = self.by_band.get_mut(&band_of(weight)) {
            band.members.set(band_pos, new.clone());
        }
    }

    /// The groups for a new table, heaviest first (classes, or bands beyond
    /// [`MAX_CLASSES`] weights), with the turn state of `old` (the table it replaces)
    /// carried over group by group.
    pub(super) fn turns(&self, old: Option<&WeightedTurns>) -> WeightedTurns {
        let mut groups: Vec<Group> = if self.by_weight.len() <= MAX_CLASSES {
            (self.by_weight.iter())
                .map(|(&w, members)| Group {
                    key: u64::from(w),
                    bound: u64::from(w),
                    total: u64::from(w) * members.len() as u64,
                    members: members.clone(),
                })
                .collect()
        } else {
            (self.by_band.iter())
                .map(|(&b, band)| Group {
                    key: BAND_KEY | u64::from(b),
                    bound: 2 << b,
                    total: band.total,
                    members: band.members.clone(),
                })
                .collect()
        };
        groups.sort_unstable_by_key(|g| std::cmp::Reverse(g.bound));
        let old = old.map(|o| {
            (
                o.groups.iter().map(|g| g.key).collect::<Vec<_>>(),
                o.state(),
            )
        });
        let state = (groups.iter())
            .map(|g| {
                let (keys, state) = old.as_ref()?;
                state.get(keys.iter().position(|&k| k == g.key)?).copied()
            })
            .map(Option::unwrap_or_default)
            .collect();
        WeightedTurns {
            groups,
            state: Mutex::new(state),
        }
    }
}

/// Marks a group key as a band's (a class's key is its weight).
const BAND_KEY: u64 = 1 << 40;

/// One group of a table: a class or a band.
struct Group {
    /// The weight of a class, or [`BAND_KEY`] and the band's number.
    key: u64,
    /// The credit a member needs to take a turn: a class's weight (every visit takes
    /// it), a band's `2^(b+1)`.
    bound: u64,
    /// The weight of all members together.
    total: u64,
    members: Slots,
}

/// Smooth WRR's running weight of a group and where its members' turn is.
#[derive(Clone, Copy, Default)]
struct Turn {
    current: i64,
    cursor: usize,
}

/// A table's weight groups and the turns over them; see the [module docs](self).
pub(super) struct WeightedTurns {
    /// Heaviest first (ties of smooth WRR go to the heavier group).
    groups: Vec<Group>,
    state: Mutex<Vec<Turn>>,
}

impl WeightedTurns {
    fn state(&self) -> Vec<Turn> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The slot whose turn it is (ready or not): O(groups), plus the members a band's
    /// turn visits.
    pub(super) fn next(&self) -> &Arc<Slot> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = 0i64;
        let mut best: Option<(usize, i64)> = None;
        for (i, (group, turn)) in self.groups.iter().zip(state.iter_mut()).enumerate() {
            let share = group.total as i64;
            total += share;
            turn.current += share;
            if best.is_none_or(|(_, b)| turn.current > b) {
                best = Some((i, turn.current));
            }
        }
        let (i, _) = best.expect("a table of unequal weights has at least two groups");
        let turn = &mut state[i];
        turn.current -= total;
        let group = &self.groups[i];
        let mut visited = &group.members[0];
        for _ in 0..MAX_VISITS {
            visited = &group.members[turn.cursor % group.members.len()];
            turn.cursor = turn.cursor.wrapping_add(1);
            let weight = u64::from(weight_of(visited));
            if weight >= group.bound {
                return visited; // a class: every member's turn in order
            }
            let credit = visited.credit.fetch_add(weight, Ordering::Relaxed) + weight;
            if credit >= group.bound {
                visited.credit.fetch_sub(group.bound, Ordering::Relaxed);
                return visited;
            }
        }
        visited
    }
}

/// Weighted round robin over a list of ready slots without a pass over them a pick:
/// the running sum of their weights, walked with a stride coprime to the total, so
/// that over a cycle of the total every slot is met exactly its weight's times, spread
/// out; a pick is a binary search, O(log ready). Built once per ready list, O(ready),
/// as the list itself: the fallback of the turns when the slots out of rotation hold
/// most of the weight (where nginx's smooth WRR, the fallback before, visited every
/// ready slot on every pick).
pub(super) struct WeightWalk {
    sums: Vec<u64>,
    step: u64,
}

impl WeightWalk {
    /// The walk over slots of these weights (0 counted as 1), in list order.
    pub(super) fn new(weights: impl Iterator<Item = u32>) -> Self {
        let mut total = 0u64;
        let sums: Vec<u64> = weights
            .map(|w| {
                total += u64::from(w.max(1));
                total
            })
            .collect();
        // About the golden section of the total, moved up to the first coprime.
        let mut step = ((total as f64 * 0.618_034) as u64).max(1);
        while total > 1 && gcd(step, total) != 1 {
            step += 1;
        }
        Self { sums, step }
    }

    /// The place in the list of the `k`-th pick; `None` for an empty list.
    pub(super) fn at(&self, k: u64) -> Option<usize> {
        let total = *self.sums.last()?;
        let point = (u128::from(k % total) * u128::from(self.step) % u128::from(total)) as u64;
        Some(self.sums.partition_point(|&s| s <= point))
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
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
                let at = s.class_pos.load(Ordering::Relaxed);
                assert_eq!(at, i, "{}", s.endpoint.addr);
            }
        }
        let mut in_bands = 0;
        for (&b, band) in &self.by_band {
            assert!(!band.members.is_empty(), "empty band {b}");
            let mut total = 0;
            for (i, s) in band.members.iter().enumerate() {
                assert_eq!(band_of(weight_of(s)), b, "{}", s.endpoint.addr);
                let at = s.band_pos.load(Ordering::Relaxed);
                assert_eq!(at, i, "{}", s.endpoint.addr);
                total += u64::from(weight_of(s));
            }
            assert_eq!(band.total, total, "band {b}");
            in_bands += band.members.len();
        }
        assert_eq!(
            in_bands,
            self.by_weight.values().map(Slots::len).sum::<usize>()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::WeightWalk;
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
        let (mut set, mut most): (Vec<Endpoint>, usize) = (Vec::new(), 0);
        for version in 1..=300u64 {
            // Adds twice as likely as the others: the set grows past 32 weights.
            match next(4) {
                0 if !set.is_empty() => {
                    set.swap_remove(next(set.len() as u64) as usize);
                }
                1 if !set.is_empty() => {
                    let i = next(set.len() as u64) as usize;
                    set[i] = set[i].clone().with_weight(next(48) as u32);
                }
                _ => set.push(
                    Endpoint::new(format!("10.7.0.{version}:80")).with_weight(next(48) as u32),
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
            most = most.max(distinct.len());
            let table = inner.table();
            assert_eq!(table.weighted.is_some(), distinct.len() >= 2);
            // Turns over whatever groups the set has (classes, or bands beyond 32
            // weights) name members of the set.
            for _ in 0..8 {
                if let Some(turns) = &table.weighted {
                    let addr = &turns.next().endpoint.addr;
                    assert!(set.iter().any(|e| &e.addr == addr), "{addr}");
                }
            }
        }
        assert!(
            most > super::MAX_CLASSES,
            "the walk reached {most} weights only"
        );
    }

    #[test]
    fn a_weight_walk_meets_each_slot_its_weight_times_a_cycle() {
        for weights in [
            vec![1u32],
            vec![3, 1],
            vec![1, 2, 6],
            vec![0, 5, 5, 10],
            vec![7; 12],
        ] {
            let walk = WeightWalk::new(weights.iter().copied());
            let total: u64 = weights.iter().map(|&w| u64::from(w.max(1))).sum();
            for cycle in 0..3 {
                let mut met = vec![0u32; weights.len()];
                for k in cycle * total..(cycle + 1) * total {
                    met[walk.at(k).unwrap()] += 1;
                }
                let due: Vec<u32> = weights.iter().map(|&w| w.max(1)).collect();
                assert_eq!(met, due, "{weights:?}");
            }
        }
        assert_eq!(WeightWalk::new(std::iter::empty()).at(3), None);
    }
}
