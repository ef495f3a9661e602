//! The endpoint table in service, and applying a resolver snapshot to it.
//!
//! Contract: a snapshot's endpoints become the table's slots in the snapshot's order;
//! an address already in service keeps its connection (and its load numbers), one new
//! to the channel takes the process-wide pooled connection for that address; an
//! endpoint whose weight or metadata changed gets a fresh slot on the same connection;
//! a resolver error keeps the last set in service; "nothing resolved yet" stays
//! unresolved. Calls read the table without a lock (an `ArcSwap`), so applying never
//! blocks a call.
//!
//! Cost, for a set of N endpoints of which C changed:
//!
//! - the very snapshot applied before (the same `Arc`, as a resolver error or a
//!   re-sent set carries it): nothing, one pointer comparison;
//! - any other snapshot: one pass comparing each endpoint with the slot at the same
//!   place in the old table (a string comparison, no hashing, no allocation), and one
//!   hash lookup for each of the C endpoints that moved, appeared, changed or vanished,
//!   in the channel's index of slots by address ([`Index`]), and in the connection pool
//!   for each new address. After an insertion or removal the pass finds its place in
//!   the old table again from the index (each slot remembers its position), so one
//!   change costs one lookup, not a shift of everything after it. A snapshot equal to
//!   the table publishes nothing.
//!
//! The table also keeps what the policies read on every call: the list of ready slots
//! ([`Table::ready`]), rebuilt only when one of the channel's connections enters or
//! leaves the rotation (each connection ticks the channel's counter when its ready flag
//! changes), and the weighted round robin schedule, built at the first weighted pick
//! after a change (see `policy`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use http::uri::Authority;

use super::channel::ChannelInner;
use super::transport::connection::Connection;
use crate::resolve::{Endpoint, ResolverState};

pub(super) struct Slot {
    pub(super) endpoint: Endpoint,
    /// The endpoint's address parsed once for request URIs; `None` if it is not a
    /// valid authority (calls picking it then fail `INTERNAL` saying so).
    pub(super) authority: Option<Authority>,
    pub(super) conn: Arc<Connection>,
    /// Smooth-WRR running weight (the fallback of the weighted schedule).
    pub(super) wrr_current: AtomicI64,
    /// The apply that last kept this slot ([`Index::stamp`]); only the updater writes it.
    seen: AtomicU64,
    /// The slot's place in the newest table.
    pos: AtomicUsize,
}

impl Slot {
    fn new(endpoint: Endpoint, authority: Option<Authority>, conn: Arc<Connection>) -> Self {
        Self {
            endpoint,
            authority,
            conn,
            wrr_current: AtomicI64::new(0),
            seen: AtomicU64::new(0),
            pos: AtomicUsize::new(0),
        }
    }
}

/// The endpoint set in service and what the policies derive from it.
pub(super) struct Table {
    pub(super) resolved: bool,
    pub(super) last_error: Option<String>,
    pub(super) slots: Vec<Arc<Slot>>,
    /// The ready slots as of a count of the channel's readiness changes.
    ready: ArcSwap<Ready>,
    /// Held while `ready` is rebuilt, so concurrent calls rebuild it once.
    rebuilding: Mutex<()>,
    /// The weighted round robin schedule, built at the first weighted pick.
    pub(super) schedule: OnceLock<Vec<u32>>,
}

/// The indices of the ready slots, as of `epoch` of the channel's readiness counter.
pub(super) struct Ready {
    epoch: u64,
    pub(super) slots: Vec<u32>,
}

impl Table {
    pub(super) fn new(resolved: bool, last_error: Option<String>, slots: Vec<Arc<Slot>>) -> Self {
        Self {
            resolved,
            last_error,
            slots,
            // No count ever reaches this: the first pick builds the list.
            ready: ArcSwap::from_pointee(Ready {
                epoch: u64::MAX,
                slots: Vec::new(),
            }),
            rebuilding: Mutex::new(()),
            schedule: OnceLock::new(),
        }
    }

    /// The ready slots, rebuilt (one pass over the slots) if a connection entered or
    /// left the rotation since the last call; `changes` is the channel's counter that
    /// every connection of the table ticks.
    pub(super) fn ready(&self, changes: &AtomicU64) -> arc_swap::Guard<Arc<Ready>> {
        let now = changes.load(Ordering::Acquire);
        let current = self.ready.load();
        if current.epoch == now {
            return current;
        }
        drop(current);
        let _rebuilding = self.rebuilding.lock().unwrap_or_else(|e| e.into_inner());
        // Read the count before the flags: a change during the pass ticks it again,
        // so the next call rebuilds.
        let now = changes.load(Ordering::Acquire);
        let current = self.ready.load();
        if current.epoch == now {
            return current;
        }
        let slots = (0..self.slots.len() as u32)
            .filter(|&i| self.slots[i as usize].conn.is_ready())
            .collect();
        self.ready.store(Arc::new(Ready { epoch: now, slots }));
        self.ready.load()
    }
}

/// The channel's index of its slots by address, kept by the updater across applies so
/// that an apply hashes only what changed.
#[derive(Default)]
pub(super) struct Index {
    by_addr: HashMap<String, Arc<Slot>>,
    /// Counts applies; the slots kept by the current one carry its value in `seen`.
    stamp: u64,
    /// The snapshot the table was built from.
    source: Option<Arc<Vec<Endpoint>>>,
}

/// What an apply changed.
pub(super) struct Diff {
    /// The new slots, or `None` if the table already holds exactly these endpoints.
    pub(super) slots: Option<Vec<Arc<Slot>>>,
    /// Slots of addresses new to the channel.
    pub(super) added: Vec<Arc<Slot>>,
    /// Slots of addresses gone from the set.
    pub(super) removed: Vec<Arc<Slot>>,
}

impl Index {
    /// Diffs `endpoints` against the table `old` (which this index describes), taking a
    /// connection from `connect` for each new address. See the module docs for the cost.
    pub(super) fn diff(
        &mut self,
        old: &[Arc<Slot>],
        endpoints: &[Endpoint],
        mut connect: impl FnMut(&Endpoint) -> Arc<Connection>,
    ) -> Diff {
        self.stamp += 1;
        let stamp = self.stamp;
        let mut slots = Vec::with_capacity(endpoints.len());
        let mut added = Vec::new();
        let mut changed = old.len() != endpoints.len();
        // Where the old table is expected to continue.
        let mut next = 0;
        for (i, ep) in endpoints.iter().enumerate() {
            let found = match old.get(next) {
                Some(s) if s.endpoint.addr == ep.addr => {
                    next += 1;
                    Some(s)
                }
                _ => {
                    changed = true;
                    let s = self.by_addr.get(ep.addr.as_str());
                    if let Some(s) = s
                        && s.seen.load(Ordering::Relaxed) != stamp
                    {
                        next = s.pos.load(Ordering::Relaxed) + 1;
                    }
                    s
                }
            };
            let slot = match found {
                Some(s) if s.endpoint == *ep => s.clone(),
                Some(s) => {
                    // Weight or metadata changed: a fresh slot on the same connection.
                    changed = true;
                    let slot = Arc::new(Slot::new(ep.clone(), s.authority.clone(), s.conn.clone()));
                    self.by_addr.insert(ep.addr.clone(), slot.clone());
                    slot
                }
                None => {
                    changed = true;
                    let slot = Arc::new(Slot::new(ep.clone(), ep.addr.parse().ok(), connect(ep)));
                    self.by_addr.insert(ep.addr.clone(), slot.clone());
                    added.push(slot.clone());
                    slot
                }
            };
            slot.seen.store(stamp, Ordering::Relaxed);
            slot.pos.store(i, Ordering::Relaxed);
            slots.push(slot);
        }
        let mut removed = Vec::new();
        if changed {
            for s in old {
                if s.seen.load(Ordering::Relaxed) == stamp {
                    continue;
                }
                // Not kept: replaced by a fresh slot for the same address, or gone.
                let addr = s.endpoint.addr.as_str();
                if self
                    .by_addr
                    .get(addr)
                    .is_some_and(|cur| cur.seen.load(Ordering::Relaxed) != stamp)
                    && let Some(gone) = self.by_addr.remove(addr)
                {
                    removed.push(gone);
                }
            }
        }
        Diff {
            slots: changed.then_some(slots),
            added,
            removed,
        }
    }
}

impl ChannelInner {
    /// Applies a resolver snapshot: diff into slots, reuse connections by address.
    pub(super) fn apply(&self, state: &ResolverState) {
        let old = self.table();
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        let Some(endpoints) = &state.endpoints else {
            if state.last_error != old.last_error {
                *index = Index::default();
                self.publish(Table::new(false, state.last_error.clone(), Vec::new()));
            }
            return;
        };
        if let Some(err) = &state.last_error {
            tracing::warn!(target = %self.target, error = %err, endpoints = endpoints.len(),
                "resolver error; keeping the last endpoint set");
        }
        let same_source = old.resolved
            && index
                .source
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, endpoints));
        let diff = if same_source {
            None
        } else {
            index.source = Some(endpoints.clone());
            Some(index.diff(&old.slots, endpoints, |ep| {
                Connection::pooled(&ep.addr, &self.dial)
            }))
        };
        drop(index);
        let (slots, added) = match diff {
            Some(diff) => {
                for s in &diff.added {
                    s.conn.watch_ready(&self.ready_changes);
                    tracing::info!(target = %self.target, addr = %s.endpoint.addr, weight = s.endpoint.weight, "endpoint added");
                }
                for s in &diff.removed {
                    tracing::info!(target = %self.target, addr = %s.endpoint.addr, "endpoint removed");
                }
                (diff.slots, diff.added)
            }
            None => (None, Vec::new()),
        };
        let slots = match slots {
            Some(slots) => slots,
            None if old.resolved && old.last_error == state.last_error => return,
            None => old.slots.clone(),
        };
        self.publish(Table::new(true, state.last_error.clone(), slots));
        // Dial new endpoints now if the channel is in use, so changes apply without
        // traffic; an unused channel stays lazy. (The slots kept were dialled when they
        // were added, or by `activate`.)
        if self.active.load(Ordering::SeqCst) {
            for s in &added {
                s.conn.start();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::channel::test_channel;
    use crate::balance::policy::Policy;

    fn eps(addrs: &[&str]) -> Vec<Endpoint> {
        addrs.iter().map(|a| Endpoint::new(*a)).collect()
    }

    fn addrs(slots: &[Arc<Slot>]) -> Vec<&str> {
        slots.iter().map(|s| s.endpoint.addr.as_str()).collect()
    }

    /// Applies `endpoints` to `(index, table)` and returns the diff and the number of
    /// connections asked for.
    fn step(
        index: &mut Index,
        table: &mut Vec<Arc<Slot>>,
        endpoints: &[Endpoint],
    ) -> (Diff, usize) {
        let mut dialled = 0;
        let diff = index.diff(table, endpoints, |ep| {
            dialled += 1;
            Connection::detached(&ep.addr)
        });
        if let Some(slots) = &diff.slots {
            *table = slots.clone();
        }
        (diff, dialled)
    }

    #[test]
    fn diff_keeps_slots_by_address_and_touches_only_changes() {
        let (mut index, mut table) = (Index::default(), Vec::new());
        let (d, dialled) = step(&mut index, &mut table, &eps(&["a:1", "b:1", "c:1", "d:1"]));
        assert_eq!((d.added.len(), d.removed.len(), dialled), (4, 0, 4));
        let first = table.clone();

        // The same set again (a new Vec): nothing changes, nothing is published.
        let (d, dialled) = step(&mut index, &mut table, &eps(&["a:1", "b:1", "c:1", "d:1"]));
        assert!(d.slots.is_none());
        assert_eq!((d.added.len(), d.removed.len(), dialled), (0, 0, 0));

        // A weight change: a fresh slot on the same connection, the others kept.
        let mut changed = eps(&["a:1", "b:1", "c:1", "d:1"]);
        changed[1] = Endpoint::new("b:1").with_weight(5);
        let (d, dialled) = step(&mut index, &mut table, &changed);
        assert_eq!((d.added.len(), d.removed.len(), dialled), (0, 0, 0));
        assert!(!Arc::ptr_eq(&table[1], &first[1]));
        assert!(Arc::ptr_eq(&table[1].conn, &first[1].conn));
        assert_eq!(table[1].endpoint.weight, 5);
        for i in [0, 2, 3] {
            assert!(Arc::ptr_eq(&table[i], &first[i]));
        }

        // A removal in the middle.
        let (d, dialled) = step(
            &mut index,
            &mut table,
            &changed[..1]
                .iter()
                .chain(&changed[2..])
                .cloned()
                .collect::<Vec<_>>(),
        );
        assert_eq!(addrs(&d.removed), ["b:1"]);
        assert_eq!((d.added.len(), dialled), (0, 0));
        assert_eq!(addrs(&table), ["a:1", "c:1", "d:1"]);
        assert!(Arc::ptr_eq(&table[2], &first[3]));

        // Re-added in front: a new connection for it alone, the rest kept in place.
        let (d, dialled) = step(&mut index, &mut table, &eps(&["b:1", "a:1", "c:1", "d:1"]));
        assert_eq!(
            (addrs(&d.added), d.removed.len(), dialled),
            (vec!["b:1"], 0, 1)
        );
        assert!(!Arc::ptr_eq(&table[0].conn, &first[1].conn));
        assert!(Arc::ptr_eq(&table[1], &first[0]) && Arc::ptr_eq(&table[3], &first[3]));

        // Reordered: same slots, new order, nothing added or removed.
        let (d, dialled) = step(&mut index, &mut table, &eps(&["d:1", "c:1", "b:1", "a:1"]));
        assert!(d.slots.is_some());
        assert_eq!((d.added.len(), d.removed.len(), dialled), (0, 0, 0));
        assert_eq!(addrs(&table), ["d:1", "c:1", "b:1", "a:1"]);
        assert!(Arc::ptr_eq(&table[3], &first[0]));

        // Everything replaced.
        let (d, dialled) = step(&mut index, &mut table, &eps(&["x:1"]));
        assert_eq!((d.added.len(), d.removed.len(), dialled), (1, 4, 1));
        assert_eq!(index.by_addr.len(), 1);
    }

    #[test]
    fn diff_with_duplicate_addresses_keeps_one_slot_per_address() {
        let (mut index, mut table) = (Index::default(), Vec::new());
        let (d, dialled) = step(&mut index, &mut table, &eps(&["a:1", "a:1", "b:1"]));
        assert_eq!((d.added.len(), dialled), (2, 2));
        assert!(Arc::ptr_eq(&table[0], &table[1]));
        // The duplicate goes: nothing is removed, the connections stay.
        let (d, dialled) = step(&mut index, &mut table, &eps(&["a:1", "b:1"]));
        assert_eq!((d.added.len(), d.removed.len(), dialled), (0, 0, 0));
        assert_eq!(addrs(&table), ["a:1", "b:1"]);
        // The address goes: removed once.
        let (d, _) = step(&mut index, &mut table, &eps(&["b:1"]));
        assert_eq!(addrs(&d.removed), ["a:1"]);
    }

    #[test]
    fn one_change_in_a_large_set_dials_and_hashes_only_the_change() {
        let (mut index, mut table) = (Index::default(), Vec::new());
        let all: Vec<Endpoint> = (0..5000)
            .map(|i| Endpoint::new(format!("10.0.{}.{}:80", i / 250, i % 250)))
            .collect();
        step(&mut index, &mut table, &all);
        let before = table.clone();
        // One removed in the middle, one added at the end.
        let mut next = all.clone();
        next.remove(2500);
        next.push(Endpoint::new("10.9.9.9:80"));
        let (d, dialled) = step(&mut index, &mut table, &next);
        assert_eq!((d.added.len(), d.removed.len(), dialled), (1, 1, 1));
        assert_eq!(table.len(), 5000);
        assert!(
            table[..2500]
                .iter()
                .zip(&before[..2500])
                .all(|(a, b)| Arc::ptr_eq(a, b))
        );
        assert!(
            table[2500..4999]
                .iter()
                .zip(&before[2501..])
                .all(|(a, b)| Arc::ptr_eq(a, b))
        );
        assert_eq!(index.by_addr.len(), 5000);
    }

    #[tokio::test]
    async fn an_unchanged_snapshot_publishes_nothing() {
        let inner = test_channel(Policy::RoundRobin);
        let set = Arc::new(eps(&["10.1.0.1:80", "10.1.0.2:80"]));
        let mut state = ResolverState {
            endpoints: Some(set.clone()),
            last_error: None,
            version: 1,
        };
        inner.apply(&state);
        let table = inner.table();
        let version = *inner.table_tx.borrow();
        // The same snapshot, and an equal one built anew: the table stays.
        inner.apply(&state);
        state.endpoints = Some(Arc::new((*set).clone()));
        inner.apply(&state);
        assert!(Arc::ptr_eq(&table, &inner.table()));
        assert_eq!(*inner.table_tx.borrow(), version);
        // An error keeps the set and is shown.
        state.last_error = Some("registry down".into());
        inner.apply(&state);
        let now = inner.table();
        assert_eq!(now.last_error.as_deref(), Some("registry down"));
        assert!(
            now.slots
                .iter()
                .zip(&table.slots)
                .all(|(a, b)| Arc::ptr_eq(a, b))
        );
        assert_eq!(*inner.table_tx.borrow(), version + 1);
    }
}
