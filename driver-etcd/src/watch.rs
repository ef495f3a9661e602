//! Following every key under a prefix: [`PrefixWatcher`].
//!
//! The watcher lists the prefix, then watches it from the listed revision + 1 and keeps
//! a full copy of the keys and values. Nothing in etcd-client resumes a watch, so this
//! does:
//!
//! * after any stream error it reconnects with a bounded backoff (≤ 500 ms) and resumes
//!   from the last revision it saw, so changes made meanwhile arrive as events;
//! * when that revision was compacted away it lists the prefix again;
//! * while etcd cannot be reached it reports an error and keeps the last copy (a
//!   balancer keeps serving the last endpoint set).
//!
//! One watcher runs per (cluster, prefix) in a process, however many channels resolve
//! it; each [`resolve_prefix`] call decodes the shared copy with its own format into
//! endpoint snapshots. The watcher stops when its last subscriber is gone.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

use driver_core::resolve::{Endpoint, SnapshotSender};
use etcd_client::{EventType, GetOptions, WatchOptions};
use tokio::sync::watch;

use driver_core::backoff::Backoff;

use crate::client::{EtcdConfig, bounded, shared_client};

/// Turns one key/value under the prefix into an endpoint. `Ok(None)` leaves the entry
/// out on purpose (e.g. another group); `Err` says why the value is garbage (it is
/// skipped with a warning).
pub type Decode = Arc<dyn Fn(&str, &[u8]) -> Result<Option<Endpoint>, String> + Send + Sync>;

/// What a watcher knows about its prefix.
#[derive(Clone, Debug, Default)]
pub struct PrefixState {
    /// Every key under the prefix and its value; `None` until the first listing.
    pub entries: Option<Arc<BTreeMap<String, Vec<u8>>>>,
    /// Why etcd cannot be read right now, if it cannot.
    pub error: Option<String>,
}

type Watchers = HashMap<(EtcdConfig, String), watch::Sender<PrefixState>>;

static WATCHERS: LazyLock<Mutex<Watchers>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn watchers() -> std::sync::MutexGuard<'static, Watchers> {
    WATCHERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The shared watch of one prefix in one cluster; see the [module docs](self).
#[derive(Debug)]
pub struct PrefixWatcher {
    rx: watch::Receiver<PrefixState>,
}

impl PrefixWatcher {
    /// Subscribes to the process's watcher of `prefix` in `config`'s cluster, starting
    /// it if none runs. Must be called inside a tokio runtime.
    pub fn subscribe(config: &EtcdConfig, prefix: &str) -> Self {
        let mut map = watchers();
        let key = (config.clone(), prefix.to_string());
        if let Some(tx) = map.get(&key) {
            return Self { rx: tx.subscribe() };
        }
        let (tx, rx) = watch::channel(PrefixState::default());
        map.insert(key.clone(), tx.clone());
        tokio::spawn(run(key, tx));
        Self { rx }
    }

    /// The receiver of the watcher's state; `changed()` fires on every change.
    pub fn receiver(&self) -> watch::Receiver<PrefixState> {
        self.rx.clone()
    }

    /// How many watchers run in this process (for tests of the sharing).
    pub fn running() -> usize {
        watchers().len()
    }

    /// How many watchers run for `prefix` in `config`'s cluster: 0 or 1 (for tests of
    /// the sharing that must not count other tests' watchers).
    pub fn running_for(config: &EtcdConfig, prefix: &str) -> usize {
        usize::from(watchers().contains_key(&(config.clone(), prefix.to_string())))
    }
}

/// Resolves `prefix` in `config`'s cluster into endpoint snapshots published on
/// `updates`, decoding each value with `decode`. Returns at once; a task follows the
/// shared [`PrefixWatcher`] until `updates` is closed.
pub fn resolve_prefix(config: &EtcdConfig, prefix: &str, decode: Decode, updates: SnapshotSender) {
    let mut rx = PrefixWatcher::subscribe(config, prefix).receiver();
    let prefix = prefix.to_string();
    tokio::spawn(async move {
        // The first state (possibly the shared watcher's current one) counts as changed.
        rx.mark_changed();
        loop {
            tokio::select! {
                () = updates.closed() => return,
                changed = rx.changed() => if changed.is_err() { return },
            }
            let state = rx.borrow_and_update().clone();
            if let Some(entries) = &state.entries
                && state.error.is_none()
            {
                updates.update(decode_all(&prefix, entries, &decode));
            } else if let Some(error) = state.error {
                updates.error(error);
            }
        }
    });
}

fn decode_all(prefix: &str, entries: &BTreeMap<String, Vec<u8>>, decode: &Decode) -> Vec<Endpoint> {
    let mut endpoints = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        match decode(key, value) {
            Ok(Some(endpoint)) => endpoints.push(endpoint),
            Ok(None) => {}
            Err(why) => tracing::warn!(
                %prefix, %key, value = %String::from_utf8_lossy(value), %why,
                "skipping an etcd entry that is not a valid instance"
            ),
        }
    }
    endpoints
}

/// The watcher task: list, watch, resume, re-list; ends when nobody listens.
async fn run(key: (EtcdConfig, String), tx: watch::Sender<PrefixState>) {
    let (config, prefix) = &key;
    let mut follower = Follower {
        config: config.clone(),
        prefix: prefix.clone(),
        entries: BTreeMap::new(),
        revision: None,
        tx: tx.clone(),
    };
    loop {
        tokio::select! {
            () = tx.closed() => {
                // Re-check under the map lock: a subscriber may have just arrived.
                let mut map = watchers();
                if tx.receiver_count() == 0 {
                    map.remove(&key);
                    tracing::debug!(%prefix, "etcd prefix watcher stopped: no subscribers");
                    return;
                }
            }
            () = follower.follow() => {}
        }
    }
}

struct Follower {
    config: EtcdConfig,
    prefix: String,
    entries: BTreeMap<String, Vec<u8>>,
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

    fn publish(&self) {
        let entries = Arc::new(self.entries.clone());
        self.tx.send_modify(|s| {
            s.entries = Some(entries);
            s.error = None;
        });
    }

    /// One connection: list if needed, watch until the stream breaks.
    async fn attempt(&mut self, backoff: &mut Backoff) -> Result<(), String> {
        let hosts = self.config.hosts().join(",");
        let client = shared_client(&self.config)
            .await
            .map_err(|e| e.to_string())?;
        let revision = match self.revision {
            Some(r) => r,
            None => {
                let mut kv = client.kv_client();
                let resp = bounded(
                    "get",
                    kv.get(self.prefix.as_str(), Some(GetOptions::new().with_prefix())),
                )
                .await
                .map_err(|e| format!("{e} (etcd at {hosts})"))?;
                self.entries = resp
                    .kvs()
                    .iter()
                    .map(|kv| {
                        (
                            String::from_utf8_lossy(kv.key()).into_owned(),
                            kv.value().to_vec(),
                        )
                    })
                    .collect();
                let r = resp.header().map_or(0, |h| h.revision());
                self.revision = Some(r);
                self.publish();
                r
            }
        };
        let mut watch_client = client.watch_client();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut stream = bounded(
            "watch",
            watch_client.watch(self.prefix.as_str(), Some(options)),
        )
        .await
        .map_err(|e| format!("{e} (etcd at {hosts})"))?;
        loop {
            let resp = match stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => return Err(format!("etcd at {hosts} closed the watch stream")),
                Err(e) => return Err(format!("etcd watch stream from {hosts}: {e}")),
            };
            if resp.compact_revision() > 0 {
                tracing::info!(prefix = %self.prefix, compacted = resp.compact_revision(), "etcd compacted past our revision; listing again");
                self.revision = None;
                return Ok(());
            }
            if resp.canceled() {
                return Err(format!(
                    "etcd cancelled the watch: {}",
                    resp.cancel_reason()
                ));
            }
            if resp.created() {
                backoff.reset();
                // Connected again: clear a reported error without waiting for an event.
                if self.tx.borrow().error.is_some() {
                    self.publish();
                }
            }
            let mut changed = false;
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                match event.event_type() {
                    EventType::Put => self.entries.insert(key, kv.value().to_vec()),
                    EventType::Delete => self.entries.remove(&key),
                };
                self.revision = Some(kv.mod_revision().max(self.revision.unwrap_or(0)));
                changed = true;
            }
            if changed {
                self.publish();
            }
        }
    }
}
