//! [`Slots`]: the table's list of slots, shared in chunks between one table and the
//! next; [`Chunked`], the same for any element (the ready list's slot numbers too).
//!
//! Contract: a vector with O(1) indexing, whose clone copies one
//! pointer per [`GROUP`] × [`CHUNK`] slots (4,096), and whose `set`, `push` and
//! `swap_remove` copy only the group and the chunk they touch when they are shared
//! (64 pointers each). So a table made from the one in service by C changes costs
//! O(N / 4,096 + 128 × C) pointer copies instead of O(N) reference counts on slots
//! scattered over the heap.
//!
//! Why two levels: with chunks alone a table's clone copied N / 64 pointers, most of
//! the cost of one change to a set of 100,000 (1,563 reference counts taken and given
//! back, about 17 of its 21 µs; `BENCH_PART=apply cargo bench -p dtmdriver-core
//! --bench endpoints`, docs/performance.md). Hand-rolled rather than `rpds::Vector` (a
//! 32-way trie): a pick indexes the table on every call, and a trie costs a load per
//! level and a branch on its depth, where this costs a fixed path whose first level
//! (one pointer per 4,096 slots) stays in cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::table::Slot;

/// Slots per chunk.
pub(super) const CHUNK: usize = 64;

/// Chunks per group.
pub(super) const GROUP: usize = 64;

type Chunk<T> = Arc<Vec<T>>;
type Group<T> = Arc<Vec<Chunk<T>>>;

/// A vector shared in groups of chunks; see the [module docs](self).
pub(super) struct Chunked<T> {
    groups: Vec<Group<T>>,
    len: usize,
}

/// The table's slots.
pub(super) type Slots = Chunked<Arc<Slot>>;

impl<T> Clone for Chunked<T> {
    fn clone(&self) -> Self {
        Self {
            groups: self.groups.clone(),
            len: self.len,
        }
    }
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Self {
            groups: Vec::new(),
            len: 0,
        }
    }
}

/// The group, chunk and place in its chunk of slot `i`.
fn place(i: usize) -> (usize, usize, usize) {
    let c = i / CHUNK;
    (c / GROUP, c % GROUP, i % CHUNK)
}

impl<T: Clone> Chunked<T> {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(super) fn iter(&self) -> <&Self as IntoIterator>::IntoIter {
        self.into_iter()
    }

    /// The element at `i`, writable: its group and chunk copied first if shared.
    /// Panics if `i` is out of bounds.
    fn slot_mut(&mut self, i: usize) -> &mut T {
        let (g, c, k) = place(i);
        &mut Arc::make_mut(&mut Arc::make_mut(&mut self.groups[g])[c])[k]
    }

    /// Replaces element `i`. Panics if `i` is out of bounds.
    pub(super) fn set(&mut self, i: usize, slot: T) {
        *self.slot_mut(i) = slot;
    }

    pub(super) fn push(&mut self, slot: T) {
        if self.len.is_multiple_of(CHUNK * GROUP) {
            self.groups.push(Arc::new(Vec::with_capacity(GROUP)));
        }
        let group = Arc::make_mut(self.groups.last_mut().expect("a group with room"));
        if self.len.is_multiple_of(CHUNK) {
            group.push(Arc::new(Vec::with_capacity(CHUNK)));
        }
        Arc::make_mut(group.last_mut().expect("a chunk with room")).push(slot);
        self.len += 1;
    }

    pub(super) fn pop(&mut self) -> Option<T> {
        let group = Arc::make_mut(self.groups.last_mut()?);
        let chunk = Arc::make_mut(group.last_mut()?);
        let slot = chunk.pop();
        if chunk.is_empty() {
            group.pop();
            if group.is_empty() {
                self.groups.pop();
            }
        }
        self.len -= 1;
        slot
    }

    /// Takes element `i` out, moving the last one into its place; returns the one
    /// taken and the one moved (if another was moved). Panics if `i` is out of bounds.
    pub(super) fn swap_remove(&mut self, i: usize) -> (T, Option<T>) {
        assert!(i < self.len, "slot {i} of {}", self.len);
        let last = self.pop().expect("not empty");
        if i == self.len {
            return (last, None);
        }
        let taken = std::mem::replace(self.slot_mut(i), last.clone());
        (taken, Some(last))
    }
}

impl Slots {
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

impl<T> std::ops::Index<usize> for Chunked<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        let (g, c, k) = place(i);
        &self.groups[g][c][k]
    }
}

type GroupIter<'a, T> = std::slice::Iter<'a, Group<T>>;
type ChunkIter<'a, T> = std::slice::Iter<'a, Chunk<T>>;
type ItemIter<'a, T> = std::slice::Iter<'a, T>;
type ChunksOf<'a, T> =
    std::iter::FlatMap<GroupIter<'a, T>, ChunkIter<'a, T>, fn(&'a Group<T>) -> ChunkIter<'a, T>>;

impl<'a, T> IntoIterator for &'a Chunked<T> {
    type Item = &'a T;
    type IntoIter =
        std::iter::FlatMap<ChunksOf<'a, T>, ItemIter<'a, T>, fn(&'a Chunk<T>) -> ItemIter<'a, T>>;
    fn into_iter(self) -> Self::IntoIter {
        let chunks: ChunksOf<'a, T> = self.groups.iter().flat_map(|g| g.iter());
        chunks.flat_map(|c| c.iter())
    }
}

impl<T: Clone> Chunked<T> {
    /// The elements of `items`, in order, copied into chunks in bulk.
    pub(super) fn from_vec(items: Vec<T>) -> Self {
        let len = items.len();
        let chunks: Vec<Chunk<T>> = items.chunks(CHUNK).map(|c| Arc::new(c.to_vec())).collect();
        let groups = chunks.chunks(GROUP).map(|g| Arc::new(g.to_vec())).collect();
        Self { groups, len }
    }
}

impl<T: Clone> FromIterator<T> for Chunked<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
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
        // Only the chunk holding slot 70 (and the last one), and their group, were
        // copied.
        assert!(!Arc::ptr_eq(&all.groups[0], &next.groups[0]));
        assert!(Arc::ptr_eq(&all.groups[0][0], &next.groups[0][0]));
        assert!(!Arc::ptr_eq(&all.groups[0][1], &next.groups[0][1]));
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
        assert!(small.groups.is_empty());
        small.push(slot(1));
        assert_eq!(ports(&small), [1]);
    }

    /// Across groups: a change copies its group and chunk and shares every other group;
    /// random pushes, sets and removals end where a `Vec` does.
    #[test]
    fn groups_are_shared_until_touched_and_follow_a_vec() {
        let slots: Vec<Arc<Slot>> = (0..9000).map(slot).collect();
        let all: Slots = slots.iter().cloned().collect();
        assert_eq!(all.groups.len(), 3);
        let mut next = all.clone();
        next.set(5000, slot(90_000));
        assert!(Arc::ptr_eq(&all.groups[0], &next.groups[0]));
        assert!(!Arc::ptr_eq(&all.groups[1], &next.groups[1]));
        assert!(Arc::ptr_eq(&all.groups[2], &next.groups[2]));
        assert_eq!(all[5000].endpoint.addr, "10.0.0.1:5000");
        assert_eq!(next[5000].endpoint.addr, "10.0.0.1:90000");

        let mut model: Vec<usize> = (0..9000).collect();
        model[5000] = 90_000;
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut below = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for step in 0..20_000 {
            match below(3) {
                0 if !model.is_empty() => {
                    let i = below(model.len());
                    let (taken, moved) = next.swap_remove(i);
                    assert_eq!(taken.endpoint.addr, format!("10.0.0.1:{}", model[i]));
                    let last = model.pop().unwrap();
                    if i < model.len() {
                        model[i] = last;
                        assert!(moved.is_some());
                    } else {
                        assert!(moved.is_none());
                    }
                }
                1 if !model.is_empty() => {
                    let i = below(model.len());
                    model[i] = 100_000 + step;
                    next.set(i, slot(100_000 + step));
                }
                _ => {
                    model.push(200_000 + step);
                    next.push(slot(200_000 + step));
                }
            }
            assert_eq!(next.len(), model.len());
        }
        assert_eq!(ports(&next), model);
        assert!(
            (0..model.len()).all(|i| next[i].endpoint.addr == format!("10.0.0.1:{}", model[i]))
        );
        // The first table is as it was.
        assert_eq!(ports(&all), (0..9000).collect::<Vec<_>>());
    }
}
