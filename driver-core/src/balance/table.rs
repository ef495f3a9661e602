//! The endpoint table in service, and applying a resolver snapshot to it.
//!
//! Contract: the table holds one slot per endpoint of the resolver's newest set, in
//! the order they arrived (an endpoint that leaves takes the last slot into its place);
//! an address already in service keeps its connection (and its load numbers), one new
//! to the channel takes the process-wide pooled connection for that address; an
//! endpoint whose weight or metadata changed gets a fresh slot on the same connection;
//! a resolver error keeps the last set in service; "nothing resolved yet" stays
//! unresolved. Calls read the table without a lock (an `ArcSwap`), so applying never
//! blocks a call.
//!
//! Cost, for a set of N endpoints of which C changed:
//!
//! - the very set applied before (the same tree, as a resolver error carries it):
//!   nothing, one pointer comparison;
//! - the state right after the one applied last: its [`SetChange`]s alone, one hash
//!   lookup in the channel's index of slots by address ([`Index`]) each (and one in
//!   the connection pool for each new address), and a new table sharing every chunk of
//!   slots the changes did not touch ([`Slots`]): O(C + N / 4,096);
//! - a state after skipped ones (the resolver's cell keeps only the newest): the set
//!   compared with the one applied last, which shares every node off the changed
//!   paths with it ([`EndpointSet::diff`], O(C log N)), then as above; only a table
//!   with no set applied (the first, or after a resolver error emptied it) compares the
//!   whole set with the index, one hash lookup an endpoint.
//!
//! A set equal to the table publishes nothing.
//!
//! The table also keeps what the policies read on every call: the list of ready slots,
//! brought up to date by what changed (see `ready`). The index also keeps the slots
//! by weight (`weights`), O(1) a change: when they are all equal, weighted round robin
//! is round robin; otherwise it takes turns over weight groups, which a table shares
//! in chunks as it shares its slots (see `policy`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::uri::Authority;

use super::channel::ChannelInner;
use super::ready::Ready;
use super::slots::Slots;
use super::transport::connection::Connection;
use super::weights::{Classes, WeightedTurns};
use crate::resolve::{Endpoint, EndpointSet, ResolverState, SetChange};

pub(super) struct Slot {
    /// Shared with the resolver's set when the slot came from it.
    pub(super) endpoint: Arc<Endpoint>,
    /// The endpoint's address parsed once for request URIs; `None` if it is not a
    /// valid authority (calls picking it then fail `INTERNAL` saying so).
    pub(super) authority: Option<Authority>,
    pub(super) conn: Arc<Connection>,
    /// The slot's place in the newest table; only the updater reads and writes it.
    pub(super) pos: AtomicUsize,
    /// The slot's places in its weight class and band (see `weights`); only the
    /// updater reads and writes them.
    pub(super) class_pos: AtomicUsize,
    pub(super) band_pos: AtomicUsize,
    /// The slot's credit towards its next turn in its band (see `weights`).
    pub(super) credit: AtomicU64,
}

impl Slot {
    pub(super) fn new(
        endpoint: Arc<Endpoint>,
        authority: Option<Authority>,
        conn: Arc<Connection>,
    ) -> Self {
        Self {
            endpoint,
            authority,
            conn,
            pos: AtomicUsize::new(0),
            class_pos: AtomicUsize::new(0),
            band_pos: AtomicUsize::new(0),
            credit: AtomicU64::new(0),
        }
    }
}

/// The endpoint set in service and what the policies derive from it.
pub(super) struct Table {
    pub(super) resolved: bool,
    pub(super) last_error: Option<String>,
    pub(super) slots: Slots,
    /// The ready slots as of a count of the channel's [`ReadyLog`].
    pub(super) ready: ArcSwap<Ready>,
    /// Held while `ready` is brought up to date, so concurrent calls do it once.
    pub(super) rebuilding: Mutex<()>,
    /// The weight groups and turns over them, when the weights are not all equal.
    pub(super) weighted: Option<WeightedTurns>,
    /// Set once a waiting call has started every slot's connection (see `gate`).
    pub(super) started: AtomicBool,
}

impl Table {
    pub(super) fn new(resolved: bool, last_error: Option<String>, slots: Slots) -> Self {
        Self::with_ready(resolved, last_error, slots, Ready::never())
    }

    pub(super) fn with_ready(
        resolved: bool,
        last_error: Option<String>,
        slots: Slots,
        ready: Ready,
    ) -> Self {
        Self {
            resolved,
            last_error,
            slots,
            ready: ArcSwap::from_pointee(ready),
            rebuilding: Mutex::new(()),
            weighted: None,
            started: AtomicBool::new(false),
        }
    }

    /// Every slot has the same weight: weighted round robin is round robin.
    pub(super) fn uniform_weight(&self) -> bool {
        self.weighted.is_none()
    }
}

/// From how many new addresses an apply makes room in the connection pool first.
const RESERVED_POOL: usize = 64;

/// The channel's index of its slots by address, kept by the updater across applies so
/// that an apply hashes only what changed.
#[derive(Default)]
pub(super) struct Index {
    /// foldhash, as the resolvers' address maps and the connection pool: SipHash was 6%
    /// of the CPU of a channel's first table of 100,000 endpoints. Keyed by the slot's
    /// own address (no copy of it).
    by_addr: HashSet<ByAddr, crate::resolve::Fast>,
    /// The slots by weight (0 counted as 1, as weighted round robin counts it): one class
    /// means weighted round robin is plain round robin.
    pub(super) classes: Classes,
    /// The version of the resolver state applied last, and its set.
    applied: Option<(u64, EndpointSet)>,
}

/// What an apply changed.
pub(super) struct Diff {
    /// The new slots, or `None` if the table already holds exactly these endpoints.
    pub(super) slots: Option<Slots>,
    /// Slots of addresses new to the channel.
    pub(super) added: Vec<Arc<Slot>>,
    /// Slots of addresses gone from the set.
    pub(super) removed: Vec<Arc<Slot>>,
    /// How slots moved, in order (for carrying the ready list over).
    pub(super) moves: Vec<Move>,
}

/// A slot in the index, found by its address.
struct ByAddr(Arc<Slot>);

impl std::hash::Hash for ByAddr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.endpoint.addr.as_str().hash(state);
    }
}
impl PartialEq for ByAddr {
    fn eq(&self, other: &Self) -> bool {
        self.0.endpoint.addr == other.0.endpoint.addr
    }
}
impl Eq for ByAddr {}
impl std::borrow::Borrow<str> for ByAddr {
    fn borrow(&self) -> &str {
        &self.0.endpoint.addr
    }
}

/// A change as an apply reads it, borrowed from the resolver's changes or set.
#[derive(Clone, Copy)]
enum Change<'a> {
    Put(&'a Endpoint),
    /// A put of an endpoint of the resolver's set, which the slot can share.
    PutShared(&'a Arc<Endpoint>),
    Remove(&'a str),
}

/// One move of slots in an apply.
#[derive(Clone, Copy, Debug)]
pub(super) enum Move {
    /// The slot at `pos` left; the last slot (at `moved_from`) took its place, if
    /// another one was last.
    Removed { pos: u32, moved_from: Option<u32> },
    /// A slot was appended at `pos`.
    Added { pos: u32 },
}

impl Index {
    /// The slot of `addr`, if the set holds it.
    pub(super) fn slot(&self, addr: &str) -> Option<&Arc<Slot>> {
        self.by_addr.get(addr).map(|s| &s.0)
    }

    /// True if every slot has the same weight (or there are none).
    pub(super) fn uniform_weight(&self) -> bool {
        self.classes.len() <= 1
    }

    /// Applies `changes` to the table `old` (which this index describes), taking a
    /// connection from `connect` for each new address.
    pub(super) fn apply_changes(
        &mut self,
        old: &Slots,
        changes: &[SetChange],
        connect: impl FnMut(&Endpoint) -> Arc<Connection>,
    ) -> Diff {
        let changes = changes.iter().map(|change| match change {
            SetChange::Put(ep) => Change::Put(ep),
            SetChange::Remove(addr) => Change::Remove(addr),
        });
        self.apply_each(old, changes, connect)
    }

    /// [`apply_changes`](Self::apply_changes) of borrowed changes.
    fn apply_each<'a>(
        &mut self,
        old: &Slots,
        changes: impl Iterator<Item = Change<'a>>,
        mut connect: impl FnMut(&Endpoint) -> Arc<Connection>,
    ) -> Diff {
        let mut slots = old.clone();
        let (mut added, mut removed, mut moves) = (Vec::new(), Vec::new(), Vec::new());
        let mut changed = false;
        // A first table (or a large batch) would otherwise grow the maps step by step.
        let new_at_most = changes.size_hint().0.saturating_sub(self.by_addr.len());
        self.by_addr.reserve(new_at_most);
        if new_at_most > RESERVED_POOL {
            Connection::reserve_pool(new_at_most);
        }
        for change in changes {
            let (ep, shared) = match change {
                Change::Put(ep) => (ep, None),
                Change::PutShared(ep) => (&**ep, Some(ep)),
                Change::Remove(addr) => {
                    if let Some(ByAddr(gone)) = self.by_addr.take(addr) {
                        self.classes.remove(&gone);
                        let last = slots.len() - 1;
                        let (pos, moved) = slots.swap_out(&gone, |s| &s.pos);
                        moves.push(Move::Removed {
                            pos: pos as u32,
                            moved_from: moved.then_some(last as u32),
                        });
                        removed.push(gone);
                        changed = true;
                    }
                    continue;
                }
            };
            // The slot's endpoint: the set's own when it came from the set.
            let endpoint = || shared.cloned().unwrap_or_else(|| Arc::new(ep.clone()));
            match self.by_addr.get(ep.addr.as_str()).map(|s| &s.0) {
                Some(s) if *s.endpoint == *ep => {}
                Some(s) => {
                    // Weight or metadata changed: a fresh slot on the same connection.
                    let pos = s.pos.load(Ordering::Relaxed);
                    let slot = Arc::new(Slot::new(endpoint(), s.authority.clone(), s.conn.clone()));
                    slot.pos.store(pos, Ordering::Relaxed);
                    self.classes.replace(s, &slot);
                    slots.set(pos, slot.clone());
                    self.by_addr.replace(ByAddr(slot));
                    changed = true;
                }
                None => {
                    let slot = Arc::new(Slot::new(endpoint(), ep.addr.parse().ok(), connect(ep)));
                    let pos = slots.push_placed(&slot, |s| &s.pos);
                    moves.push(Move::Added { pos: pos as u32 });
                    self.classes.add(&slot);
                    self.by_addr.insert(ByAddr(slot.clone()));
                    added.push(slot);
                    changed = true;
                }
            }
        }
        Diff {
            slots: changed.then_some(slots),
            added,
            removed,
            moves,
        }
    }

    /// Brings the table `old`, which holds `applied`, to `set` by their differences:
    /// for a state after skipped ones.
    pub(super) fn catch_up(
        &mut self,
        old: &Slots,
        applied: &EndpointSet,
        set: &EndpointSet,
        connect: impl FnMut(&Endpoint) -> Arc<Connection>,
    ) -> Diff {
        let mut changes = Vec::new();
        applied.diff(set, |step| {
            changes.push(match step {
                Ok(put) => Change::PutShared(put),
                Err(gone) => Change::Remove(&gone.addr),
            });
        });
        self.apply_each(old, changes.into_iter(), connect)
    }

    /// Brings the table `old` to `set`, comparing the whole set with the index: for a
    /// state whose changes cannot be applied and no set applied before to compare it
    /// with (the first).
    pub(super) fn resync(
        &mut self,
        old: &Slots,
        set: &EndpointSet,
        connect: impl FnMut(&Endpoint) -> Arc<Connection>,
    ) -> Diff {
        let removed: Vec<String> = self
            .by_addr
            .iter()
            .map(|s| &s.0.endpoint.addr)
            .filter(|addr| !set.contains(addr))
            .cloned()
            .collect();
        // Shared with the set, not copied (a first table of N endpoints copied N twice).
        let put: Vec<&Arc<Endpoint>> = set
            .iter_shared()
            .filter(|ep| self.slot(&ep.addr).is_none_or(|s| s.endpoint != **ep))
            .collect();
        let changes = (removed.iter().map(|addr| Change::Remove(addr)))
            .chain(put.into_iter().map(Change::PutShared));
        self.apply_each(old, changes, connect)
    }
}

impl ChannelInner {
    /// Applies a resolver snapshot: its changes, or the whole set compared with the
    /// index; connections reused by address. See the module docs for the cost.
    pub(super) fn apply(&self, state: &ResolverState) {
        let old = self.table();
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        let Some(set) = &state.endpoints else {
            if state.last_error != old.last_error {
                *index = Index::default();
                self.publish(Table::new(
                    false,
                    state.last_error.clone(),
                    Slots::default(),
                ));
            }
            return;
        };
        if let Some(err) = &state.last_error {
            tracing::warn!(target = %self.target, error = %err, endpoints = set.len(),
                "resolver error; keeping the last endpoint set");
        }
        let connect = |ep: &Endpoint| Connection::pooled(&ep.addr, &self.dial);
        let diff = match (index.applied.take(), &state.changes) {
            (Some((_, applied)), _) if old.resolved && applied.ptr_eq(set) => None,
            (Some((version, _)), Some(changes)) if old.resolved && version + 1 == state.version => {
                Some(index.apply_changes(&old.slots, changes, connect))
            }
            (Some((_, applied)), _) if old.resolved => {
                Some(index.catch_up(&old.slots, &applied, set, connect))
            }
            _ => Some(index.resync(&old.slots, set, connect)),
        };
        index.applied = Some((state.version, set.clone()));
        // The weight groups of the table to publish, if one is (not for a snapshot
        // that changes nothing).
        let publishes = diff.as_ref().is_some_and(|d| d.slots.is_some())
            || !old.resolved
            || old.last_error != state.last_error;
        let weighted = (publishes && !index.uniform_weight())
            .then(|| index.classes.turns(old.weighted.as_ref()));
        drop(index);
        let (slots, added, moves) = match diff {
            Some(diff) => {
                for s in &diff.added {
                    s.conn.watch_ready(&self.ready_log);
                }
                log_membership(&self.target, &diff.added, &diff.removed);
                (diff.slots, diff.added, diff.moves)
            }
            None => (None, Vec::new(), Vec::new()),
        };
        let slots = match slots {
            Some(slots) => slots,
            None if old.resolved && old.last_error == state.last_error => return,
            None => old.slots.clone(),
        };
        self.ready_log.set_capacity(slots.len() / 16);
        let mut table = match old.ready_after(&moves, &slots) {
            Some(ready) => Table::with_ready(true, state.last_error.clone(), slots, ready),
            None => Table::new(true, state.last_error.clone(), slots),
        };
        table.weighted = weighted;
        self.publish(table);
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

/// How many endpoints an apply names one log line each; beyond, one line a kind.
const LOGGED_EACH: usize = 8;

/// Logs the endpoints an apply added and removed: a line each for a few, else one
/// line per kind counting them and naming the first [`LOGGED_EACH`], so that a first
/// table of 100,000 endpoints (or a registry coming back with all of them) writes two
/// lines, not 100,000.
fn log_membership(target: &str, added: &[Arc<Slot>], removed: &[Arc<Slot>]) {
    if added.len() + removed.len() <= LOGGED_EACH {
        for s in added {
            tracing::info!(%target, addr = %s.endpoint.addr, weight = s.endpoint.weight, "endpoint added");
        }
        for s in removed {
            tracing::info!(%target, addr = %s.endpoint.addr, "endpoint removed");
        }
        return;
    }
    let named = |slots: &[Arc<Slot>]| {
        let mut names = (slots.iter().take(LOGGED_EACH))
            .map(|s| s.endpoint.addr.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if slots.len() > LOGGED_EACH {
            names.push_str(&format!(" and {} more", slots.len() - LOGGED_EACH));
        }
        names
    };
    if !added.is_empty() {
        tracing::info!(%target, count = added.len(), addrs = %named(added), "endpoints added");
    }
    if !removed.is_empty() {
        tracing::info!(%target, count = removed.len(), addrs = %named(removed), "endpoints removed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::channel::test_channel;
    use crate::balance::policy::Policy;

    fn eps(addrs: &[&str]) -> EndpointSet {
        addrs.iter().map(|a| Endpoint::new(*a)).collect()
    }

    fn addrs(slots: impl IntoIterator<Item = impl std::ops::Deref<Target = Slot>>) -> Vec<String> {
        slots.into_iter().map(|s| s.endpoint.addr.clone()).collect()
    }

    /// Brings `(index, table)` to `set` by comparing it whole; returns the diff and
    /// the number of connections asked for.
    fn step(index: &mut Index, table: &mut Slots, set: &EndpointSet) -> (Diff, usize) {
        let mut dialled = 0;
        let diff = index.resync(table, set, |ep| {
            dialled += 1;
            Connection::detached(&ep.addr)
        });
        if let Some(slots) = &diff.slots {
            *table = slots.clone();
        }
        (diff, dialled)
    }

    fn slot_of<'a>(table: &'a Slots, addr: &str) -> &'a Arc<Slot> {
        table.iter().find(|s| s.endpoint.addr == addr).unwrap()
    }

    #[test]
    fn diff_keeps_slots_by_address_and_touches_only_changes() {
        let (mut index, mut table) = (Index::default(), Slots::default());
        let (d, dialled) = step(&mut index, &mut table, &eps(&["a:1", "b:1", "c:1", "d:1"]));
        assert_eq!((d.added.len(), d.removed.len(), dialled), (4, 0, 4));
        let first = table.clone();

        // The same set again (built anew): nothing changes, nothing is published.
        let (d, dialled) = step(&mut index, &mut table, &eps(&["a:1", "b:1", "c:1", "d:1"]));
        assert!(d.slots.is_none());
        assert_eq!((d.added.len(), d.removed.len(), dialled), (0, 0, 0));

        // A weight change: a fresh slot on the same connection in the same place.
        let mut changed = eps(&["a:1", "b:1", "c:1", "d:1"]);
        changed.insert(Endpoint::new("b:1").with_weight(5));
        let (d, dialled) = step(&mut index, &mut table, &changed);
        assert_eq!((d.added.len(), d.removed.len(), dialled), (0, 0, 0));
        let b = slot_of(&table, "b:1");
        assert!(!Arc::ptr_eq(b, slot_of(&first, "b:1")));
        assert!(Arc::ptr_eq(&b.conn, &slot_of(&first, "b:1").conn));
        assert_eq!(b.endpoint.weight, 5);
        for a in ["a:1", "c:1", "d:1"] {
            assert!(Arc::ptr_eq(slot_of(&table, a), slot_of(&first, a)));
        }

        // A removal: the last slot takes its place, every other slot is kept.
        let (d, dialled) = step(&mut index, &mut table, &eps(&["a:1", "c:1", "d:1"]));
        assert_eq!(addrs(d.removed.iter().map(|s| &**s)), ["b:1"]);
        assert_eq!((d.added.len(), dialled), (0, 0));
        assert_eq!(addrs(table.iter().map(|s| &**s)), ["a:1", "d:1", "c:1"]);
        assert!(Arc::ptr_eq(slot_of(&table, "d:1"), slot_of(&first, "d:1")));

        // Re-added: a new connection for it alone, the rest kept.
        let (d, dialled) = step(&mut index, &mut table, &eps(&["b:1", "a:1", "c:1", "d:1"]));
        assert_eq!(
            (
                addrs(d.added.iter().map(|s| &**s)),
                d.removed.len(),
                dialled
            ),
            (vec!["b:1".to_string()], 0, 1)
        );
        assert!(!Arc::ptr_eq(
            &slot_of(&table, "b:1").conn,
            &slot_of(&first, "b:1").conn
        ));

        // Everything replaced.
        let (d, dialled) = step(&mut index, &mut table, &eps(&["x:1"]));
        assert_eq!((d.added.len(), d.removed.len(), dialled), (1, 4, 1));
        assert_eq!(index.by_addr.len(), 1);
        assert_eq!(addrs(table.iter().map(|s| &**s)), ["x:1"]);
    }

    #[test]
    fn one_change_in_a_large_set_dials_and_hashes_only_the_change() {
        let (mut index, mut table) = (Index::default(), Slots::default());
        let all: EndpointSet = (0..5000)
            .map(|i| Endpoint::new(format!("10.0.{}.{}:80", i / 250, i % 250)))
            .collect();
        step(&mut index, &mut table, &all);
        let before = table.clone();
        // One removed in the middle, one added: applied as changes.
        let gone = before[2500].endpoint.addr.clone();
        let changes = [
            SetChange::Remove(gone.clone()),
            SetChange::Put(Endpoint::new("10.9.9.9:80")),
        ];
        let mut dialled = 0;
        let d = index.apply_changes(&table, &changes, |ep| {
            dialled += 1;
            Connection::detached(&ep.addr)
        });
        let table = d.slots.unwrap();
        assert_eq!((d.added.len(), d.removed.len(), dialled), (1, 1, 1));
        assert_eq!(table.len(), 5000);
        assert_eq!(table[2500].endpoint.addr, before[4999].endpoint.addr);
        assert_eq!(table[4999].endpoint.addr, "10.9.9.9:80");
        let kept = (0..4999)
            .filter(|&i| i != 2500)
            .all(|i| Arc::ptr_eq(&table[i], &before[i]));
        assert!(kept);
        assert!(!table.iter().any(|s| s.endpoint.addr == gone));
        assert_eq!(index.by_addr.len(), 5000);
        // Every slot knows its place, for the next change.
        assert!(
            table
                .iter()
                .enumerate()
                .all(|(i, s)| s.pos.load(Ordering::Relaxed) == i)
        );
    }

    /// A channel woken once for several states (the resolver's cell keeps the newest)
    /// brings its table to the newest by the differences between it and the set it
    /// applied last: the slots of every untouched endpoint are kept.
    #[tokio::test]
    async fn a_state_after_skipped_ones_is_caught_up_by_its_differences() {
        let inner = test_channel(Policy::RoundRobin);
        let first: EndpointSet = (0..5000)
            .map(|i| Endpoint::new(format!("10.0.{}.{}:80", i / 250, i % 250)))
            .collect();
        let state = |set: &EndpointSet, changes: Vec<SetChange>, version| ResolverState {
            endpoints: Some(set.clone()),
            changes: Some(changes.into()),
            last_error: None,
            version,
        };
        inner.apply(&state(&first, Vec::new(), 1));
        let before = inner.table();
        // Version 2 (a removal and a weight change) is never seen; version 3 adds one.
        let mut newest = first.clone();
        newest.apply(&SetChange::Remove("10.0.10.0:80".into()));
        let heavier = Endpoint::new("10.0.3.7:80").with_weight(4);
        newest.apply(&SetChange::Put(heavier.clone()));
        let added = SetChange::Put(Endpoint::new("10.9.9.9:80"));
        newest.apply(&added);
        inner.apply(&state(&newest, vec![added], 3));
        let after = inner.table();
        let mut held = addrs(after.slots.iter().map(|s| &**s));
        held.sort();
        let mut want: Vec<String> = newest.iter().map(|e| e.addr.clone()).collect();
        want.sort();
        assert_eq!(held, want);
        assert_eq!(slot_of(&after.slots, "10.0.3.7:80").endpoint.weight, 4);
        assert!(Arc::ptr_eq(
            &slot_of(&after.slots, "10.0.3.7:80").conn,
            &slot_of(&before.slots, "10.0.3.7:80").conn
        ));
        let untouched = before
            .slots
            .iter()
            .filter(|s| !["10.0.10.0:80", "10.0.3.7:80"].contains(&s.endpoint.addr.as_str()));
        assert!(
            untouched
                .into_iter()
                .all(|s| Arc::ptr_eq(s, slot_of(&after.slots, &s.endpoint.addr)))
        );
    }

    #[tokio::test]
    async fn an_unchanged_snapshot_publishes_nothing() {
        let inner = test_channel(Policy::RoundRobin);
        let set = eps(&["10.1.0.1:80", "10.1.0.2:80"]);
        let mut state = ResolverState {
            endpoints: Some(set.clone()),
            changes: None,
            last_error: None,
            version: 1,
        };
        inner.apply(&state);
        let table = inner.table();
        let version = *inner.table_tx.borrow();
        // The same snapshot, and an equal one built anew: the table stays.
        inner.apply(&state);
        state.endpoints = Some(set.to_vec().into_iter().collect());
        state.version = 3;
        inner.apply(&state);
        assert!(Arc::ptr_eq(&table, &inner.table()));
        assert_eq!(*inner.table_tx.borrow(), version);
        // An error keeps the set and is shown.
        state.last_error = Some("registry down".into());
        state.changes = Some(Arc::new([]));
        state.version = 4;
        inner.apply(&state);
        let now = inner.table();
        assert_eq!(now.last_error.as_deref(), Some("registry down"));
        assert!(
            now.slots
                .iter()
                .zip(table.slots.iter())
                .all(|(a, b)| Arc::ptr_eq(a, b))
        );
        assert_eq!(*inner.table_tx.borrow(), version + 1);
    }

    /// Applies `changes` to the channel's table as the state after `version - 1`.
    fn apply_changes(inner: &ChannelInner, version: u64, changes: Vec<SetChange>) {
        let table = inner.table();
        let mut set: EndpointSet = table.slots.iter().map(|s| (*s.endpoint).clone()).collect();
        for c in &changes {
            set.apply(c);
        }
        inner.apply(&ResolverState {
            endpoints: Some(set),
            changes: Some(changes.into()),
            last_error: None,
            version,
        });
    }

    /// The table's ready list as it stands (not rebuilt), by address, sorted, with the
    /// epoch it is current for.
    fn carried_ready(inner: &ChannelInner) -> (u64, Vec<String>) {
        let table = inner.table();
        let carried = table.ready.load();
        let mut ready: Vec<String> = carried
            .slots
            .iter()
            .map(|&i| table.slots[i as usize].endpoint.addr.clone())
            .collect();
        ready.sort_unstable();
        (carried.epoch, ready)
    }

    #[tokio::test]
    async fn a_change_carries_the_ready_list_over_without_reading_every_slot() {
        let inner = test_channel(Policy::RoundRobin);
        let all: Vec<Endpoint> = (0..300)
            .map(|i| Endpoint::new(format!("10.7.{}.{}:80", i / 250, i % 250)))
            .collect();
        let mut state = ResolverState::with_endpoints(all.clone());
        state.version = 1;
        inner.apply(&state);
        for s in inner.table().slots.iter() {
            s.conn.set_ready_by_hand(true);
        }
        let epoch = inner.ready_log.count();
        assert_eq!(ready_now(&inner).len(), 300);

        // One removed from the middle, one added (its new connection is not ready).
        let gone = all[17].addr.clone();
        let changes = vec![
            SetChange::Remove(gone.clone()),
            SetChange::Put(Endpoint::new("10.9.9.9:80")),
        ];
        apply_changes(&inner, 2, changes);
        let mut expected: Vec<String> = all
            .iter()
            .map(|e| e.addr.clone())
            .filter(|a| *a != gone)
            .collect();
        expected.sort_unstable();
        assert_eq!(
            carried_ready(&inner),
            (epoch, expected.clone()),
            "the list was carried over, not dropped"
        );

        // An endpoint added and then moved by a removal in the same change: the list
        // follows it to its final place (it is not ready, so it stays out).
        let second = all[40].addr.clone();
        let changes = vec![
            SetChange::Put(Endpoint::new("10.9.9.10:80")),
            SetChange::Remove(second.clone()),
        ];
        apply_changes(&inner, 3, changes);
        expected.retain(|a| *a != second);
        assert_eq!(carried_ready(&inner), (epoch, expected));
    }

    /// The channel's ready list as a pick sees it (brought up to date), by address,
    /// sorted.
    fn ready_now(inner: &ChannelInner) -> Vec<String> {
        let table = inner.table();
        let ready = table.ready(&inner.ready_log, &inner.index);
        let mut listed: Vec<String> = ready
            .slots
            .iter()
            .map(|&i| table.slots[i as usize].endpoint.addr.clone())
            .collect();
        listed.sort_unstable();
        listed
    }

    /// The addresses whose connection is ready, read from every slot, sorted.
    fn ready_truth(inner: &ChannelInner) -> Vec<String> {
        let mut ready: Vec<String> = inner
            .table()
            .slots
            .iter()
            .filter(|s| s.conn.is_ready())
            .map(|s| s.endpoint.addr.clone())
            .collect();
        ready.sort_unstable();
        ready
    }

    #[tokio::test]
    async fn a_readiness_change_updates_the_list_without_reading_every_slot() {
        let inner = test_channel(Policy::RoundRobin);
        let all: Vec<Endpoint> = (0..300)
            .map(|i| Endpoint::new(format!("10.8.{}.{}:80", i / 250, i % 250)))
            .collect();
        let mut state = ResolverState::with_endpoints(all.clone());
        state.version = 1;
        inner.apply(&state);
        let table = inner.table();
        for s in table.slots.iter() {
            s.conn.set_ready_by_hand(true);
        }
        assert_eq!(ready_now(&inner).len(), 300);
        // A flag changed behind the log's back, then one the log records: only the
        // recorded one is read again (a pass over every slot would drop both).
        let (unrecorded, recorded) = (&table.slots[10], &table.slots[20]);
        unrecorded.conn.force_ready_unrecorded(false);
        recorded.conn.set_ready_by_hand(false);
        let listed = ready_now(&inner);
        assert_eq!(listed.len(), 299);
        assert!(listed.contains(&unrecorded.endpoint.addr));
        assert!(!listed.contains(&recorded.endpoint.addr));
        // Back in rotation: listed again, once.
        recorded.conn.set_ready_by_hand(true);
        recorded.conn.set_ready_by_hand(false);
        recorded.conn.set_ready_by_hand(true);
        assert_eq!(ready_now(&inner).len(), 300);
        // The pick still checks the flag it reads: the unrecorded one gets no call.
        for _ in 0..600 {
            let chosen = inner.choose(&inner.table()).expect("a ready slot");
            assert_ne!(chosen.endpoint.addr, unrecorded.endpoint.addr);
        }
    }

    #[tokio::test]
    async fn the_ready_list_follows_the_flags_through_changes_flips_and_a_full_log() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let inner = test_channel(Policy::RoundRobin);
        let addr = |i: usize| format!("10.6.{}.{}:80", i / 250, i % 250);
        let mut present: Vec<usize> = (0..200).collect();
        let mut state =
            ResolverState::with_endpoints(present.iter().map(|&i| Endpoint::new(addr(i))));
        state.version = 1;
        inner.apply(&state);
        let mut version = 1;
        let mut next = 200;
        for round in 0..300 {
            let table = inner.table();
            // A few flips, now and then more than the log keeps.
            let flips = if round % 50 == 49 {
                40
            } else {
                rng.random_range(0..4)
            };
            for _ in 0..flips {
                let s = &table.slots[rng.random_range(0..table.slots.len())];
                s.conn.set_ready_by_hand(rng.random_bool(0.6));
            }
            if round % 3 == 0 {
                // A change: one endpoint removed, one added (ready or not).
                let gone = present.swap_remove(rng.random_range(0..present.len()));
                present.push(next);
                let added = Connection::pooled(&addr(next), &inner.dial);
                added.set_ready_by_hand(rng.random_bool(0.5));
                next += 1;
                version += 1;
                let changes = vec![
                    SetChange::Remove(addr(gone)),
                    SetChange::Put(Endpoint::new(addr(next - 1))),
                ];
                apply_changes(&inner, version, changes);
            }
            if round % 2 == 0 {
                assert_eq!(ready_now(&inner), ready_truth(&inner), "round {round}");
            }
        }
        assert_eq!(ready_now(&inner), ready_truth(&inner));
    }
}
