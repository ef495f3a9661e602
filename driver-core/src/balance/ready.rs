//! The list of a table's ready slots, which the policies pick from on every call.
//!
//! Contract: [`Table::ready`] gives the slots whose connection was ready as of the
//! newest count of the channel's [`ReadyLog`] it has caught up with (a pick still
//! checks the flag of what it chose). When connections enter or leave the rotation,
//! each records its address in the log, and the next pick brings the list up to date
//! from those addresses alone (their slots found through the [`Index`], their flags
//! read again): a slot that came up is appended, one that went down is swapped out
//! with the last, each in O(1) (copying the chunks it touches), no other slot's
//! connection read. Only a list that fell further behind than the log keeps (1/16 of
//! the set) is rebuilt by reading every slot's flag. An apply carries the list over to
//! the next table by its moves ([`Table::ready_after`]) the same way, reading no flag
//! but the added slots'.
//!
//! How: the list is a [`Chunked`] vector of slot numbers (shared in groups of chunks,
//! so a new version copies what a change touches and one pointer per 4,096 entries)
//! beside another, as long as the table, of each slot's place in the list: calls in
//! flight keep reading the version they hold.
//!
//! Why: reading every slot's flag (three pointers away and cold) on each readiness
//! change cost the next pick 4.9–10.4 ms at 100,000 endpoints; rewriting the list of
//! integers in one pass (what came next) still cost 134–181 µs, now 22–29 µs;
//! carrying the list by a scan per move cost 43 ms for a batch of 1,000 changes, by
//! one bit per slot 0.41 ms (and 64–68 µs for 2 changes), now 0.52 ms (and 22 µs).
//! Measured with `BENCH_PART=apply cargo bench -p dtmdriver-core --bench endpoints`
//! (`docs/performance.md`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock};

use super::slots::{Chunked, Slots};
use super::table::{Index, Move, Table};
use super::transport::ready_log::ReadyLog;
use super::weights::WeightWalk;

/// The ready slots, as of count `epoch` of the channel's [`ReadyLog`].
pub(super) struct Ready {
    pub(super) epoch: u64,
    /// The ready slots' numbers, in no particular order.
    pub(super) slots: Chunked<u32>,
    /// Each slot's place in `slots` ([`UNLISTED`] for a slot not listed), as long as
    /// the table.
    at: Chunked<u32>,
    /// Weighted round robin's walk over these slots by weight, built at its first
    /// use (see `weights`).
    pub(super) walk: OnceLock<WeightWalk>,
}

/// The place of a slot not in the list.
const UNLISTED: u32 = u32::MAX;

impl Ready {
    /// The list of `slots` of a table of `len` slots, as of count `epoch`.
    pub(super) fn new(epoch: u64, slots: Vec<u32>, len: usize) -> Self {
        let mut at = vec![UNLISTED; len];
        for (place, &pos) in slots.iter().enumerate() {
            at[pos as usize] = place as u32;
        }
        Self {
            epoch,
            slots: Chunked::from_vec(slots),
            at: Chunked::from_vec(at),
            walk: OnceLock::new(),
        }
    }

    /// A list never built: no count of a log reaches its epoch, so the first pick
    /// builds it.
    pub(super) fn never() -> Self {
        Self::new(NEVER, Vec::new(), 0)
    }

    /// A copy to change, as of count `epoch` (its walk is built anew when needed).
    fn next(&self, epoch: u64) -> Self {
        Self {
            epoch,
            slots: self.slots.clone(),
            at: self.at.clone(),
            walk: OnceLock::new(),
        }
    }

    /// Lists slot `pos` unless it is listed.
    fn add(&mut self, pos: u32) {
        if self.at[pos as usize] == UNLISTED {
            self.at.set(pos as usize, self.slots.len() as u32);
            self.slots.push(pos);
        }
    }

    /// Takes slot `pos` out of the list if it is listed, the last one taking its place.
    fn take_out(&mut self, pos: u32) {
        let place = self.at[pos as usize];
        if place == UNLISTED {
            return;
        }
        self.at.set(pos as usize, UNLISTED);
        if let (_, Some(last)) = self.slots.swap_remove(place as usize) {
            self.at.set(last as usize, place);
        }
    }

    /// Follows the table's removal of slot `pos`, the last slot (`moved_from`) taking
    /// its place if another one was last.
    fn removed(&mut self, pos: u32, moved_from: Option<u32>) {
        self.take_out(pos);
        if let Some(from) = moved_from {
            let place = self.at[from as usize];
            if place != UNLISTED {
                self.slots.set(place as usize, pos);
            }
            self.at.set(pos as usize, place);
        }
        self.at.pop();
    }
}

/// The count no [`ReadyLog`] reaches: a list never built.
const NEVER: u64 = u64::MAX;

/// `current` carried through `moves` (as of the same count), each added slot listed
/// if `ready(its final place)`: O(moves), copying the chunks the moves touch.
fn carry(current: &Ready, moves: &[Move], ready: impl Fn(u32) -> bool) -> Ready {
    let mut next = current.next(current.epoch);
    // The slots added by this apply, followed to their final places.
    let mut added: std::collections::HashSet<u32> = std::collections::HashSet::new();
    for m in moves {
        match *m {
            Move::Removed { pos, moved_from } => {
                next.removed(pos, moved_from);
                added.remove(&pos);
                if let Some(from) = moved_from
                    && added.remove(&from)
                {
                    added.insert(pos);
                }
            }
            Move::Added { pos } => {
                debug_assert_eq!(pos as usize, next.at.len());
                next.at.push(UNLISTED);
                added.insert(pos);
            }
        }
    }
    // Whether an added slot is ready is read once all moves are done, at its final
    // place.
    let mut added: Vec<u32> = added.into_iter().collect();
    added.sort_unstable();
    for pos in added.into_iter().filter(|&pos| ready(pos)) {
        next.add(pos);
    }
    next
}

impl Table {
    /// This table's ready list carried over to a table made from it by `moves`, as of
    /// the same count of the channel's [`ReadyLog`] (the next pick catches up from
    /// there), without reading any slot's connection but the added ones': O(moves ×
    /// log N). `None` if this table's list was never built.
    pub(super) fn ready_after(&self, moves: &[Move], slots: &Slots) -> Option<Ready> {
        let current = self.ready.load();
        if current.epoch == NEVER {
            return None;
        }
        let carried = carry(&current, moves, |pos| slots[pos as usize].conn.is_ready());
        debug_assert_eq!(carried.at.len(), slots.len());
        Some(carried)
    }

    /// The ready slots, brought up to date if a connection entered or left the
    /// rotation since the list was made: by the connections `log` names (see
    /// [`Self::caught_up`]), or, if the log no longer holds them all, by reading
    /// every slot's flag.
    pub(super) fn ready(
        &self,
        log: &ReadyLog,
        index: &Mutex<Index>,
    ) -> arc_swap::Guard<Arc<Ready>> {
        let current = self.ready.load();
        if current.epoch == log.count() {
            return current;
        }
        drop(current);
        let _rebuilding = self.rebuilding.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.ready.load();
        let now = log.count();
        if current.epoch == now {
            return current;
        }
        let ready = match log.since(current.epoch) {
            Some((now, changed)) if current.epoch != NEVER => {
                self.caught_up(&current, now, &changed, index)
            }
            _ => None,
        };
        // The count is read before the flags: a change during the pass comes after
        // it, and the next pick catches up with it.
        let ready =
            ready.unwrap_or_else(|| Ready::new(now, self.read_every_flag(), self.slots.len()));
        self.ready.store(Arc::new(ready));
        self.ready.load()
    }

    /// The ready slots, read from every slot's connection, in increasing order.
    pub(super) fn read_every_flag(&self) -> Vec<u32> {
        (0..self.slots.len() as u32)
            .filter(|&i| self.slots[i as usize].conn.is_ready())
            .collect()
    }

    /// `ready` (this table's list) brought up to count `now` for the connections to
    /// the addresses `changed`: each one's slot found through the index, its flag read
    /// again, and the slot listed or taken out; O(changed × log N), with no slot's
    /// connection read but the changed ones. `None` if the index has moved on to a
    /// newer table than this one (then every flag is read).
    fn caught_up(
        &self,
        ready: &Ready,
        now: u64,
        changed: &[Arc<str>],
        index: &Mutex<Index>,
    ) -> Option<Ready> {
        let positions: Vec<u32> = {
            let index = index.lock().unwrap_or_else(|e| e.into_inner());
            let mut positions = Vec::with_capacity(changed.len());
            for addr in changed {
                // An address the set no longer holds has no slot to update.
                let Some(slot) = index.slot(addr) else {
                    continue;
                };
                let pos = slot.pos.load(Ordering::Relaxed);
                if pos >= self.slots.len() || self.slots[pos].endpoint.addr != **addr {
                    return None;
                }
                positions.push(pos as u32);
            }
            positions
        };
        let mut next = ready.next(now);
        for pos in positions {
            if self.slots[pos as usize].conn.is_ready() {
                next.add(pos);
            } else {
                next.take_out(pos);
            }
        }
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every listed slot's place is where the list holds it, every other slot is
    /// unlisted, and `at` is as long as the table.
    fn consistent(ready: &Ready, table_len: usize) -> bool {
        let listed = (0..ready.slots.len()).all(|k| ready.at[ready.slots[k] as usize] == k as u32);
        let unlisted = ready.at.iter().filter(|&&p| p == UNLISTED).count();
        listed && ready.at.len() == table_len && unlisted + ready.slots.len() == table_len
    }

    /// Random tables changed by random moves: the carried list holds exactly the slots
    /// whose flags are set at their final places, its places agree with it, and the
    /// list it came from is untouched.
    #[test]
    fn carrying_follows_every_move_and_leaves_the_old_list_alone() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for round in 0..300 {
            // The table: each slot's flag; the list: the slots whose flag is set.
            let mut flags: Vec<bool> = (0..rng.random_range(1..300))
                .map(|_| rng.random_bool(0.7))
                .collect();
            let listed: Vec<u32> = (0..flags.len() as u32)
                .filter(|&p| flags[p as usize])
                .collect();
            let before = Ready::new(5, listed.clone(), flags.len());
            assert!(consistent(&before, flags.len()));
            let mut moves = Vec::new();
            for _ in 0..rng.random_range(0..150) {
                let len = flags.len() as u32;
                if len > 0 && rng.random_bool(0.5) {
                    let pos = rng.random_range(0..len);
                    let last = len - 1;
                    moves.push(Move::Removed {
                        pos,
                        moved_from: (pos != last).then_some(last),
                    });
                    flags.swap_remove(pos as usize);
                } else {
                    moves.push(Move::Added { pos: len });
                    flags.push(rng.random_bool(0.5));
                }
            }
            let carried = carry(&before, &moves, |pos| flags[pos as usize]);
            assert!(consistent(&carried, flags.len()), "round {round}");
            let mut held: Vec<u32> = carried.slots.iter().copied().collect();
            held.sort_unstable();
            let want: Vec<u32> = (0..flags.len() as u32)
                .filter(|&p| flags[p as usize])
                .collect();
            assert_eq!(held, want, "round {round}: {moves:?}");
            assert_eq!(carried.epoch, 5);
            assert_eq!(before.slots.iter().copied().collect::<Vec<_>>(), listed);
        }
    }

    #[test]
    fn adding_and_taking_out_keeps_the_places() {
        let mut ready = Ready::new(1, vec![2, 4, 6, 8], 10);
        ready.take_out(4);
        ready.take_out(9);
        ready.add(6);
        ready.add(1);
        assert!(consistent(&ready, 10));
        let mut held: Vec<u32> = ready.slots.iter().copied().collect();
        held.sort_unstable();
        assert_eq!(held, [1, 2, 6, 8]);
    }
}
