//! The list of a table's ready slots, which the policies pick from on every call.
//!
//! Contract: [`Table::ready`] gives the slots whose connection was ready as of the
//! newest count of the channel's [`ReadyLog`] it has caught up with (a pick still
//! checks the flag of what it chose). When connections enter or leave the rotation,
//! each records its address in the log, and the next pick brings the list up to date
//! from those addresses alone (their slots found through the [`Index`], their flags
//! read again, the list rewritten in one pass over its integers): O(ready + changed),
//! no other slot's connection read. Only a list that fell further behind than the log
//! keeps (1/16 of the set) is rebuilt by reading every slot's flag. An apply carries
//! the list over to the next table by its moves ([`Table::ready_after`]), reading no
//! flag but the added slots' (a scan of the list of integers per move for up to 8
//! moves, one bit per slot beyond: O(N / 64 + ready + moves)).
//!
//! Why: reading every slot's flag (three pointers away and cold) on each readiness
//! change cost the next pick 4.9–10.4 ms at 100,000 endpoints; carrying the list by
//! scans cost 43 ms for a batch of 1,000 changes. Measured with `BENCH_PART=apply cargo
//! bench -p dtmdriver-core --bench endpoints` (`docs/performance.md`): now 160–181 µs
//! and 0.43 ms.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock};

use super::slots::Slots;
use super::table::{Index, Move, Table};
use super::transport::ready_log::ReadyLog;
use super::weights::WeightWalk;

/// The indices of the ready slots, as of count `epoch` of the channel's [`ReadyLog`].
pub(super) struct Ready {
    pub(super) epoch: u64,
    pub(super) slots: Vec<u32>,
    /// Weighted round robin's walk over these slots by weight, built at its first
    /// use (see `weights`).
    pub(super) walk: OnceLock<WeightWalk>,
}

impl Ready {
    pub(super) fn new(epoch: u64, slots: Vec<u32>) -> Self {
        Self {
            epoch,
            slots,
            walk: OnceLock::new(),
        }
    }

    /// A list never built: no count of a log reaches its epoch, so the first pick
    /// builds it.
    pub(super) fn never() -> Self {
        Self::new(NEVER, Vec::new())
    }
}

/// The count no [`ReadyLog`] reaches: a list never built.
const NEVER: u64 = u64::MAX;

impl Table {
    /// This table's ready list carried over to a table made from it by `moves`, as of
    /// the same count of the channel's [`ReadyLog`] (the next pick catches up from
    /// there), without reading any slot's connection but the added ones': for a few
    /// moves, a scan of the list of integers per move; for more, one bit per slot
    /// ([`carry_by_bits`]), O(N / 64 + ready + moves). `None` if this table's list was
    /// never built.
    pub(super) fn ready_after(&self, moves: &[Move], slots: &Slots) -> Option<Ready> {
        self.carried(moves, slots, moves.len() > SCAN_MOVES)
    }

    /// [`Self::ready_after`], by bits or by scans as `by_bits` says.
    pub(super) fn carried(&self, moves: &[Move], slots: &Slots, by_bits: bool) -> Option<Ready> {
        let current = self.ready.load();
        if current.epoch == NEVER {
            return None;
        }
        let (mut ready, added) = if by_bits {
            carry_by_bits(&current.slots, moves, self.slots.len() + moves.len() + 1)
        } else {
            carry_by_scan(&current.slots, moves)
        };
        // Whether an added slot is ready is read once all moves are done, at its
        // final place.
        ready.extend(
            added
                .into_iter()
                .filter(|&pos| slots[pos as usize].conn.is_ready()),
        );
        Some(Ready::new(current.epoch, ready))
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
            Some((now, changed)) => self
                .caught_up(&current.slots, &changed, index)
                .map(|slots| Ready::new(now, slots)),
            None => None,
        };
        // The count is read before the flags: a change during the pass comes after
        // it, and the next pick catches up with it.
        let ready = ready.unwrap_or_else(|| Ready::new(now, self.read_every_flag()));
        self.ready.store(Arc::new(ready));
        self.ready.load()
    }

    /// The ready slots, read from every slot's connection.
    pub(super) fn read_every_flag(&self) -> Vec<u32> {
        (0..self.slots.len() as u32)
            .filter(|&i| self.slots[i as usize].conn.is_ready())
            .collect()
    }

    /// `ready` (this table's list) brought up to date for the connections to the
    /// addresses `changed`: each one's slot found through the index, its flag read
    /// again, and the list rewritten in one pass over its integers; O(ready +
    /// changed), with no slot's connection read but the changed ones. `None` if the
    /// index has moved on to a newer table than this one (then every flag is read).
    fn caught_up(
        &self,
        ready: &[u32],
        changed: &[Arc<str>],
        index: &Mutex<Index>,
    ) -> Option<Vec<u32>> {
        let mut positions: Vec<u32> = {
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
        if positions.is_empty() {
            return Some(ready.to_vec());
        }
        positions.sort_unstable();
        positions.dedup();
        let mut listed = vec![false; positions.len()];
        let mut slots = Vec::with_capacity(ready.len() + positions.len());
        for &pos in ready {
            match positions.binary_search(&pos) {
                Ok(k) => {
                    listed[k] = true;
                    if self.slots[pos as usize].conn.is_ready() {
                        slots.push(pos);
                    }
                }
                Err(_) => slots.push(pos),
            }
        }
        for (k, &pos) in positions.iter().enumerate() {
            if !listed[k] && self.slots[pos as usize].conn.is_ready() {
                slots.push(pos);
            }
        }
        Some(slots)
    }
}

/// Moves an apply may make before its ready list is carried over by bits, not scans.
const SCAN_MOVES: usize = 8;

/// The ready list `ready` and the slots added, followed through `moves`, one scan of
/// each list per move: O((ready + added) × moves).
fn carry_by_scan(ready: &[u32], moves: &[Move]) -> (Vec<u32>, Vec<u32>) {
    let mut ready = ready.to_vec();
    let mut added: Vec<u32> = Vec::new();
    for m in moves {
        match *m {
            Move::Removed { pos, moved_from } => {
                for list in [&mut ready, &mut added] {
                    if let Some(at) = list.iter().position(|&i| i == pos) {
                        list.swap_remove(at);
                    }
                    if let Some(from) = moved_from
                        && let Some(at) = list.iter().position(|&i| i == from)
                    {
                        list[at] = pos;
                    }
                }
            }
            Move::Added { pos } => added.push(pos),
        }
    }
    (ready, added)
}

/// As [`carry_by_scan`], with one bit per slot position below `bound` for each list:
/// O(bound / 64 + ready + moves). The lists come out in position order.
fn carry_by_bits(ready: &[u32], moves: &[Move], bound: usize) -> (Vec<u32>, Vec<u32>) {
    fn set(bits: &mut [u64], i: u32, on: bool) {
        let (w, b) = ((i / 64) as usize, i % 64);
        bits[w] = (bits[w] & !(1 << b)) | (u64::from(on) << b);
    }
    fn get(bits: &[u64], i: u32) -> bool {
        bits[(i / 64) as usize] >> (i % 64) & 1 == 1
    }
    fn listed(bits: &[u64]) -> Vec<u32> {
        let mut out = Vec::new();
        for (w, &word) in bits.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                out.push(w as u32 * 64 + word.trailing_zeros());
                word &= word - 1;
            }
        }
        out
    }
    let words = bound.div_ceil(64);
    let (mut ready_bits, mut added_bits) = (vec![0u64; words], vec![0u64; words]);
    for &pos in ready {
        set(&mut ready_bits, pos, true);
    }
    for m in moves {
        match *m {
            Move::Removed { pos, moved_from } => {
                for bits in [&mut ready_bits, &mut added_bits] {
                    let kept = moved_from.is_some_and(|from| get(bits, from));
                    set(bits, pos, kept);
                    if let Some(from) = moved_from {
                        set(bits, from, false);
                    }
                }
            }
            Move::Added { pos } => set(&mut added_bits, pos, true),
        }
    }
    (listed(&ready_bits), listed(&added_bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carrying_by_bits_ends_where_carrying_by_scans_does() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for round in 0..200 {
            let mut len: u32 = rng.random_range(1..300);
            let ready: Vec<u32> = (0..len).filter(|_| rng.random_bool(0.7)).collect();
            let mut moves = Vec::new();
            for _ in 0..rng.random_range(0..40) {
                if len > 0 && rng.random_bool(0.5) {
                    let pos = rng.random_range(0..len);
                    let last = len - 1;
                    moves.push(Move::Removed {
                        pos,
                        moved_from: (pos != last).then_some(last),
                    });
                    len -= 1;
                } else {
                    moves.push(Move::Added { pos: len });
                    len += 1;
                }
            }
            let sorted = |(mut a, mut b): (Vec<u32>, Vec<u32>)| {
                a.sort_unstable();
                b.sort_unstable();
                (a, b)
            };
            let bound = ready.len().max(300) + moves.len() + 1;
            assert_eq!(
                sorted(carry_by_bits(&ready, &moves, bound)),
                sorted(carry_by_scan(&ready, &moves)),
                "round {round}: {moves:?}"
            );
        }
    }
}
