//! What one process shares by key and drops with its last user: [`SharedByKey`] (a
//! value, e.g. a channel), [`SharedWatches`] (a task whose state every subscriber
//! follows, e.g. a registry watch), and [`forward_snapshots`], the loop that follows
//! such a state into a resolver's [`SnapshotSender`].
//!
//! Contract:
//! * one value / one task per key at a time, however many callers ask concurrently,
//!   also when the value is created by a future (a client that logs in first): the
//!   other callers for that key wait for it, without a lock held across the wait;
//! * a value lives while a caller holds it; a task runs while anyone subscribes, and is
//!   dropped (its future cancelled) once the last receiver is gone, its key forgotten;
//!   a caller arriving in between gets a fresh one;
//! * the forwarding loop publishes the current state first, then every change, and
//!   stops when the resolver's receiver or the task is gone.
//!
//! Why here: the etcd and consul watchers, the channel cache, the connection pool and
//! etcd's client map each had their own copy
//! of these few lines, and they are easy to get subtly wrong (a subscriber arriving just
//! as the last one leaves must not be left on a stopped task).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::watch;

use crate::resolve::{Endpoint, SnapshotSender};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Values shared by key while anyone holds them; see the [module docs](self).
///
/// A value is created either at once under the map's lock
/// ([`get_or_try_insert_with`](Self::get_or_try_insert_with)), or by a future
/// ([`get_or_try_insert_async`](Self::get_or_try_insert_async), e.g. a client that logs
/// in), during which the other callers for that key wait for it, and callers for other
/// keys do not (a map is meant to be used one way: a synchronous creation does not wait
/// for an asynchronous one under way). The map keeps weak references: a value whose last holder is gone is
/// removed at once if its `Drop` calls [`remove_dead`](Self::remove_dead), else swept
/// away as the map grows (amortised, never a scan per lookup).
///
/// ```
/// use std::sync::{Arc, LazyLock};
/// use dtmdriver_core::shared::SharedByKey;
/// static NAMES: LazyLock<SharedByKey<u32, String>> = LazyLock::new(SharedByKey::default);
/// let a = NAMES.get_or_try_insert_with(&1, || Ok::<_, ()>(Arc::new("one".into()))).unwrap();
/// let b = NAMES.get_or_try_insert_with(&1, || Ok::<_, ()>(Arc::new("uno".into()))).unwrap();
/// assert!(Arc::ptr_eq(&a, &b));
/// drop((a, b));
/// assert!(NAMES.get(&1).is_none());
/// ```
#[derive(Debug)]
pub struct SharedByKey<K, V> {
    map: Mutex<Slots<K, V>>,
}

#[derive(Debug)]
struct Slots<K, V> {
    /// foldhash, as the resolvers' address maps: a channel over N endpoints looks up
    /// N connections here (SipHash was 5% of the samples of building one over 100,000).
    slots: HashMap<K, Slot<V>, crate::resolve::Fast>,
    /// The size at which dead slots are swept next.
    sweep_at: usize,
}

/// One key's value, and the turn its asynchronous creators take.
#[derive(Debug)]
struct Slot<V> {
    value: Weak<V>,
    /// Held (locked) by the caller creating the value asynchronously; the others
    /// wait for it, then find the value or take their own turn.
    making: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl<V> Slot<V> {
    /// Nobody holds the value, and nobody is creating or waiting for one.
    fn is_dead(&self) -> bool {
        self.value.strong_count() == 0
            && self
                .making
                .as_ref()
                .is_none_or(|m| Arc::strong_count(m) == 1)
    }
}

/// The fewest slots at which a sweep is worth it.
const SWEEP_MIN: usize = 16;

impl<K, V> Default for SharedByKey<K, V> {
    fn default() -> Self {
        Self {
            map: Mutex::new(Slots {
                slots: HashMap::default(),
                sweep_at: SWEEP_MIN,
            }),
        }
    }
}

impl<K: Eq + Hash + Clone, V> Slots<K, V> {
    fn live(&self, key: &K) -> Option<Arc<V>> {
        self.slots.get(key).and_then(|s| s.value.upgrade())
    }

    /// Sweeps dead slots once the map has doubled since the last sweep.
    fn sweep_if_due(&mut self) {
        if self.slots.len() >= self.sweep_at {
            self.slots.retain(|_, s| !s.is_dead());
            self.sweep_at = (self.slots.len() * 2).max(SWEEP_MIN);
        }
    }

    /// Stores `value` as the live value of `key`, sweeping dead slots if due.
    fn store(&mut self, key: &K, value: &Arc<V>) {
        self.sweep_if_due();
        let slot = self.slots.entry(key.clone()).or_insert_with(|| Slot {
            value: Weak::new(),
            making: None,
        });
        slot.value = Arc::downgrade(value);
        slot.making = None;
    }
}

impl<K: Eq + Hash + Clone, V> SharedByKey<K, V> {
    /// The live value of `key`, if any.
    pub fn get(&self, key: &K) -> Option<Arc<V>> {
        lock(&self.map).live(key)
    }

    /// The live value of `key`, else the one `make` builds (under the map's lock, so
    /// two callers never build two), kept while anyone holds it.
    pub fn get_or_try_insert_with<E>(
        &self,
        key: &K,
        make: impl FnOnce() -> Result<Arc<V>, E>,
    ) -> Result<Arc<V>, E> {
        let mut map = lock(&self.map);
        map.sweep_if_due();
        // One hash of the key, found or not (a channel taking a set of N new addresses
        // makes N of these calls).
        match map.slots.entry(key.clone()) {
            Entry::Occupied(mut slot) => {
                if let Some(value) = slot.get().value.upgrade() {
                    return Ok(value);
                }
                let value = make()?;
                let slot = slot.get_mut();
                slot.value = Arc::downgrade(&value);
                slot.making = None;
                Ok(value)
            }
            Entry::Vacant(slot) => {
                let value = make()?;
                slot.insert(Slot {
                    value: Arc::downgrade(&value),
                    making: None,
                });
                Ok(value)
            }
        }
    }

    /// Makes room for `n` more keys at once, for a caller about to add many (a channel
    /// taking a large set of new addresses): the map grows once instead of step by
    /// step, and no sweep of dead slots falls among them.
    pub fn reserve(&self, n: usize) {
        let mut map = lock(&self.map);
        map.sweep_if_due();
        map.slots.reserve(n);
        map.sweep_at = map.sweep_at.max((map.slots.len() + n) * 2);
    }

    /// The live value of `key`, else the one the future of `make` builds, kept while
    /// anyone holds it. Concurrent callers for `key` wait for that one creation (no
    /// lock of the map is held meanwhile); if it fails (or its caller gives up), the
    /// next waiter tries in turn.
    pub async fn get_or_try_insert_async<E, F, Fut>(&self, key: &K, make: F) -> Result<Arc<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<V>, E>>,
    {
        let making = {
            let mut map = lock(&self.map);
            if let Some(value) = map.live(key) {
                return Ok(value);
            }
            let slot = map.slots.entry(key.clone()).or_insert_with(|| Slot {
                value: Weak::new(),
                making: None,
            });
            slot.making.get_or_insert_with(Default::default).clone()
        };
        let _turn = making.lock().await;
        // The caller before us may have created it.
        if let Some(value) = self.get(key) {
            return Ok(value);
        }
        let value = make().await?;
        lock(&self.map).store(key, &value);
        Ok(value)
    }

    /// Forgets `key` if its value is gone and nobody is creating one: for a value's
    /// `Drop`, so that its entry leaves with it (the map never drops a value under its
    /// lock, so a `Drop` may call this).
    pub fn remove_dead(&self, key: &K) {
        let mut map = lock(&self.map);
        if map.slots.get(key).is_some_and(Slot::is_dead) {
            map.slots.remove(key);
        }
    }

    /// Whether the map has an entry for `key`, live or not yet forgotten.
    pub fn has_entry(&self, key: &K) -> bool {
        lock(&self.map).slots.contains_key(key)
    }
}

/// Tasks shared by key while anyone subscribes; see the [module docs](self).
#[derive(Debug)]
pub struct SharedWatches<K, S> {
    name: &'static str,
    map: Mutex<HashMap<K, watch::Sender<S>>>,
}

impl<K, S> SharedWatches<K, S> {
    /// No task yet; `name` (e.g. "etcd prefix watcher") labels the log line of a task
    /// that stops.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K, S> SharedWatches<K, S>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: Default + Send + Sync + 'static,
{
    /// Subscribes to the task of `key`, spawning `work(sender)` (inside the current
    /// tokio runtime) when none runs. `work` publishes on the sender; it is dropped when
    /// the last receiver is, and should not end before (if it does, the key stays
    /// taken, with its last state, until then).
    pub fn subscribe<F, Fut>(&'static self, key: &K, work: F) -> watch::Receiver<S>
    where
        F: FnOnce(watch::Sender<S>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut map = lock(&self.map);
        if let Some(tx) = map.get(key) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(S::default());
        map.insert(key.clone(), tx.clone());
        let work = work(tx.clone());
        let key = key.clone();
        tokio::spawn(async move {
            tokio::pin!(work);
            let mut working = true;
            loop {
                tokio::select! {
                    () = tx.closed() => {
                        // Re-check under the lock: a subscriber may have just arrived.
                        let mut map = lock(&self.map);
                        if tx.receiver_count() == 0 {
                            map.remove(&key);
                            tracing::debug!(watch = self.name, "stopped: no subscribers");
                            return;
                        }
                    }
                    () = &mut work, if working => working = false,
                }
            }
        });
        rx
    }

    /// How many tasks run.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many receivers follow the task of `key` (0 when none runs).
    pub fn receivers(&self, key: &K) -> usize {
        lock(&self.map)
            .get(key)
            .map_or(0, watch::Sender::receiver_count)
    }

    /// Whether the task of `key` runs.
    pub fn contains(&self, key: &K) -> bool {
        lock(&self.map).contains_key(key)
    }
}

/// What one state of a watch means for a resolver: nothing yet, the registry's error,
/// or what to publish.
pub type Reading = Option<Result<Publish, String>>;

/// What a resolver publishes for one state of a watch.
pub enum Publish {
    /// The whole set ([`SnapshotSender::update`]).
    Set(Vec<Endpoint>),
    /// Changes of the resolver's entries by key ([`SnapshotSender::apply`]); a key
    /// shared with the watch's copy goes into the resolver's book without a copy.
    Keyed(Vec<(Arc<str>, Option<Endpoint>)>),
}

impl From<Vec<Endpoint>> for Publish {
    fn from(set: Vec<Endpoint>) -> Self {
        Self::Set(set)
    }
}

/// Follows `rx` into `updates`, the current state first, each state turned into a
/// [`Reading`] by `read`, until `updates` is closed or the watch's sender is gone.
///
/// With `hold_empty`, a set that becomes empty while the last one held instances is
/// published only after that long, unless instances come back first
/// ([`SnapshotSender::hold_empty`]).
pub async fn forward_snapshots<S: Clone>(
    mut rx: watch::Receiver<S>,
    updates: SnapshotSender,
    hold_empty: Option<Duration>,
    mut read: impl FnMut(&S) -> Reading,
) {
    if let Some(grace) = hold_empty {
        updates.hold_empty(grace);
    }
    // The first state (possibly the shared watch's current one) counts as changed.
    rx.mark_changed();
    loop {
        tokio::select! {
            () = updates.closed() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        // A copy, so that reading does not hold up the watch's sender.
        let state = rx.borrow_and_update().clone();
        match read(&state) {
            None => {}
            Some(Err(error)) => updates.error(error),
            Some(Ok(Publish::Set(endpoints))) => updates.update(endpoints),
            Some(Ok(Publish::Keyed(changes))) => updates.apply(changes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::LazyLock;

    static CLIENTS: LazyLock<SharedByKey<u8, String>> = LazyLock::new(SharedByKey::default);

    #[test]
    fn a_value_is_shared_made_once_and_a_failed_making_leaves_no_entry() {
        let map: SharedByKey<u32, u32> = SharedByKey::default();
        map.reserve(1000);
        let held: Vec<Arc<u32>> = (0..1000)
            .map(|k| {
                map.get_or_try_insert_with(&k, || Ok::<_, ()>(Arc::new(k)))
                    .unwrap()
            })
            .collect();
        for k in 0..1000u32 {
            let again = map.get_or_try_insert_with(&k, || Err(())).unwrap();
            assert!(Arc::ptr_eq(&again, &held[k as usize]));
        }
        assert_eq!(map.get_or_try_insert_with(&5000, || Err("no")), Err("no"));
        assert!(!map.has_entry(&5000), "a failed making stores nothing");
        // Dropped values are made anew, and swept once the map has grown enough.
        drop(held);
        assert!(map.get(&7).is_none());
        assert_eq!(
            *map.get_or_try_insert_with(&7, || Ok::<_, ()>(Arc::new(70)))
                .unwrap(),
            70
        );
        let kept: Vec<Arc<u32>> = (10_000..14_000)
            .map(|k| {
                map.get_or_try_insert_with(&k, || Ok::<_, ()>(Arc::new(k)))
                    .unwrap()
            })
            .collect();
        assert!(
            !map.has_entry(&8),
            "dead entries are swept as the map grows"
        );
        assert_eq!(kept.len(), 4000);
    }

    /// Issue #14: etcd's clients are created asynchronously (login); concurrent
    /// callers for one key get one value, created once, and the entry leaves with its
    /// last holder.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_async_value_is_created_once_and_leaves_with_its_last_holder() {
        let made = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let get = |key: u8| {
            let made = made.clone();
            tokio::spawn(async move {
                CLIENTS
                    .get_or_try_insert_async(&key, || async move {
                        made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        // Long enough for every caller to arrive meanwhile.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, ()>(Arc::new(format!("client {key}")))
                    })
                    .await
                    .unwrap()
            })
        };
        let callers: Vec<_> = (0..8).map(|_| get(1)).collect();
        let mut values = Vec::new();
        for caller in callers {
            values.push(caller.await.unwrap());
        }
        assert_eq!(
            made.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "created more than once"
        );
        assert!(values.iter().all(|v| Arc::ptr_eq(v, &values[0])));
        assert!(CLIENTS.has_entry(&1));
        drop(values);
        assert!(CLIENTS.get(&1).is_none());
        CLIENTS.remove_dead(&1);
        assert!(!CLIENTS.has_entry(&1), "the entry outlived its last holder");
        let again = get(1).await.unwrap();
        assert_eq!(
            made.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "not created anew"
        );
        drop(again);
    }

    /// A failed creation leaves the next caller to try, and no value behind.
    #[tokio::test]
    async fn a_failed_async_creation_is_tried_again() {
        let failed = CLIENTS
            .get_or_try_insert_async(&2, || async { Err::<Arc<String>, _>("down") })
            .await;
        assert_eq!(failed.unwrap_err(), "down");
        assert!(CLIENTS.get(&2).is_none());
        let value = CLIENTS
            .get_or_try_insert_async(&2, || async { Ok::<_, ()>(Arc::new("up".to_string())) })
            .await
            .unwrap();
        assert_eq!(*value, "up");
    }

    /// Dead entries are swept as the map grows, without a `remove_dead`.
    #[test]
    fn dead_entries_are_swept_as_the_map_grows() {
        let map: SharedByKey<u32, u32> = SharedByKey::default();
        for key in 0..1000 {
            drop(
                map.get_or_try_insert_with(&key, || Ok::<_, ()>(Arc::new(key)))
                    .unwrap(),
            );
        }
        let len = lock(&map.map).slots.len();
        assert!(len <= 2 * SWEEP_MIN, "{len} dead entries kept");
    }

    static WATCHES: LazyLock<SharedWatches<u8, u32>> = LazyLock::new(|| SharedWatches::new("test"));

    #[tokio::test]
    async fn a_watch_is_shared_and_ends_with_its_last_subscriber() {
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let start = |tx: watch::Sender<u32>| {
            let started_tx = started_tx.clone();
            async move {
                started_tx.send(()).unwrap();
                tx.send_replace(7);
                std::future::pending::<()>().await;
            }
        };
        let mut a = WATCHES.subscribe(&1, start);
        let b = WATCHES.subscribe(&1, start);
        a.changed().await.unwrap();
        assert_eq!((*a.borrow(), *b.borrow()), (7, 7));
        started.recv().await.unwrap();
        assert!(WATCHES.contains(&1));
        drop((a, b));
        for _ in 0..200 {
            if !WATCHES.contains(&1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!WATCHES.contains(&1), "the task outlived its subscribers");
        assert!(started.try_recv().is_err(), "one task for two subscribers");
        let _c = WATCHES.subscribe(&1, start);
        started.recv().await.unwrap();
    }
}
