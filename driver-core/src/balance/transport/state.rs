//! What a connection publishes: its state ([`ConnState`], in a [`StateCell`] with a
//! lock-free ready flag and the handle calls open their streams through) and its
//! traffic ([`Activity`]).
//!
//! Contract: the ready flag, the handle and the published state change together (the
//! flag never says ready without a handle), and every channel watching the connection
//! has the address recorded in its [`ReadyLog`] when the flag changes, after the flag's
//! store, so that a channel keeps its list of ready endpoints without scanning. The connection task
//! (`task`) writes these; the pick, the calls (`connection`) and the liveness sweeper
//! (`sweeper`, `liveness`) read them.
//!
//! Why apart: the hot path reads this on every call; keeping it free of the dialling
//! and pooling code makes what a call touches easy to see.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, Weak};
use std::time::Instant;

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::sync::Notify;

use super::liveness::Probe;
use super::ready_log::ReadyLog;
use super::sweeper;

/// What the connection task says about an address.
#[derive(Clone, Debug)]
pub(crate) enum ConnState {
    /// Nobody asked for it yet: no dial until the first call (lazy).
    Idle,
    /// Dialling, or handshaking.
    Connecting,
    /// Connected; takes requests.
    Ready,
    /// Connected, but the peer left a ping unanswered (a frozen process, a deadlock, a
    /// VM paused): out of rotation, calls already on it stay; `Ready` again when the
    /// ping is answered.
    Unresponsive {
        /// When the unanswered ping was sent.
        since: Instant,
    },
    /// The last dial failed; ejected from rotation until the next try succeeds.
    Failed {
        /// Why, for error messages and the status view.
        error: String,
        /// When the next dial starts.
        retry_at: Instant,
    },
}

impl ConnState {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            ConnState::Idle => "idle",
            ConnState::Connecting => "connecting",
            ConnState::Ready => "ready",
            ConnState::Unresponsive { .. } => "unresponsive",
            ConnState::Failed { .. } => "ejected",
        }
    }
}

/// A connection's published state, with a lock-free "ready" flag for the hot path
/// (the pick reads it for every endpoint on every call).
#[derive(Debug)]
pub(super) struct StateCell {
    /// The address, as the channels' [`ReadyLog`]s record it.
    pub(super) addr: Arc<str>,
    /// The published state. A lock rather than a watch channel: nobody subscribes to
    /// one connection (a waiting call waits on its channel's [`ReadyLog`]), and a
    /// channel's shared state, eight `Notify`s among it, cost 0.4 KB a connection.
    published: RwLock<ConnState>,
    pub(super) ready: AtomicBool,
    /// The ready connection's handle, which calls open their streams through under a
    /// short lock (a clone per call would cost two more locks of the connection).
    pub(super) sender: Mutex<Option<SendRequest<Bytes>>>,
    /// Connections established so far.
    pub(super) connects: AtomicU64,
    /// Counts requests to replace the connection (it refused new streams, or used
    /// up its stream ids); the task serves a connection until the count moves on from
    /// the value it had when the connection was published ([`Self::retired_since`]).
    /// A counter and a `Notify` rather than a watch channel: nothing to allocate for
    /// each of the (often never dialled) connections of a large set.
    retired: AtomicU64,
    retired_wake: Notify,
    /// Streams opened on the current connection.
    pub(super) opened: AtomicU64,
    /// The logs of the channels using this connection, which record the address
    /// whenever the ready flag changes, so that each keeps its list of ready endpoints
    /// without scanning.
    pub(super) watchers: Mutex<Vec<Weak<ReadyLog>>>,
}

impl StateCell {
    pub(super) fn new(addr: Arc<str>) -> Self {
        Self {
            addr,
            published: RwLock::new(ConnState::Idle),
            ready: AtomicBool::new(false),
            sender: Mutex::new(None),
            connects: AtomicU64::new(0),
            retired: AtomicU64::new(0),
            retired_wake: Notify::new(),
            opened: AtomicU64::new(0),
            watchers: Mutex::new(Vec::new()),
        }
    }

    /// Sets the hot path's ready flag and, if it changed, tells the watchers.
    pub(super) fn set_ready_flag(&self, ready: bool) {
        if self.ready.swap(ready, Ordering::AcqRel) != ready {
            let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
            // The flag's store comes first: a watcher that reads the entry reads the
            // new flag.
            watchers.retain(|w| match w.upgrade() {
                Some(log) => {
                    log.record(&self.addr);
                    true
                }
                None => false,
            });
        }
    }

    /// Publishes a state other than `Ready`.
    pub(super) fn set(&self, state: ConnState) {
        self.set_sender(None);
        self.publish_if(|s| {
            *s = state;
            true
        });
    }

    /// Publishes what `modify` makes of the state if it says it changed it (true), and
    /// then wakes the waiting calls of every watching channel ([`Self::announce`]):
    /// every change of the published state goes through here.
    pub(super) fn publish_if(&self, modify: impl FnOnce(&mut ConnState) -> bool) -> bool {
        let changed = modify(&mut self.published.write().unwrap_or_else(|e| e.into_inner()));
        if changed {
            self.announce();
        }
        changed
    }

    /// The published state, read in place (under its lock: keep it short).
    pub(super) fn read(&self) -> RwLockReadGuard<'_, ConnState> {
        self.published.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the calls of every watching channel that wait for a connection's state to
    /// change (after a state is published).
    pub(super) fn announce(&self) {
        let watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        for log in watchers.iter().filter_map(Weak::upgrade) {
            log.announce_state();
        }
    }

    /// Publishes a new connection (and counts it); returns the retire count it
    /// starts from.
    pub(super) fn set_ready(&self, sender: SendRequest<Bytes>) -> u64 {
        self.connects.fetch_add(1, Ordering::Relaxed);
        let generation = self.retired.load(Ordering::Acquire);
        self.opened.store(0, Ordering::Relaxed);
        self.set_sender(Some(sender));
        self.publish_if(|s| {
            *s = ConnState::Ready;
            true
        });
        generation
    }

    /// Asks the task to replace the connection it serves.
    pub(super) fn retire(&self) {
        self.retired.fetch_add(1, Ordering::AcqRel);
        self.retired_wake.notify_waiters();
    }

    /// Returns once the connection published at retire count `generation` is to be
    /// replaced.
    pub(super) async fn retired_since(&self, generation: u64) {
        loop {
            // Registered before the count is read: a retire in between still wakes it.
            let woken = self.retired_wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.retired.load(Ordering::Acquire) != generation {
                return;
            }
            woken.await;
        }
    }

    /// Updates the hot path's view: the sender and the ready flag together.
    pub(super) fn set_sender(&self, sender: Option<SendRequest<Bytes>>) {
        let mut slot = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        self.set_ready_flag(sender.is_some());
        *slot = sender;
    }

    /// Takes a ready connection out of rotation without closing it: its peer left the
    /// ping sent at `since` unanswered. True if it was ready.
    pub(super) fn stall(&self, since: Instant) -> bool {
        // The ready flag changes under the state's lock, as in `retire`.
        self.publish_if(|s| match s {
            ConnState::Ready => {
                *s = ConnState::Unresponsive { since };
                self.set_ready_flag(false);
                true
            }
            _ => false,
        })
    }

    /// Puts an unresponsive connection back in rotation (its peer answered). True if
    /// it was unresponsive and still connected.
    pub(super) fn unstall(&self) -> bool {
        self.publish_if(|s| match s {
            ConnState::Unresponsive { .. } => {
                let sender = self.sender.lock().unwrap_or_else(|e| e.into_inner());
                if sender.is_none() {
                    return false;
                }
                *s = ConnState::Ready;
                self.set_ready_flag(true);
                true
            }
            _ => false,
        })
    }
}

/// What the liveness sweeper and the policies read of a connection's traffic: calls
/// pending, response frames received, pings sent; and the liveness probe of its
/// current connection.
#[derive(Default)]
pub(crate) struct Activity {
    /// Calls in flight on this connection (all channels of the process).
    pub(super) pending: AtomicU32,
    /// Ticks for every response frame received (headers, data, trailers): the
    /// liveness check's evidence that the peer is working.
    progress: AtomicU64,
    /// Set while the liveness sweeper watches the connection (or is told to); see
    /// `sweeper`.
    pub(super) watched: AtomicBool,
    /// The liveness probe of the live connection, if any: set and cleared by the
    /// connection task, checked by the sweeper; never touched by a call.
    pub(super) probe: Mutex<Option<Probe>>,
    /// Liveness pings sent so far.
    probes: AtomicU64,
}

impl std::fmt::Debug for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activity")
            .field("pending", &self.pending())
            .field("progress", &self.progress())
            .field("probes", &self.probes())
            .finish_non_exhaustive()
    }
}

impl Activity {
    /// Counts a call as started on this connection, and has the liveness sweeper
    /// watch the connection if it does not already: O(1), no lock, no task woken.
    pub fn call_started(self: &Arc<Self>) {
        // SeqCst: see `sweeper::keep_watching`.
        self.pending.fetch_add(1, Ordering::SeqCst);
        sweeper::enlist(self);
    }

    /// Counts a call as ended.
    pub fn call_ended(&self) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
    }

    /// Notes a response frame from the peer.
    pub fn note_progress(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    /// Calls in flight now.
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    pub(super) fn count_probe(&self) {
        self.probes.fetch_add(1, Ordering::Relaxed);
    }

    /// Liveness pings sent to this address so far.
    pub fn probes(&self) -> u64 {
        self.probes.load(Ordering::Relaxed)
    }
}
