//! Following every key under a prefix: [`PrefixWatcher`].
//!
//! The watcher lists the prefix, then watches it from the listed revision + 1 and keeps
//! a copy of the keys and values. etcd does not resume a broken watch stream, so this does:
//!
//! * after any stream error it reconnects with a bounded backoff (≤ 500 ms) and resumes
//!   from the last revision it saw, so changes made meanwhile arrive as events;
//! * when that revision was compacted away it lists the prefix again;
//! * while etcd cannot be reached it reports an error and keeps the last copy (a
//!   balancer keeps serving the last endpoint set).
//! * when every instance of a set disappears at once, subscribers keep the last set
//!   for [`EMPTY_GRACE`] (1 s) unless an instance comes back first: that is what etcd
//!   does when it resumes after a pause longer than the lease TTL, and the registrars put
//!   their keys back milliseconds later. A set emptied for good arrives 1 s late.
//!
//! One watcher runs per (cluster, prefix) in a process, however many channels resolve
//! it, and every watcher of a cluster rides that cluster's one Watch stream
//! ([`crate::watch_hub`]); each [`resolve_prefix`] call decodes the shared copy with its own format into
//! endpoint snapshots. The watcher stops when its last subscriber is gone.
//!
//! What an event costs: the copy is a persistent map ([`SortedMap`]), so publishing it after
//! an event shares every untouched entry instead of copying the prefix; each published
//! state also carries the changes that made it ([`PrefixState::changes`]), so a
//! subscriber that kept up decodes only the keys that changed and hands just those keys'
//! endpoints to its resolver's sender ([`SnapshotSender::apply`]), so a change costs
//! O(log N) from etcd's event to the balancer's table. A subscriber that fell
//! behind (the state cell keeps only the newest state, so a slow reader never holds the
//! watcher back) compares the whole copy with what it decoded last and decodes only the
//! values that differ. A value is decoded once per change, and a value that is not an
//! instance is logged once, when it is written, shortened to its first bytes: garbage
//! under a prefix cannot flood the logs of every process that watches it.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use dtmdriver_core::resolve::{Endpoint, SnapshotSender};
use dtmdriver_core::shared::{Publish, SharedWatches, forward_snapshots};
use dtmdriver_core::sorted_map::{Diff, SortedMap};
use tokio::sync::watch;

use dtmdriver_core::backoff::Backoff;

use crate::client::{EtcdConfig, shared_client};
use crate::proto::mvccpb::KeyValue;
use crate::proto::mvccpb::event::EventType;
use crate::request::{bounded, explain_oversized};

/// Turns one key/value under the prefix into an endpoint. `Ok(None)` leaves the entry
/// out on purpose (e.g. another group); `Err` says why the value is garbage (it is
/// skipped with a warning).
pub type Decode = Arc<dyn Fn(&str, &[u8]) -> Result<Option<Endpoint>, String> + Send + Sync>;

/// The keys and values under a prefix: a persistent map, cheap to clone and to update.
/// A key is one allocation, shared by every copy of the map, the subscribers' decoded
/// indexes and their resolvers' books: held once instead of three times, 99 → 88–90 MB
/// of RSS for a resolver of 100,000 instances, 225 → 194–210 ms of CPU to its first set
/// (`cargo bench -p dtmdriver-gozero --bench scale`, docs/performance.md).
pub type Entries = SortedMap<Arc<str>, Bytes>;

/// One change of a key: its new value, or `None` when it was deleted.
pub type EntryChange = (Arc<str>, Option<Bytes>);

/// What a watcher knows about its prefix.
#[derive(Clone, Debug, Default)]
pub struct PrefixState {
    /// Every key under the prefix and its value; `None` until the first listing.
    pub entries: Option<Entries>,
    /// Why etcd cannot be read right now, if it cannot.
    pub error: Option<String>,
    /// Counts the versions of `entries`: +1 for every published change.
    pub seq: u64,
    /// The changes that turned version `seq - 1` of `entries` into this one, in order;
    /// `None` when this version came from a (re-)listing.
    pub changes: Option<Arc<[EntryChange]>>,
}

static WATCHERS: LazyLock<SharedWatches<(EtcdConfig, String), PrefixState>> =
    LazyLock::new(|| SharedWatches::new("etcd prefix watcher"));

/// The shared watch of one prefix in one cluster; see the [module docs](self).
#[derive(Debug)]
pub struct PrefixWatcher {
    rx: watch::Receiver<PrefixState>,
}

impl PrefixWatcher {
    /// Subscribes to the process's watcher of `prefix` in `config`'s cluster, starting
    /// it if none runs. Must be called inside a tokio runtime.
    pub fn subscribe(config: &EtcdConfig, prefix: &str) -> Self {
        let key = (config.clone(), prefix.to_string());
        let rx = WATCHERS.subscribe(&key, |tx| run(key.clone(), tx));
        Self { rx }
    }

    /// The receiver of the watcher's state; `changed()` fires on every change.
    pub fn receiver(&self) -> watch::Receiver<PrefixState> {
        self.rx.clone()
    }

    /// How many watchers run in this process (for tests of the sharing).
    pub fn running() -> usize {
        WATCHERS.len()
    }

    /// How many watchers run for `prefix` in `config`'s cluster: 0 or 1 (for tests of
    /// the sharing that must not count other tests' watchers).
    pub fn running_for(config: &EtcdConfig, prefix: &str) -> usize {
        usize::from(WATCHERS.contains(&(config.clone(), prefix.to_string())))
    }
}

/// Resolves `prefix` in `config`'s cluster into endpoint snapshots published on
/// `updates`, decoding each value with `decode`. Returns at once; a task follows the
/// shared [`PrefixWatcher`] until `updates` is closed.
pub fn resolve_prefix(config: &EtcdConfig, prefix: &str, decode: Decode, updates: SnapshotSender) {
    let rx = PrefixWatcher::subscribe(config, prefix).receiver();
    let index = DecodedIndex::new(prefix, decode);
    tokio::spawn(publish_snapshots(rx, index, updates));
}

/// Follows a watcher's states into `updates` (the shared forwarding loop), decoding
/// them change by change with `index` and holding an emptied set for [`EMPTY_GRACE`].
async fn publish_snapshots(
    rx: watch::Receiver<PrefixState>,
    mut index: DecodedIndex,
    updates: SnapshotSender,
) {
    forward_snapshots(rx, updates, Some(EMPTY_GRACE), move |state| {
        if let Some(error) = &state.error {
            Some(Err(error.clone()))
        } else {
            index
                .follow(state)
                .map(|changes| Ok(Publish::Keyed(changes)))
        }
    })
    .await;
}

/// How long a subscriber keeps publishing its last instances when every one of them is
/// deleted at once, unless one comes back sooner.
///
/// Why: when etcd resumes after a pause longer than the lease TTL (a frozen VM, a long
/// GC, a disk stall), it expires every lease at once and the registrars put their keys
/// back a few milliseconds later. Publishing the empty set in between fails every call
/// made in that gap with "resolved to no endpoints" (measured: 81 failed calls under 16
/// callers in the fault suite's `etcd-freeze`), although every instance is alive. A set
/// that is really emptied (every instance deregistered) reaches the channel this much
/// later; a set that shrinks without emptying is published at once.
pub const EMPTY_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// One subscriber's decoded view of a prefix: every key's value as last decoded and
/// whether it gave an endpoint, kept up to date change by change.
///
/// The endpoints themselves live in the resolver's sender, which ignores a put of the
/// endpoint a key already holds; a copy here (as before) cost an `Endpoint` an instance.
struct DecodedIndex {
    prefix: String,
    decode: Decode,
    /// The `seq` of the state last applied; `None` before the first.
    seq: Option<u64>,
    /// The copy of the prefix last applied, to compare a state after skipped ones with.
    last: Option<Entries>,
    /// Each key's value, and whether it decoded to an endpoint.
    entries: BTreeMap<Arc<str>, (Bytes, bool)>,
}

/// How much of a garbage value a warning shows.
const SHOWN_VALUE_BYTES: usize = 128;

impl DecodedIndex {
    fn new(prefix: &str, decode: Decode) -> Self {
        Self {
            prefix: prefix.to_string(),
            decode,
            seq: None,
            last: None,
            entries: BTreeMap::new(),
        }
    }

    /// Brings the index up to `state`; the keys whose endpoint changed (`None`: the
    /// key is gone or no longer gives one), or `None` if `state` holds no listing yet.
    fn follow(&mut self, state: &PrefixState) -> Option<Vec<(Arc<str>, Option<Endpoint>)>> {
        let entries = state.entries.as_ref()?;
        let mut out = Vec::new();
        if self.seq == Some(state.seq) {
            // An error cleared with nothing changed: publish the set again.
            return Some(out);
        }
        match &state.changes {
            Some(changes) if self.seq.is_some_and(|s| s + 1 == state.seq) => {
                for (key, value) in changes.iter() {
                    match value {
                        Some(value) => self.put(key, value, &mut out),
                        None => self.remove(key, &mut out),
                    }
                }
            }
            // The first listing: every entry decoded once, the index built in bulk.
            _ if self.entries.is_empty() => self.fill(entries, &mut out),
            // States skipped (the watch cell keeps the newest): the differences from the
            // copy applied last, which shares every node off the changed keys' paths,
            // O(C log N). A re-listing shares nothing and costs what comparing it whole
            // does.
            _ if self.last.is_some() => {
                let last = self.last.take().expect("checked");
                let mut changed = Vec::new();
                last.diff(
                    entries,
                    |a, b| a == b,
                    |d| match d {
                        Diff::Removed(key, _) => changed.push((key, None)),
                        Diff::Added(key, value) | Diff::Changed(_, (key, value)) => {
                            changed.push((key, Some(value)));
                        }
                    },
                );
                for (key, value) in changed {
                    match value {
                        Some(value) => self.put(key, value, &mut out),
                        None => self.remove(key, &mut out),
                    }
                }
            }
            // No copy to compare with: compare the whole one.
            _ => {
                let gone: Vec<Arc<str>> = self
                    .entries
                    .keys()
                    .filter(|key| !entries.contains_key(*key))
                    .cloned()
                    .collect();
                for key in gone {
                    self.remove(&key, &mut out);
                }
                for (key, value) in entries.iter() {
                    self.put(key, value, &mut out);
                }
            }
        }
        self.seq = Some(state.seq);
        self.last = Some(entries.clone());
        Some(out)
    }

    /// Fills an empty index with `entries`, noting every endpoint they give.
    ///
    /// Why not [`put`](Self::put) each: the listing comes in key order, from which a
    /// `BTreeMap` is built in one pass, where inserting searched the tree twice an
    /// entry (a string comparison at every level). With the sender's unchecked
    /// insertions into an empty set, the resolver's CPU to its first set of 100,000
    /// fell from 327 to 254 ms (`cargo bench -p dtmdriver-gozero --bench scale`).
    fn fill(&mut self, entries: &Entries, out: &mut Vec<(Arc<str>, Option<Endpoint>)>) {
        out.reserve(entries.len());
        let mut built = Vec::with_capacity(entries.len());
        for (key, value) in entries.iter() {
            let endpoint = self.decoded(key, value);
            let gives = endpoint.is_some();
            if gives {
                out.push((key.clone(), endpoint));
            }
            built.push((key.clone(), (value.clone(), gives)));
        }
        // In key order already: the sort inside finds one run.
        self.entries = built.into_iter().collect();
    }

    /// The endpoint `value` gives, `None` (with a warning) for garbage.
    fn decoded(&self, key: &str, value: &Bytes) -> Option<Endpoint> {
        match (self.decode)(key, value) {
            Ok(endpoint) => endpoint,
            Err(why) => {
                tracing::warn!(
                    prefix = %self.prefix, %key, value = %shown(value), %why,
                    "skipping an etcd entry that is not a valid instance"
                );
                None
            }
        }
    }

    /// Decodes `value` unless `key` already holds exactly it; notes a changed endpoint.
    fn put(&mut self, key: &Arc<str>, value: &Bytes, out: &mut Vec<(Arc<str>, Option<Endpoint>)>) {
        if self.entries.get(key).is_some_and(|(old, _)| old == value) {
            return;
        }
        let endpoint = self.decoded(key, value);
        let gives = endpoint.is_some();
        let gave = self.entries.insert(key.clone(), (value.clone(), gives));
        if gives || gave.is_some_and(|(_, gave)| gave) {
            out.push((key.clone(), endpoint));
        }
    }

    fn remove(&mut self, key: &Arc<str>, out: &mut Vec<(Arc<str>, Option<Endpoint>)>) {
        if let Some((_, true)) = self.entries.remove(key) {
            out.push((key.clone(), None));
        }
    }
}

/// The first bytes of a value for a log line, saying how long it is when cut.
fn shown(value: &[u8]) -> String {
    if value.len() <= SHOWN_VALUE_BYTES {
        return String::from_utf8_lossy(value).into_owned();
    }
    format!(
        "{}… ({} bytes)",
        String::from_utf8_lossy(&value[..SHOWN_VALUE_BYTES]),
        value.len()
    )
}

/// A value to keep, in an allocation of its own: the `Vec` prost decoded it into,
/// exactly its size.
///
/// Why not a slice of the answer (prost's `bytes` option, which this engine used): a
/// slice keeps all of the buffer its message was read into alive, at least 8 KiB (tonic's
/// decode buffer) per listing. Kept as they came, the values of a 3-instance listing held
/// 8 KiB a target, 40% of the heap of a process resolving 1,000 targets (19.6 MB,
/// counted with dhat); a watch event's value held the stream's buffer of its time.
fn own(value: Vec<u8>) -> Bytes {
    Bytes::from(value)
}

/// The entries of a listing, each value in an allocation of its own ([`own`]).
fn listed(kvs: Vec<KeyValue>) -> Entries {
    kvs.into_iter()
        .map(|kv| (key_of(&kv.key), own(kv.value)))
        .collect()
}

/// A key as the entries hold it: one allocation, shared from there on.
fn key_of(key: &[u8]) -> Arc<str> {
    Arc::from(&*String::from_utf8_lossy(key))
}

/// The watcher task: list, watch, resume, re-list; ends when nobody listens.
async fn run(key: (EtcdConfig, String), tx: watch::Sender<PrefixState>) {
    let (config, prefix) = &key;
    let mut follower = Follower {
        config: config.clone(),
        prefix: prefix.clone(),
        entries: Entries::new(),
        revision: None,
        tx: tx.clone(),
    };
    follower.follow().await;
}

struct Follower {
    config: EtcdConfig,
    prefix: String,
    entries: Entries,
    /// The last revision seen; `None` means list before watching.
    revision: Option<i64>,
    tx: watch::Sender<PrefixState>,
}

impl Follower {
    /// Runs forever, reconnecting with backoff; cancelled by dropping.
    ///
    /// An interruption is reported (logged, and published to the subscribers) after the
    /// pause before the retry, not at once: when the process shuts down, the runtime
    /// drops the etcd connection's task while this one may still run, and the watch
    /// breaks ("broken pipe"); this task is dropped during the pause, so the process's
    /// own shutdown is never reported as an etcd failure. A real interruption is
    /// reported 50–500 ms late, while the subscribers keep the last set anyway. It is
    /// logged at WARN once, then at DEBUG until the watch is back.
    async fn follow(&mut self) {
        let mut backoff = Backoff::for_engine();
        loop {
            let result = self.attempt(&mut backoff).await;
            tokio::time::sleep(backoff.next_delay()).await;
            if let Err(e) = result {
                if self.tx.borrow().error.is_none() {
                    tracing::warn!(prefix = %self.prefix, error = %e, "etcd watch interrupted; retrying");
                } else {
                    tracing::debug!(prefix = %self.prefix, error = %e, "etcd watch interrupted; retrying");
                }
                self.tx.send_modify(|s| s.error = Some(e));
            }
        }
    }

    /// Publishes the copy as a new version, made by `changes` (`None`: a listing).
    fn publish(&self, changes: Option<Vec<EntryChange>>) {
        let entries = self.entries.clone();
        self.tx.send_modify(|s| {
            s.entries = Some(entries);
            s.error = None;
            s.seq += 1;
            s.changes = changes.map(Arc::from);
        });
    }

    /// One connection: list if needed, watch until the stream breaks.
    async fn attempt(&mut self, backoff: &mut Backoff) -> Result<(), String> {
        let hosts = self.config.hosts().join(",");
        // The connecting and listing futures are boxed: they are large, and inline they
        // would size this task for its whole life, while it spends that life waiting on
        // the watch stream (one task a watched prefix: 1,000 targets, 1,000 tasks).
        let client = Box::pin(shared_client(&self.config))
            .await
            .map_err(|e| e.to_string())?;
        let revision = match self.revision {
            Some(r) => r,
            None => {
                let resp = Box::pin(bounded("get", client.get_prefix(&self.prefix)))
                    .await
                    .map_err(|e| {
                        let what = format!("the listing of `{}`", self.prefix);
                        format!("{} (etcd at {hosts})", explain_oversized(e, &what))
                    })?;
                let r = resp.header.map_or(0, |h| h.revision);
                self.entries = listed(resp.kvs);
                self.revision = Some(r);
                self.publish(None);
                r
            }
        };
        // On the cluster's shared stream.
        let mut stream = crate::watch_hub::watch(&self.config, &self.prefix, revision + 1);
        loop {
            let resp = match stream.message().await? {
                Some(resp) => resp,
                None => return Err(format!("the watch of etcd at {hosts} ended")),
            };
            if resp.compact_revision > 0 {
                tracing::info!(prefix = %self.prefix, compacted = resp.compact_revision, "etcd compacted past our revision; listing again");
                self.revision = None;
                return Ok(());
            }
            if resp.canceled {
                return Err(format!("etcd cancelled the watch: {}", resp.cancel_reason));
            }
            if resp.created {
                backoff.reset();
                // Connected again: clear a reported error without waiting for an event.
                if self.tx.borrow().error.is_some() {
                    self.tx.send_modify(|s| s.error = None);
                }
            }
            let mut changes = Vec::with_capacity(resp.events.len());
            for event in resp.events {
                let kind = event.r#type();
                let Some(kv) = event.kv else { continue };
                let key = key_of(&kv.key);
                let value = match kind {
                    EventType::Put => {
                        let value = own(kv.value);
                        self.entries.insert(key.clone(), value.clone());
                        Some(value)
                    }
                    EventType::Delete => {
                        self.entries.remove(&key);
                        None
                    }
                };
                changes.push((key, value));
                self.revision = Some(kv.mod_revision.max(self.revision.unwrap_or(0)));
            }
            if !changes.is_empty() {
                self.publish(Some(changes));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A listing's values do not keep the buffer its answer was read into alive: each
    /// is the only owner of its bytes (they were slices of one 8 KiB buffer a target).
    #[test]
    fn listed_values_own_their_bytes() {
        use crate::proto::etcdserverpb::RangeResponse;
        use prost::Message;
        let kvs = (0..3)
            .map(|i| KeyValue {
                key: format!("busi.rpc/{i}").into_bytes(),
                value: format!("127.0.0.1:{}", 9000 + i).into_bytes(),
                ..KeyValue::default()
            })
            .collect();
        let answer = RangeResponse {
            kvs,
            ..RangeResponse::default()
        };
        // Decoded from one buffer, as tonic decodes, which stays alive meanwhile.
        let buffer = Bytes::from(answer.encode_to_vec());
        let decoded = RangeResponse::decode(buffer.clone()).unwrap();
        let entries = listed(decoded.kvs);
        assert_eq!(entries.len(), 3);
        for (key, value) in entries.iter() {
            assert!(value.is_unique(), "{key} shares the answer's buffer");
        }
        assert_eq!(
            entries.get("busi.rpc/1").unwrap().as_ref(),
            b"127.0.0.1:9001"
        );
        drop(buffer);
    }

    /// An index whose decoder counts its calls; `bad` values are garbage.
    fn counting_index() -> (DecodedIndex, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let decode: Decode = Arc::new(move |_key: &str, value: &[u8]| {
            counter.fetch_add(1, Ordering::Relaxed);
            match value {
                b"bad" => Err("garbage".to_string()),
                addr => Ok(Some(Endpoint::new(String::from_utf8_lossy(addr)))),
            }
        });
        (DecodedIndex::new("p/", decode), calls)
    }

    fn state(entries: &Entries, seq: u64, changes: Option<Vec<EntryChange>>) -> PrefixState {
        PrefixState {
            entries: Some(entries.clone()),
            error: None,
            seq,
            changes: changes.map(Arc::from),
        }
    }

    fn put(entries: &mut Entries, key: &str, value: &str) -> EntryChange {
        let value = Bytes::copy_from_slice(value.as_bytes());
        entries.insert(key.into(), value.clone());
        (key.into(), Some(value))
    }

    /// The endpoints by key, as the index's changes leave them.
    #[derive(Default)]
    struct View(BTreeMap<Arc<str>, Endpoint>);

    impl View {
        fn follow(&mut self, index: &mut DecodedIndex, state: &PrefixState) {
            for (key, endpoint) in index.follow(state).expect("a listing") {
                match endpoint {
                    Some(e) => self.0.insert(key, e),
                    None => self.0.remove(&key),
                };
            }
        }

        fn addrs(&self) -> Vec<String> {
            self.0.values().map(|e| e.addr.clone()).collect()
        }
    }

    #[test]
    fn decodes_each_value_once_per_change() {
        let (mut index, calls) = counting_index();
        let mut view = View::default();
        let mut entries = Entries::new();
        for i in 0..100 {
            put(
                &mut entries,
                &format!("p/{i:03}"),
                &format!("10.0.0.1:{}", 1000 + i),
            );
        }
        put(&mut entries, "p/junk", "bad");
        view.follow(&mut index, &state(&entries, 1, None));
        assert_eq!(calls.load(Ordering::Relaxed), 101);
        assert_eq!(view.addrs().len(), 100);

        // One put and one delete: two keys touched, one decode.
        let change = put(&mut entries, "p/new", "10.0.0.2:1");
        entries.remove("p/000");
        let changes = vec![change, ("p/000".into(), None)];
        view.follow(&mut index, &state(&entries, 2, Some(changes)));
        assert_eq!(calls.load(Ordering::Relaxed), 102);
        let now = view.addrs();
        assert_eq!(now.len(), 100);
        assert!(now.contains(&"10.0.0.2:1".to_string()));
        assert!(!now.contains(&"10.0.0.1:1000".to_string()));

        // States skipped (seq 3 never seen): the copy is compared, and only values that
        // differ are decoded.
        put(&mut entries, "p/001", "10.0.0.3:1");
        put(&mut entries, "p/002", "10.0.0.3:2");
        entries.remove("p/junk");
        view.follow(&mut index, &state(&entries, 4, Some(Vec::new())));
        assert_eq!(calls.load(Ordering::Relaxed), 104);
        assert_eq!(view.addrs().len(), 100);

        // The same version again (an error cleared): published, nothing decoded.
        view.follow(&mut index, &state(&entries, 4, None));
        assert_eq!(calls.load(Ordering::Relaxed), 104);

        // A re-listing with identical values decodes nothing.
        view.follow(&mut index, &state(&entries, 5, None));
        assert_eq!(calls.load(Ordering::Relaxed), 104);
    }

    /// The states a watcher would publish, fed by hand.
    fn publish(tx: &watch::Sender<PrefixState>, entries: &Entries, changes: Vec<EntryChange>) {
        tx.send_modify(|s| {
            s.entries = Some(entries.clone());
            s.seq += 1;
            s.changes = Some(Arc::from(changes));
        });
    }

    #[tokio::test(start_paused = true)]
    async fn an_emptied_set_is_published_only_after_the_grace() {
        let (tx, rx) = watch::channel(PrefixState::default());
        let (updates, snapshots) = SnapshotSender::channel();
        let (index, _) = counting_index();
        let task = tokio::spawn(publish_snapshots(rx, index, updates));
        let size = || snapshots.borrow().endpoints.as_ref().map(|e| e.len());
        let settle = || tokio::time::sleep(Duration::from_millis(1));

        let mut entries = Entries::new();
        let change = put(&mut entries, "p/a", "10.0.0.1:1");
        publish(&tx, &entries, vec![change]);
        settle().await;
        assert_eq!(size(), Some(1));

        // Every key deleted, then put back within the grace: never published empty.
        entries.remove("p/a");
        publish(&tx, &entries, vec![("p/a".into(), None)]);
        settle().await;
        tokio::time::sleep(EMPTY_GRACE / 2).await;
        assert_eq!(size(), Some(1), "emptied before the grace ended");
        let change = put(&mut entries, "p/a", "10.0.0.1:1");
        publish(&tx, &entries, vec![change]);
        tokio::time::sleep(EMPTY_GRACE * 2).await;
        assert_eq!(size(), Some(1));

        // Deleted for good: empty once the grace is over.
        entries.remove("p/a");
        publish(&tx, &entries, vec![("p/a".into(), None)]);
        tokio::time::sleep(EMPTY_GRACE - Duration::from_millis(10)).await;
        assert_eq!(size(), Some(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(size(), Some(0));

        // A set that was empty from the start is published at once.
        let change = put(&mut entries, "p/b", "10.0.0.1:2");
        publish(&tx, &entries, vec![change]);
        settle().await;
        assert_eq!(size(), Some(1));
        drop(snapshots);
        task.abort();
    }

    #[test]
    fn nothing_listed_yet_publishes_nothing() {
        let (mut index, _) = counting_index();
        assert!(index.follow(&PrefixState::default()).is_none());
    }

    #[test]
    fn long_values_are_shortened_in_logs() {
        assert_eq!(shown(b"short"), "short");
        let long = vec![b'y'; 10_000];
        let s = shown(&long);
        assert!(s.len() < 200, "{}", s.len());
        assert!(s.ends_with("(10000 bytes)"), "{s}");
    }
}
/// One watcher task runs per watched prefix for as long as the prefix is followed, so its
/// size is paid once per target (1,000 targets: 1,000 tasks).
#[cfg(test)]
mod task_size {
    #[test]
    fn a_watcher_task_stays_small_while_it_waits() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _in_runtime = rt.enter();
        let config = crate::client::EtcdConfig::new(["127.0.0.1:1"]);
        let (tx, rx) = tokio::sync::watch::channel(super::PrefixState::default());
        let watcher = super::run((config, "x".into()), tx);
        // With the connecting and listing futures inline it was 5,880 bytes (a debug build).
        assert!(
            std::mem::size_of_val(&watcher) <= 2048,
            "the watcher task is {} bytes",
            std::mem::size_of_val(&watcher)
        );
        let (updates, _rx) = dtmdriver_core::resolve::SnapshotSender::channel();
        let index =
            super::DecodedIndex::new("x", std::sync::Arc::new(|_: &str, _: &[u8]| Ok(None)));
        let subscriber = super::publish_snapshots(rx, index, updates);
        assert!(std::mem::size_of_val(&subscriber) <= 2048);
    }
}
