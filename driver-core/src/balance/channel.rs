//! [`Channel`]: the shared handle generated clients call through, its status view, and
//! the updater task that applies every resolver snapshot as it arrives.
//!
//! Contract: a snapshot is applied whether or not calls are made (an idle channel
//! follows its target too); the channel's last clone going away stops the updater and
//! with it the resolver's watch; [`Channel::status`] shows the set in service and each
//! endpoint's connection state.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::uri::Scheme;
use tokio::sync::watch;

use super::builder::ChannelBuilder;
use super::gate::unresponsive_error;
use super::policy::Policy;
use super::table::{Index, Table};
use super::transport::connection::{ConnState, DialSettings};
use super::transport::ready_log::ReadyLog;
use crate::resolve::{Endpoint, Resolver, SnapshotReceiver};

/// A balanced, discovery-fed channel; cheap to clone. See the [module docs](super).
#[derive(Clone)]
pub struct Channel {
    pub(super) inner: Arc<ChannelInner>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("target", &self.inner.target)
            .finish_non_exhaustive()
    }
}

/// One endpoint of a channel and its connection's state, as shown by [`Channel::status`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct EndpointStatus {
    /// The endpoint as resolved.
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// `idle`, `connecting`, `ready`, `unresponsive` (connected, but its peer left a
    /// ping unanswered: out of rotation until it answers) or `ejected`.
    pub state: &'static str,
    /// Why the endpoint is ejected or unresponsive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When an ejected endpoint is dialled again, in milliseconds from now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
    /// Calls in flight on this address (all channels of the process).
    pub pending: u32,
    /// Connections established to this address so far: 1 + reconnects.
    pub connects: u64,
    /// The peak-EWMA latency estimate in milliseconds, from the calls of channels
    /// with [`Policy::PeakEwma`] (the other policies do not time calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// HTTP/2 pings sent to this address to check that it still answers (after a
    /// silence with calls pending, or by keepalive); all channels of the process.
    #[serde(skip_serializing_if = "is_zero")]
    pub probes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A channel's view of its target, as shown by [`Channel::status`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct ChannelStatus {
    /// The target as dialled.
    pub target: String,
    /// False until the resolver produced its first set.
    pub resolved: bool,
    /// The resolver's newest error, if the newest news was an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolver_error: Option<String>,
    /// The endpoints in service.
    pub endpoints: Vec<EndpointStatus>,
}

impl Channel {
    /// A builder for `target`.
    pub fn builder(target: &str) -> ChannelBuilder {
        ChannelBuilder::new(target)
    }

    /// The target this channel dials, with its secrets
    /// [redacted](crate::target::redact): fit to show.
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// The endpoint set in service and each endpoint's connection state.
    pub fn status(&self) -> ChannelStatus {
        let table = self.inner.table();
        ChannelStatus {
            target: self.inner.target.clone(),
            resolved: table.resolved,
            resolver_error: table.last_error.clone(),
            endpoints: table
                .slots
                .iter()
                .map(|s| {
                    let state = s.conn.state();
                    let (error, retry_in_ms) = match &state {
                        ConnState::Failed { error, retry_at } => (
                            Some(error.clone()),
                            Some(
                                retry_at
                                    .saturating_duration_since(Instant::now())
                                    .as_millis() as u64,
                            ),
                        ),
                        ConnState::Unresponsive { since } => {
                            (Some(unresponsive_error(*since)), None)
                        }
                        _ => (None, None),
                    };
                    EndpointStatus {
                        endpoint: (*s.endpoint).clone(),
                        state: state.label(),
                        error,
                        retry_in_ms,
                        pending: s.conn.activity.pending(),
                        connects: s.conn.connects(),
                        rtt_ms: s
                            .conn
                            .load
                            .sampled()
                            .then(|| s.conn.load.rtt_estimate().as_secs_f64() * 1000.0),
                        probes: s.conn.activity.probes(),
                    }
                })
                .collect(),
        }
    }

    /// A counter that ticks whenever the endpoint set or the resolver's news changes;
    /// hold it and await `changed()` to follow the channel (as
    /// `dtmdriver resolve --watch` does), reading [`status`](Self::status) after each tick.
    pub fn updates(&self) -> watch::Receiver<u64> {
        self.inner.table_tx.subscribe()
    }

    /// The resolver's snapshots as they arrive, for observers.
    pub fn snapshots(&self) -> SnapshotReceiver {
        self.inner.snapshots.clone()
    }

    /// Dials every endpoint now instead of at the first call.
    pub fn warm_up(&self) {
        self.inner.activate();
    }
}

pub(super) struct ChannelInner {
    pub(super) target: String,
    pub(super) policy: Policy,
    pub(super) resolve_timeout: Duration,
    pub(super) wait_for_ready: bool,
    pub(super) dial: Arc<DialSettings>,
    pub(super) authority_scheme: Scheme,
    /// The endpoint set in service; read on every call without a lock.
    pub(super) table: ArcSwap<Table>,
    pub(super) table_tx: watch::Sender<u64>,
    pub(super) snapshots: SnapshotReceiver,
    pub(super) active: AtomicBool,
    pub(super) rr: AtomicUsize,
    /// Where weighted round robin over equal weights continues.
    pub(super) wrr_cursor: AtomicUsize,
    /// Where every connection of the channel records its address when it enters or
    /// leaves the rotation; the table's list of ready slots follows it.
    pub(super) ready_log: Arc<ReadyLog>,
    /// The slots by address, for the updater's diffs.
    pub(super) index: Mutex<Index>,
    pub(super) updater: OnceLock<tokio::task::AbortHandle>,
    /// Held so the resolver value (and its address, part of the sharing key) lives as
    /// long as the channel.
    pub(super) _resolver: Arc<dyn Resolver>,
}

impl Drop for ChannelInner {
    fn drop(&mut self) {
        if let Some(updater) = self.updater.get() {
            updater.abort();
        }
    }
}

impl ChannelInner {
    pub(super) fn start(
        b: ChannelBuilder,
        snapshots: SnapshotReceiver,
        resolver: Arc<dyn Resolver>,
    ) -> Arc<Self> {
        let authority_scheme = if b.dial.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let inner = Arc::new(ChannelInner {
            // Shown in statuses, errors and logs: never with its secrets.
            target: crate::target::redact(&b.target),
            policy: b.policy,
            resolve_timeout: b.resolve_timeout,
            wait_for_ready: b.wait_for_ready,
            dial: Arc::new(b.dial),
            authority_scheme,
            table: ArcSwap::from_pointee(Table::new(false, None, Default::default())),
            table_tx: watch::channel(0).0,
            snapshots: snapshots.clone(),
            active: AtomicBool::new(false),
            rr: AtomicUsize::new(0),
            wrr_cursor: AtomicUsize::new(0),
            ready_log: Arc::default(),
            index: Mutex::new(Index::default()),
            updater: OnceLock::new(),
            _resolver: resolver,
        });
        // The updater holds only a weak reference: the channel's last clone going away
        // stops it (Drop aborts it), which drops the receiver and stops the resolver.
        let weak = Arc::downgrade(&inner);
        let mut rx = snapshots;
        let updater = tokio::spawn(async move {
            loop {
                let state = rx.borrow_and_update().clone();
                match weak.upgrade() {
                    Some(inner) => inner.apply(&state),
                    None => return,
                }
                if rx.changed().await.is_err() {
                    return; // the resolver is gone; keep the last set
                }
            }
        });
        let _ = inner.updater.set(updater.abort_handle());
        inner
    }

    pub(super) fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    pub(super) fn publish(&self, table: Table) {
        self.table.store(Arc::new(table));
        self.table_tx.send_modify(|v| *v += 1);
    }

    /// Starts dialling every endpoint (once; the first call does it).
    pub(super) fn activate(&self) {
        // SeqCst pairs with `apply`: one of the two sees the other's write, so no slot
        // of an active channel stays undialled.
        if !self.active.load(Ordering::Relaxed) && !self.active.swap(true, Ordering::SeqCst) {
            self.start_all();
        }
    }

    pub(super) fn start_all(&self) {
        for s in &self.table().slots {
            s.conn.start();
        }
    }
}

/// A channel of `policy` that resolves nothing by itself: tests apply snapshots to it
/// and pick from it directly (nothing is dialled until something calls `activate`).
#[cfg(test)]
pub(super) fn test_channel(policy: Policy) -> Arc<ChannelInner> {
    let (_tx, rx) = crate::resolve::SnapshotSender::channel();
    ChannelInner::start(
        ChannelBuilder::new("direct:///127.0.0.1:1").policy(policy),
        rx,
        Arc::new(crate::resolve::DirectResolver),
    )
}
