//! One etcd Watch stream per cluster, shared by every prefix watched in it: [`watch`].
//!
//! Contract: [`watch`] starts a watch of a prefix from a revision and returns a
//! [`HubWatch`] whose [`message`](HubWatch::message) yields that watch's responses (its
//! `created` response first, then its events, a compaction or cancellation), exactly as
//! a watch stream of its own would. Every watch of a process on one cluster (one
//! [`EtcdConfig`]) rides one gRPC Watch stream, told apart by watch ids this hub
//! chooses, as Go's clientv3 multiplexes them. When that stream breaks, every watch on it
//! gets the error once and is over: its owner resumes from its own last revision with a
//! new [`watch`] (as [`crate::watch`]'s followers do), and the hub opens a new stream for
//! them. Dropping a [`HubWatch`] cancels its watch; the stream closes when its last
//! watch is gone, and the hub's task ends with it.
//!
//! Why: a stream per prefix costs etcd a stream (and goroutines) per watched prefix; a
//! process dialling 1,000 targets on one cluster opened 1,000 streams.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{LazyLock, Mutex};

use tokio::sync::mpsc;

use crate::api::{WatchStream, describe, watch_prefix};
use crate::client::{EtcdConfig, shared_client};
use crate::proto::etcdserverpb::WatchResponse;
use crate::request::bounded;

/// What a watch's owner receives: a response, or why the stream broke.
/// Boxed: an unbounded channel allocates its first block of 32 slots when made, so the
/// slot size is paid 32 times per watch (1,000 targets: 1,000 channels); a bare
/// `WatchResponse` made that about 4 KB a watch, a box 0.8 KB.
type Delivery = Result<Box<WatchResponse>, String>;

/// Commands to a cluster's hub.
enum Command {
    /// Start watching `prefix` from `start` under `id`.
    Add {
        id: i64,
        prefix: String,
        start: i64,
        deliver: mpsc::UnboundedSender<Delivery>,
    },
    /// Stop watch `id`.
    Remove { id: i64 },
}

/// The hubs by cluster: each hub's number (to tell a hub from its successor) and the
/// sender of its commands.
type Hubs = HashMap<EtcdConfig, (i64, mpsc::UnboundedSender<Command>)>;

static HUBS: LazyLock<Mutex<Hubs>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Watch and hub numbers, unique in the process (so in every stream).
static NEXT_ID: AtomicI64 = AtomicI64::new(1);

fn hubs() -> std::sync::MutexGuard<'static, Hubs> {
    HUBS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts a hub for `config`, registered in `map`; its command sender.
fn spawn_hub(map: &mut Hubs, config: &EtcdConfig) -> mpsc::UnboundedSender<Command> {
    let number = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::unbounded_channel();
    map.insert(config.clone(), (number, tx.clone()));
    tokio::spawn(run(config.clone(), number, rx));
    tx
}

/// How many hubs (one per cluster with live watches) run in this process.
pub fn running() -> usize {
    hubs().len()
}

/// Watches every key under `prefix` in `config`'s cluster from revision `start` on the
/// cluster's shared stream; see the [module docs](self). Must be called inside a tokio
/// runtime.
pub fn watch(config: &EtcdConfig, prefix: &str, start: i64) -> HubWatch {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (deliver, rx) = mpsc::unbounded_channel();
    let mut map = hubs();
    let command = Command::Add {
        id,
        prefix: prefix.to_string(),
        start,
        deliver,
    };
    // Sent under the map lock: a hub removes itself under the same lock, after making
    // sure no command is waiting, so a command sent here is never lost.
    let hub = match map.get(config) {
        Some((_, hub)) => hub.clone(),
        None => spawn_hub(&mut map, config),
    };
    let hub = match hub.send(command) {
        Ok(()) => hub,
        Err(mpsc::error::SendError(command)) => {
            // The hub's task was dropped without deregistering (a runtime shut down).
            let hub = spawn_hub(&mut map, config);
            let _ = hub.send(command);
            hub
        }
    };
    let hub = Some(hub);
    HubWatch { id, rx, hub }
}

/// One prefix's watch on its cluster's shared stream; cancelled when dropped.
#[derive(Debug)]
pub struct HubWatch {
    id: i64,
    rx: mpsc::UnboundedReceiver<Delivery>,
    hub: Option<mpsc::UnboundedSender<Command>>,
}

impl HubWatch {
    /// The next response of this watch; `Err` once when the shared stream broke (the
    /// watch is then over), `Ok(None)` if the hub is gone.
    pub async fn message(&mut self) -> Result<Option<WatchResponse>, String> {
        match self.rx.recv().await {
            Some(Ok(resp)) => Ok(Some(*resp)),
            Some(Err(e)) => Err(e),
            None => Ok(None),
        }
    }
}

impl Drop for HubWatch {
    fn drop(&mut self) {
        if let Some(hub) = &self.hub {
            let _ = hub.send(Command::Remove { id: self.id });
        }
    }
}

/// A watch the hub holds.
struct Held {
    prefix: String,
    start: i64,
    deliver: mpsc::UnboundedSender<Delivery>,
}

/// The hub of one cluster: opens the stream when there are watches, routes responses
/// by watch id, fails every watch when the stream breaks, ends when no watch is left.
async fn run(config: EtcdConfig, number: i64, mut commands: mpsc::UnboundedReceiver<Command>) {
    let hosts = config.hosts().join(",");
    let mut held: HashMap<i64, Held> = HashMap::new();
    let mut stream: Option<WatchStream> = None;
    loop {
        if stream.is_none() && !held.is_empty() {
            match open(&config, &held).await {
                Ok(s) => stream = Some(s),
                Err(e) => fail_all(&mut held, &format!("{e} (etcd at {hosts})")),
            }
        }
        if held.is_empty() {
            stream = None;
            // Nothing to watch: end, unless a command arrived meanwhile (checked under
            // the map lock, which `watch` holds while sending).
            let mut map = hubs();
            match commands.try_recv() {
                Ok(command) => {
                    drop(map);
                    // No stream is open, so adding cannot break one.
                    apply(command, &mut held, &mut stream).await;
                    continue;
                }
                Err(_) => {
                    if map.get(&config).is_some_and(|(n, _)| *n == number) {
                        map.remove(&config);
                    }
                    return;
                }
            }
        }
        let message = async {
            match stream.as_mut() {
                Some(s) => s.message().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => {
                    if !apply(command, &mut held, &mut stream).await {
                        stream = None;
                        fail_all(&mut held, &format!("the watch stream to etcd at {hosts} broke"));
                    }
                }
                None => return,
            },
            message = message => match message {
                Ok(Some(resp)) => route(resp, &mut held),
                Ok(None) => {
                    stream = None;
                    fail_all(&mut held, &format!("etcd at {hosts} closed the watch stream"));
                }
                Err(e) => {
                    stream = None;
                    fail_all(&mut held, &format!("etcd watch stream from {hosts}: {}", describe(&e)));
                }
            },
        }
    }
}

/// Opens the stream with every held watch on it.
async fn open(config: &EtcdConfig, held: &HashMap<i64, Held>) -> Result<WatchStream, String> {
    let client = shared_client(config).await.map_err(|e| e.to_string())?;
    let mut ids = held.keys().copied();
    let Some(first) = ids.next() else {
        return Err("nothing to watch".into());
    };
    let w = &held[&first];
    let stream = bounded(
        "watch",
        client.watch(watch_prefix(&w.prefix, w.start, first)),
    )
    .await?;
    for id in ids {
        let w = &held[&id];
        stream.watch(watch_prefix(&w.prefix, w.start, id)).await?;
    }
    Ok(stream)
}

/// Applies a command; false if the stream broke on the way.
async fn apply(
    command: Command,
    held: &mut HashMap<i64, Held>,
    stream: &mut Option<WatchStream>,
) -> bool {
    match command {
        Command::Add {
            id,
            prefix,
            start,
            deliver,
        } => {
            let added = match stream.as_mut() {
                Some(s) => s.watch(watch_prefix(&prefix, start, id)).await,
                None => Ok(()),
            };
            held.insert(
                id,
                Held {
                    prefix,
                    start,
                    deliver,
                },
            );
            added.is_ok()
        }
        Command::Remove { id } => {
            if held.remove(&id).is_some()
                && let Some(s) = stream.as_mut()
            {
                return s.cancel(id).await.is_ok();
            }
            true
        }
    }
}

/// Hands a response to its watch; a cancelled or compacted watch is over.
fn route(resp: WatchResponse, held: &mut HashMap<i64, Held>) {
    let id = resp.watch_id;
    let over = resp.canceled || resp.compact_revision > 0;
    if let Some(w) = held.get(&id) {
        let delivered = w.deliver.send(Ok(Box::new(resp))).is_ok();
        if over || !delivered {
            held.remove(&id);
        }
    }
}

/// Tells every watch the stream broke; they are over.
fn fail_all(held: &mut HashMap<i64, Held>, error: &str) {
    for (_, w) in held.drain() {
        let _ = w.deliver.send(Err(error.to_string()));
    }
}
