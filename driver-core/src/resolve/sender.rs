//! [`SnapshotSender`]: how a resolver publishes; [`ResolverState`]: what its
//! subscribers read.
//!
//! The contract is on [`SnapshotSender`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::set::{EndpointSet, SetChange};
use super::subset::Subset;
use super::{Endpoint, Fast};

/// What a resolver has said so far.
#[derive(Clone, Debug, Default)]
pub struct ResolverState {
    /// The newest endpoint set; `None` until the first successful resolution.
    pub endpoints: Option<EndpointSet>,
    /// The changes that turned version `version - 1`'s set into this one, in order
    /// (empty when only the error changed); `None` for the first set, or when unknown
    /// (compare the sets).
    pub changes: Option<Arc<[SetChange]>>,
    /// The newest error, cleared by the next successful resolution.
    pub last_error: Option<String>,
    /// Counts published states, so readers can tell one from the next.
    pub version: u64,
}

impl ResolverState {
    /// A state holding `endpoints` (for tests and hand-fed resolvers); no changes known.
    pub fn with_endpoints(endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        Self {
            endpoints: Some(endpoints.into_iter().collect()),
            ..Self::default()
        }
    }
}

/// The receiving side of a resolver's snapshots.
pub type SnapshotReceiver = watch::Receiver<ResolverState>;

/// The sending side a resolver publishes snapshots into. Cheap to clone; clones share
/// one book (entries, subset, hold), so their changes combine.
///
/// Contract:
///
/// * A resolver says what it knows in one of two ways: [`SnapshotSender::update`], the
///   whole set (each address once; of duplicates the first entry counts), or
///   [`SnapshotSender::apply`], the changes of its own entries by key (an etcd key, a
///   consul service ID): `(key, Some(endpoint))` when the key holds that endpoint now,
///   `(key, None)` when it is gone. Of several keys giving one address, the smallest
///   key's entry counts. `update` replaces every entry, keyed or not.
/// * Each published [`ResolverState`] holds the whole set, a persistent
///   [`EndpointSet`] (cloning it is free, and it shares its entries with the set
///   before), and the [`SetChange`]s that turned the previous version's set into this
///   one. A subscriber that applied version `v - 1` may apply `changes` alone; one that
///   skipped versions (the cell keeps only the newest state) compares the whole set.
/// * A change that leaves the published set as it was publishes nothing, unless an
///   error is shown (then it is cleared, and the set published again).
/// * [`with_subset`](SnapshotSender::with_subset) and
///   [`hold_empty`](SnapshotSender::hold_empty) shape what is published; see each.
///
/// Cost: [`apply`](SnapshotSender::apply) costs O(C log N) for C changed keys in a set
/// of N, subset and de-duplication included (both are kept as indexes, not recomputed);
/// [`update`](SnapshotSender::update) costs O(N) hashing, for resolvers whose registry
/// answers with whole sets anyway (consul's blocking queries, Kubernetes slices,
/// static lists).
#[derive(Clone, Debug)]
pub struct SnapshotSender {
    tx: Arc<watch::Sender<ResolverState>>,
    book: Arc<Mutex<Book>>,
}

/// The keyed entries giving one address: the one that counts (smallest key) first,
/// then the others in key order.
#[derive(Debug)]
struct Holders {
    first: (Arc<str>, Endpoint),
    more: Vec<(Arc<str>, Endpoint)>,
}

impl Holders {
    fn winner(&self) -> &Endpoint {
        &self.first.1
    }

    fn insert(&mut self, key: Arc<str>, endpoint: Endpoint) {
        if key < self.first.0 {
            let old = std::mem::replace(&mut self.first, (key, endpoint));
            self.more.insert(0, old);
        } else if key == self.first.0 {
            self.first.1 = endpoint;
        } else {
            match self.more.binary_search_by(|(k, _)| k.cmp(&key)) {
                Ok(i) => self.more[i].1 = endpoint,
                Err(i) => self.more.insert(i, (key, endpoint)),
            }
        }
    }

    /// Takes `key`'s entry off; false if none is left.
    fn remove(&mut self, key: &Arc<str>) -> bool {
        if *key == self.first.0 {
            if self.more.is_empty() {
                return false;
            }
            self.first = self.more.remove(0);
        } else if let Ok(i) = self.more.binary_search_by(|(k, _)| k.cmp(key)) {
            self.more.remove(i);
        }
        true
    }
}

/// What a sender knows, behind its lock: every step of a publication happens under it.
#[derive(Debug, Default)]
struct Book {
    /// For keyed changes: the address each key gives.
    keys: HashMap<Arc<str>, Arc<str>, Fast>,
    /// For keyed changes: every address of the whole set and the entries giving it.
    addrs: HashMap<Arc<str>, Holders, Fast>,
    /// For whole sets: the last one, each address once, in the resolver's order.
    whole: Vec<Endpoint>,
    subset: Option<Subset>,
    /// How long an emptied set is held back ([`SnapshotSender::hold_empty`]).
    grace: Option<Duration>,
    /// The set as last published; `None` until the first.
    published: Option<EndpointSet>,
    /// While an emptied set is held back: the changes not passed on yet.
    held: Option<Held>,
    /// Counts holds, so a timer releases only its own.
    holds: u64,
}

#[derive(Debug)]
struct Held {
    id: u64,
    changes: Vec<SetChange>,
}

/// What a change of the book leads to.
enum Next {
    Publish(Vec<SetChange>),
    /// The set emptied: held back; the timer of this hold releases it.
    Hold(u64, Duration),
    Nothing,
}

impl Book {
    /// Applies keyed changes; the changes of the whole set they make.
    fn apply_keyed(
        &mut self,
        changes: impl IntoIterator<Item = (Arc<str>, Option<Endpoint>)>,
    ) -> Vec<SetChange> {
        // A whole set gives way to keyed entries: start from nothing.
        let mut out: Vec<SetChange> = (self.whole.drain(..))
            .map(|e| SetChange::Remove(e.addr))
            .collect();
        // From nothing (a first listing), every address ends as a put of its winner:
        // no need to note what each held before, one map entry per endpoint, the maps
        // sized once (growing them step by step was 2.6% of a first set's CPU).
        let fresh = self.keys.is_empty();
        let changes = changes.into_iter();
        if fresh {
            let (n, _) = changes.size_hint();
            self.keys.reserve(n);
            self.addrs.reserve(n);
        }
        // The winner of each address touched, before the changes.
        let mut before: HashMap<Arc<str>, Option<Endpoint>, Fast> = HashMap::default();
        for (key, endpoint) in changes {
            if let Some(old) = self.keys.remove(&key) {
                let holders = self.addrs.get_mut(&old);
                before
                    .entry(old.clone())
                    .or_insert_with(|| holders.as_ref().map(|h| h.winner().clone()));
                if let Some(holders) = holders
                    && !holders.remove(&key)
                {
                    self.addrs.remove(&old);
                }
            }
            if let Some(endpoint) = endpoint {
                match self.addrs.get_key_value(endpoint.addr.as_str()) {
                    Some((addr, holders)) => {
                        let addr = addr.clone();
                        before
                            .entry(addr.clone())
                            .or_insert_with(|| Some(holders.winner().clone()));
                        self.keys.insert(key.clone(), addr.clone());
                        if let Some(holders) = self.addrs.get_mut(&addr) {
                            holders.insert(key, endpoint);
                        }
                    }
                    None => {
                        let addr: Arc<str> = endpoint.addr.as_str().into();
                        if !fresh {
                            before.entry(addr.clone()).or_insert(None);
                        }
                        self.keys.insert(key.clone(), addr.clone());
                        let holders = Holders {
                            first: (key, endpoint),
                            more: Vec::new(),
                        };
                        self.addrs.insert(addr, holders);
                    }
                }
            }
        }
        if fresh {
            out.extend(
                self.addrs
                    .values()
                    .map(|h| SetChange::Put(h.winner().clone())),
            );
            return out;
        }
        let changes = before.into_iter().filter_map(|(addr, old)| {
            let now = self.addrs.get(&addr).map(Holders::winner);
            match (old, now) {
                (Some(old), Some(now)) if old == *now => None,
                (_, Some(now)) => Some(SetChange::Put(now.clone())),
                (Some(_), None) => Some(SetChange::Remove(addr.to_string())),
                (None, None) => None,
            }
        });
        out.extend(changes);
        out
    }

    /// Replaces every entry with `endpoints`; the changes of the whole set.
    ///
    /// Compared with the last whole set as the two lie, in order: the set sent again
    /// unchanged costs one comparison pass and no hashing; a changed one one hashing
    /// pass over the new set (for duplicates, with foldhash) and a map of only the old
    /// entries between the common head and tail of the two. No address is copied but
    /// those of the changes. (A map of the set by address kept across updates and
    /// looked up per endpoint cost 6 times as much at 100,000: a cache miss on every
    /// entry.)
    fn replace(&mut self, endpoints: Vec<Endpoint>) -> Vec<SetChange> {
        // Keyed entries give way to the whole set: start from nothing.
        self.keys.clear();
        let mut changes: Vec<SetChange> = (self.addrs.drain())
            .map(|(addr, _)| SetChange::Remove(addr.to_string()))
            .collect();
        if endpoints == self.whole {
            return changes; // the last set, which had no duplicates
        }
        let old = &self.whole;
        let head = old
            .iter()
            .zip(&endpoints)
            .take_while(|(a, b)| a == b)
            .count();
        let tail = old[head..]
            .iter()
            .rev()
            .zip(endpoints[head..].iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        let (old_mid, new_end) = (&old[head..old.len() - tail], endpoints.len() - tail);
        let hasher = foldhash::fast::RandomState::default();
        let mut counted = HashSet::with_capacity_and_hasher(endpoints.len(), hasher);
        // Of duplicates, the first entry counts.
        let keep: Vec<bool> = endpoints
            .iter()
            .map(|e| counted.insert(e.addr.as_str()))
            .collect();
        let was: HashMap<&str, &Endpoint, foldhash::fast::RandomState> =
            old_mid.iter().map(|e| (e.addr.as_str(), e)).collect();
        changes.extend(
            (head..new_end)
                .filter(|&i| keep[i] && was.get(endpoints[i].addr.as_str()) != Some(&&endpoints[i]))
                .map(|i| SetChange::Put(endpoints[i].clone())),
        );
        changes.extend(
            old_mid
                .iter()
                .filter(|e| !counted.contains(e.addr.as_str()))
                .map(|e| SetChange::Remove(e.addr.clone())),
        );
        drop((counted, was));
        self.whole = if keep.iter().all(|&k| k) {
            endpoints
        } else {
            endpoints
                .into_iter()
                .zip(keep)
                .filter_map(|(e, k)| k.then_some(e))
                .collect()
        };
        changes
    }

    /// Changes of the whole set as changes of what is published: the subset's, if
    /// one is kept.
    fn through_subset(&mut self, changes: Vec<SetChange>) -> Vec<SetChange> {
        match &mut self.subset {
            Some(subset) => subset.pass(changes),
            None => changes,
        }
    }

    /// How many addresses the whole set holds.
    fn size(&self) -> usize {
        self.addrs.len() + self.whole.len()
    }

    /// Passes changes of the whole set on, holding back an emptied set.
    fn pass(&mut self, changes: Vec<SetChange>) -> Next {
        let changes = if let Some(held) = &mut self.held {
            held.changes.extend(changes);
            if self.size() == 0 {
                return Next::Nothing;
            }
            // Instances are back before the hold ran out.
            self.held.take().map(|h| h.changes).unwrap_or_default()
        } else if let Some(grace) = self.grace
            && self.size() == 0
            && self.published.as_ref().is_some_and(|p| !p.is_empty())
        {
            self.holds += 1;
            self.held = Some(Held {
                id: self.holds,
                changes,
            });
            return Next::Hold(self.holds, grace);
        } else {
            changes
        };
        Next::Publish(self.through_subset(changes))
    }

    /// Publishes the published set's `changes` (those that change it), or the set
    /// again to clear an error.
    fn publish(&mut self, changes: Vec<SetChange>, tx: &watch::Sender<ResolverState>) {
        let first = self.published.is_none();
        let mut set = self.published.take().unwrap_or_default();
        // The first set's changes go to nobody: subscribers read it whole.
        let effective = set.apply_batch(changes, !first);
        self.published = Some(set.clone());
        if effective.is_empty() && !first && tx.borrow().last_error.is_none() {
            return;
        }
        tx.send_modify(|s| {
            s.endpoints = Some(set);
            // The first set has no previous one to apply changes to: subscribers read it
            // whole, and a resolved target does not keep its first list twice.
            s.changes = (!first).then(|| effective.into());
            s.last_error = None;
            s.version += 1;
        });
    }
}

impl SnapshotSender {
    /// A new sender/receiver pair with nothing resolved yet.
    pub fn channel() -> (Self, SnapshotReceiver) {
        let (tx, rx) = watch::channel(ResolverState::default());
        (
            Self {
                tx: Arc::new(tx),
                book: Arc::default(),
            },
            rx,
        )
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This sender, publishing at most `limit` endpoints of each set (0: no limit), as
    /// go-zero's clients keep a random subset of at most 32 servers. Unlike go-zero,
    /// which reshuffles on every change, the subset is sticky: endpoints chosen before
    /// stay while they are in the set, and only the places of vanished ones are filled,
    /// at random, so a change elsewhere in a large set moves no connection (and
    /// publishes nothing). The limit holds for this sender and its clones.
    ///
    /// ```
    /// use dtmdriver_core::resolve::{Endpoint, SnapshotSender};
    /// let (tx, rx) = SnapshotSender::channel();
    /// let tx = tx.with_subset(2);
    /// tx.update((1..=5).map(|i| Endpoint::new(format!("10.0.0.{i}:80"))).collect());
    /// let first = rx.borrow().endpoints.clone().unwrap();
    /// assert_eq!(first.len(), 2);
    /// // A sixth endpoint appears: the two chosen ones stay.
    /// tx.update((1..=6).map(|i| Endpoint::new(format!("10.0.0.{i}:80"))).collect());
    /// assert_eq!(rx.borrow().endpoints.as_ref(), Some(&first));
    /// ```
    pub fn with_subset(self, limit: usize) -> Self {
        self.book().subset = (limit > 0).then(|| Subset::new(limit));
        self
    }

    /// Holds back a set that becomes empty while the published one holds endpoints for
    /// `grace`, unless endpoints come back first (an engine whose registry drops every
    /// instance at once for a moment, e.g. etcd expiring every lease after a pause); a
    /// set that shrinks without emptying is published at once. Holds for the clones.
    pub fn hold_empty(&self, grace: Duration) {
        self.book().grace = Some(grace);
    }

    /// Publishes a full endpoint set. Duplicate addresses keep their first entry.
    pub fn update(&self, endpoints: Vec<Endpoint>) {
        let mut book = self.book();
        let changes = book.replace(endpoints);
        self.pass(book, changes);
    }

    /// Publishes keyed changes: each key now gives this endpoint, or none. See
    /// [`SnapshotSender`].
    pub fn apply<K: Into<Arc<str>>>(
        &self,
        changes: impl IntoIterator<Item = (K, Option<Endpoint>)>,
    ) {
        let mut book = self.book();
        let changes = book.apply_keyed(changes.into_iter().map(|(k, e)| (k.into(), e)));
        self.pass(book, changes);
    }

    fn pass(&self, mut book: std::sync::MutexGuard<'_, Book>, changes: Vec<SetChange>) {
        match book.pass(changes) {
            Next::Publish(changes) => book.publish(changes, &self.tx),
            Next::Nothing => {}
            Next::Hold(id, grace) => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    // No runtime to time the hold: publish at once.
                    drop(book);
                    return self.release(id);
                };
                let sender = self.clone();
                runtime.spawn(async move {
                    tokio::select! {
                        () = tokio::time::sleep(grace) => sender.release(id),
                        () = sender.closed() => {}
                    }
                });
            }
        }
    }

    /// Ends hold `id` if it still runs: publishes what it held back.
    fn release(&self, id: u64) {
        let mut book = self.book();
        if book.held.as_ref().is_some_and(|h| h.id == id) {
            let changes = book.held.take().map(|h| h.changes).unwrap_or_default();
            let changes = book.through_subset(changes);
            book.publish(changes, &self.tx);
        }
    }

    /// Reports an error; the last endpoint set stays in service.
    pub fn error(&self, error: impl std::fmt::Display) {
        let message = error.to_string();
        let _book = self.book();
        self.tx.send_modify(|s| {
            s.last_error = Some(message);
            s.changes = Some(Arc::new([]));
            s.version += 1;
        });
    }

    /// A new receiver of this sender's snapshots.
    pub fn subscribe(&self) -> SnapshotReceiver {
        self.tx.subscribe()
    }

    /// True once every receiver is gone: the resolver should stop.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Completes once every receiver is gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ports: impl IntoIterator<Item = u16>) -> Vec<Endpoint> {
        ports
            .into_iter()
            .map(|p| Endpoint::new(format!("10.0.0.1:{p}")))
            .collect()
    }

    fn published(rx: &SnapshotReceiver) -> Vec<String> {
        let state = rx.borrow();
        state
            .endpoints
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.addr.clone())
            .collect()
    }

    /// Follows `rx` as a subscriber that keeps up: the first set read whole, then each
    /// state's changes applied to a copy, which must be the published set.
    fn replay(copy: &mut EndpointSet, rx: &mut SnapshotReceiver) {
        let state = rx.borrow_and_update();
        match state.changes.as_deref() {
            Some(changes) => changes.iter().for_each(|c| {
                copy.apply(c);
            }),
            None => *copy = state.endpoints.clone().unwrap_or_default(),
        }
        assert_eq!(Some(&*copy), state.endpoints.as_ref());
    }

    #[test]
    fn subset_is_random_bounded_and_sticky() {
        let (tx, mut rx) = SnapshotSender::channel();
        let tx = tx.with_subset(32);
        let mut copy = EndpointSet::new();
        tx.update(set(1..=40));
        replay(&mut copy, &mut rx);
        let first = published(&rx);
        assert_eq!(first.len(), 32);
        let version = rx.borrow().version;

        // An endpoint outside the subset leaves: nothing is published.
        let outside: u16 = (1..=40)
            .find(|p| !first.contains(&format!("10.0.0.1:{p}")))
            .unwrap();
        tx.update(set((1..=40).filter(|&p| p != outside)));
        assert_eq!(published(&rx), first);
        assert_eq!(rx.borrow().version, version);

        // A chosen one leaves: the other 31 stay, one newcomer fills its place.
        let gone = first[0].clone();
        let rest: Vec<Endpoint> = set(1..=40)
            .into_iter()
            .filter(|e| e.addr != gone && e.addr != format!("10.0.0.1:{outside}"))
            .collect();
        tx.update(rest);
        replay(&mut copy, &mut rx);
        let second = published(&rx);
        assert_eq!(second.len(), 32);
        assert!(!second.contains(&gone));
        assert_eq!(second.iter().filter(|a| first.contains(a)).count(), 31);
        assert_eq!(rx.borrow().changes.as_ref().unwrap().len(), 2);

        // The set shrinks under the limit: all of it.
        tx.update(set(1..=5));
        replay(&mut copy, &mut rx);
        assert_eq!(published(&rx).len(), 5);

        // Another client picks another subset (the chance of the same 32 of 100 is
        // 1 in C(100, 32) ≈ 1.4e26).
        let picks: Vec<Vec<String>> = (0..2)
            .map(|_| {
                let (tx, rx) = SnapshotSender::channel();
                tx.with_subset(32).update(set(1..=100));
                published(&rx)
            })
            .collect();
        assert_ne!(picks[0], picks[1]);

        // Without a limit (or limit 0) every endpoint is published.
        let (tx, rx) = SnapshotSender::channel();
        tx.with_subset(0).update(set(1..=100));
        assert_eq!(published(&rx).len(), 100);
    }

    #[test]
    fn keyed_changes_publish_only_what_changed_and_the_smallest_key_wins() {
        let (tx, mut rx) = SnapshotSender::channel();
        let mut copy = EndpointSet::new();
        let ep = |addr: &str, weight: u32| Some(Endpoint::new(addr).with_weight(weight));
        tx.apply([
            ("k/1", ep("a:1", 1)),
            ("k/2", ep("b:1", 1)),
            ("k/3", ep("a:1", 7)),
        ]);
        replay(&mut copy, &mut rx);
        assert_eq!(published(&rx), ["a:1", "b:1"]);
        assert_eq!(copy.get("a:1").unwrap().weight, 1, "k/1 counts, not k/3");

        // The winning key goes: the other key's entry counts now.
        tx.apply([("k/1", None::<Endpoint>)]);
        replay(&mut copy, &mut rx);
        assert_eq!(
            rx.borrow().changes.as_deref().unwrap(),
            [SetChange::Put(Endpoint::new("a:1").with_weight(7))]
        );
        // A key moves to another address; the last key of an address goes.
        tx.apply([("k/2", ep("c:1", 1)), ("k/3", None)]);
        replay(&mut copy, &mut rx);
        assert_eq!(published(&rx), ["c:1"]);
        // Nothing changed: nothing published.
        let version = rx.borrow().version;
        tx.apply([("k/2", ep("c:1", 1))]);
        assert_eq!(rx.borrow().version, version);
        // An error, then the same set again: the error is cleared.
        tx.error("registry down");
        tx.apply(Vec::<(String, Option<Endpoint>)>::new());
        assert!(rx.borrow().last_error.is_none());
        assert_eq!(rx.borrow().version, version + 2);
        // A whole set replaces the keyed entries.
        tx.update(set([9]));
        replay(&mut copy, &mut rx);
        assert_eq!(published(&rx), ["10.0.0.1:9"]);
    }

    #[test]
    fn a_first_batch_may_name_a_key_again() {
        let (tx, mut rx) = SnapshotSender::channel();
        let mut copy = EndpointSet::new();
        let ep = |addr: &str| Some(Endpoint::new(addr));
        tx.apply([
            ("k/1", ep("a:1")),
            ("k/2", ep("b:1")),
            ("k/1", ep("c:1")),
            ("k/2", None),
            ("k/3", ep("c:1")),
            ("k/4", None),
        ]);
        replay(&mut copy, &mut rx);
        assert_eq!(published(&rx), ["c:1"]);
        // The book followed: k/1 gives c:1, so its removal leaves k/3's entry.
        tx.apply([("k/1", None::<Endpoint>)]);
        replay(&mut copy, &mut rx);
        assert_eq!(published(&rx), ["c:1"]);
        tx.apply([("k/3", None::<Endpoint>)]);
        replay(&mut copy, &mut rx);
        assert!(published(&rx).is_empty());
    }

    #[test]
    fn duplicates_keep_their_first_entry() {
        let (tx, rx) = SnapshotSender::channel();
        tx.update(vec![
            Endpoint::new("a:1").with_weight(2),
            Endpoint::new("b:1"),
            Endpoint::new("a:1").with_weight(9),
            Endpoint::new("c:1"),
            Endpoint::new("b:1"),
        ]);
        let state = rx.borrow();
        let shown: Vec<(&str, u32)> = state
            .endpoints
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.addr.as_str(), e.weight))
            .collect();
        assert_eq!(shown, [("a:1", 2), ("b:1", 1), ("c:1", 1)]);
    }

    #[test]
    fn errors_keep_the_last_set() {
        let (tx, rx) = SnapshotSender::channel();
        tx.update(vec![Endpoint::new("a:1")]);
        tx.error("registry down");
        let s = rx.borrow().clone();
        assert_eq!(s.endpoints.unwrap().iter().next().unwrap().addr, "a:1");
        assert_eq!(s.last_error.as_deref(), Some("registry down"));
        tx.update(vec![]);
        assert!(rx.borrow().last_error.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_emptied_set_is_held_back_for_the_grace() {
        let (tx, rx) = SnapshotSender::channel();
        let grace = Duration::from_secs(1);
        tx.hold_empty(grace);
        let size = || rx.borrow().endpoints.as_ref().map(EndpointSet::len);
        tx.apply([("k/a", Some(Endpoint::new("a:1")))]);
        assert_eq!(size(), Some(1));
        // Emptied, then back within the grace: never published empty.
        tx.apply([("k/a", None)]);
        tokio::time::sleep(grace / 2).await;
        assert_eq!(size(), Some(1));
        tx.apply([("k/b", Some(Endpoint::new("b:1")))]);
        assert_eq!(
            rx.borrow().endpoints.as_ref().unwrap().to_vec(),
            [Endpoint::new("b:1")]
        );
        tokio::time::sleep(grace * 2).await;
        assert_eq!(size(), Some(1));
        // Emptied for good: published once the grace is over.
        tx.apply([("k/b", None)]);
        tokio::time::sleep(grace - Duration::from_millis(10)).await;
        assert_eq!(size(), Some(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(size(), Some(0));
        // A set that was empty is published at once.
        tx.apply([("k/c", Some(Endpoint::new("c:1")))]);
        assert_eq!(size(), Some(1));
    }

    use proptest::prelude::Strategy as _;

    proptest::proptest! {
        /// Whole sets and keyed changes in any order: the published set is always what
        /// a plain reading says (first entry of an address for whole sets, smallest key
        /// for keyed ones, keyed entries starting from nothing after a whole set), and
        /// each state's changes turn the previous set into it.
        #[test]
        fn published_sets_and_changes_match_a_plain_reading(
            steps in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::collection::vec((0u8..8, 1u32..3), 0..10).prop_map(Err),
                    proptest::collection::vec((0u8..6, proptest::option::of((0u8..8, 1u32..3))), 0..6)
                        .prop_map(Ok),
                ],
                1..12,
            )
        ) {
            let (tx, mut rx) = SnapshotSender::channel();
            let mut copy = EndpointSet::new();
            let mut keyed: std::collections::BTreeMap<String, Endpoint> = Default::default();
            let ep = |(a, w): (u8, u32)| Endpoint::new(format!("10.0.0.{a}:80")).with_weight(w);
            for step in steps {
                let expected: EndpointSet = match step {
                    Err(whole) => {
                        keyed.clear();
                        let list: Vec<Endpoint> = whole.into_iter().map(ep).collect();
                        tx.update(list.clone());
                        let mut firsts = EndpointSet::new();
                        for e in list {
                            if !firsts.contains(&e.addr) {
                                firsts.insert(e);
                            }
                        }
                        firsts
                    }
                    Ok(changes) => {
                        let changes: Vec<(String, Option<Endpoint>)> = changes
                            .into_iter()
                            .map(|(k, e)| (format!("k/{k}"), e.map(ep)))
                            .collect();
                        for (k, e) in &changes {
                            match e {
                                Some(e) => keyed.insert(k.clone(), e.clone()),
                                None => keyed.remove(k),
                            };
                        }
                        tx.apply(changes);
                        let mut smallest = EndpointSet::new();
                        for e in keyed.values() {
                            if !smallest.contains(&e.addr) {
                                smallest.insert(e.clone());
                            }
                        }
                        smallest
                    }
                };
                let state = rx.borrow_and_update().clone();
                match state.changes.as_deref() {
                    Some(changes) => changes.iter().for_each(|c| {
                        copy.apply(c);
                    }),
                    None => copy = state.endpoints.clone().unwrap_or_default(),
                }
                proptest::prop_assert_eq!(state.endpoints.as_ref(), Some(&expected));
                proptest::prop_assert_eq!(&copy, &expected);
            }
        }
    }
}
