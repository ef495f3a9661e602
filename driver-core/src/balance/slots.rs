//! [`Slots`]: the table's list of slots, shared in chunks between one table and the
//! next.
//!
//! Contract: a vector of `Arc<Slot>` with O(1) indexing (two loads), whose clone
//! copies one pointer per [`CHUNK`] slots, and whose `set`, `push` and `swap_remove`
//! copy only the chunk they touch when it is shared. So a table made from the one in
//! service by C changes costs O(N / 64 + 64 × C) pointer copies instead of O(N)
//! reference counts on slots scattered over the heap (measured at N = 10,000 by the
//! `endpoints` bench's apply table, see docs/performance.md).
//!
//! Hand-rolled rather than `rpds::Vector` (a 32-way trie): a pick indexes the table on
//! every call, and a trie costs a load per level (4 at 100,000 slots) where this costs
//! two.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::table::Slot;

/// Slots per chunk.
pub(super) const CHUNK: usize = 64;

#[derive(Clone, Default)]
pub(super) struct Slots {
    chunks: Vec<Arc<Vec<Arc<Slot>>>>,
    len: usize,
}

impl Slots {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(super) fn iter(&self) -> <&Self as IntoIterator>::IntoIter {
        self.into_iter()
    }

    /// Replaces slot `i`. Panics if `i` is out of bounds.
    pub(super) fn set(&mut self, i: usize, slot: Arc<Slot>) {
        Arc::make_mut(&mut self.chunks[i / CHUNK])[i % CHUNK] = slot;
    }

    pub(super) fn push(&mut self, slot: Arc<Slot>) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Arc::new(Vec::with_capacity(CHUNK)));
        }
        let last = self.chunks.last_mut().expect("a chunk with room");
        Arc::make_mut(last).push(slot);
        self.len += 1;
    }

    fn pop(&mut self) -> Option<Arc<Slot>> {
        let last = self.chunks.last_mut()?;
        let slot = Arc::make_mut(last).pop();
        if last.is_empty() {
            self.chunks.pop();
        }
        self.len -= 1;
        slot
    }

    /// Takes slot `i` out, moving the last slot into its place; returns the slot taken
    /// and the one moved (if another was moved). Panics if `i` is out of bounds.
    pub(super) fn swap_remove(&mut self, i: usize) -> (Arc<Slot>, Option<Arc<Slot>>) {
        assert!(i < self.len, "slot {i} of {}", self.len);
        let last = self.pop().expect("not empty");
        if i == self.len {
            return (last, None);
        }
        let chunk = Arc::make_mut(&mut self.chunks[i / CHUNK]);
        let taken = std::mem::replace(&mut chunk[i % CHUNK], last.clone());
        (taken, Some(last))
    }

    /// Appends `slot`, recording its place in `place(slot)`; the place.
    pub(super) fn push_placed(
        &mut self,
        slot: &Arc<Slot>,
        place: fn(&Slot) -> &AtomicUsize,
    ) -> usize {
        let pos = self.len;
        place(slot).store(pos, Ordering::Relaxed);
        self.push(slot.clone());
        pos
    }

    /// Takes `slot` out from the place `place(slot)` records in this list, the last
    /// slot moving into it and `place` of that slot updated; the place emptied, and
    /// whether another slot moved into it. (The table's list, a weight class and a
    /// band each keep their slots' places this way.)
    pub(super) fn swap_out(
        &mut self,
        slot: &Slot,
        place: fn(&Slot) -> &AtomicUsize,
    ) -> (usize, bool) {
        let pos = place(slot).load(Ordering::Relaxed);
        let (_, moved) = self.swap_remove(pos);
        if let Some(moved) = &moved {
            place(moved).store(pos, Ordering::Relaxed);
        }
        (pos, moved.is_some())
    }
}

impl std::ops::Index<usize> for Slots {
    type Output = Arc<Slot>;
    fn index(&self, i: usize) -> &Arc<Slot> {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

type ChunkIter<'a> = std::slice::Iter<'a, Arc<Vec<Arc<Slot>>>>;
type SlotIter<'a> = std::slice::Iter<'a, Arc<Slot>>;

impl<'a> IntoIterator for &'a Slots {
    type Item = &'a Arc<Slot>;
    type IntoIter = std::iter::FlatMap<
        ChunkIter<'a>,
        SlotIter<'a>,
        fn(&'a Arc<Vec<Arc<Slot>>>) -> SlotIter<'a>,
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.chunks.iter().flat_map(|c| c.iter())
    }
}

impl FromIterator<Arc<Slot>> for Slots {
    fn from_iter<I: IntoIterator<Item = Arc<Slot>>>(iter: I) -> Self {
        let mut slots = Self::default();
        for slot in iter {
            slots.push(slot);
        }
        slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::transport::connection::Connection;
    use crate::resolve::Endpoint;

    fn slot(i: usize) -> Arc<Slot> {
        let addr = format!("10.0.0.1:{i}");
        Arc::new(Slot::new(
            Arc::new(Endpoint::new(&addr)),
            None,
            Connection::detached(&addr),
        ))
    }

    fn ports(slots: &Slots) -> Vec<usize> {
        slots
            .iter()
            .map(|s| s.endpoint.addr.rsplit(':').next().unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    fn chunks_are_shared_until_touched() {
        let all: Slots = (0..200).map(slot).collect();
        assert_eq!(all.len(), 200);
        assert_eq!(ports(&all), (0..200).collect::<Vec<_>>());
        let mut next = all.clone();
        let (taken, moved) = next.swap_remove(70);
        assert_eq!(taken.endpoint.addr, "10.0.0.1:70");
        assert_eq!(moved.unwrap().endpoint.addr, "10.0.0.1:199");
        assert_eq!(next.len(), 199);
        assert_eq!(next[70].endpoint.addr, "10.0.0.1:199");
        // Only the chunk holding slot 70 (and the last one) was copied.
        assert!(Arc::ptr_eq(&all.chunks[0], &next.chunks[0]));
        assert!(!Arc::ptr_eq(&all.chunks[1], &next.chunks[1]));
        assert_eq!(
            all[70].endpoint.addr, "10.0.0.1:70",
            "the old table is untouched"
        );
        // The last slot taken: nothing moves.
        let (taken, moved) = next.swap_remove(198);
        assert!(moved.is_none());
        assert_eq!(taken.endpoint.addr, "10.0.0.1:198");
        next.set(0, slot(500));
        next.push(slot(501));
        assert_eq!(next.len(), 199);
        assert_eq!(next[0].endpoint.addr, "10.0.0.1:500");
        assert_eq!(next[198].endpoint.addr, "10.0.0.1:501");
        // Down to empty and up again across a chunk boundary.
        let mut small: Slots = (0..65).map(slot).collect();
        while !small.is_empty() {
            small.swap_remove(0);
        }
        assert!(small.chunks.is_empty());
        small.push(slot(1));
        assert_eq!(ports(&small), [1]);
    }
}
