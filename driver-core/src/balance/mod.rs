//! A discovery channel for tonic: resolver snapshots in, balanced calls out.
//!
//! [`Channel`] is a `tower::Service` that generated tonic clients accept
//! (`GreeterClient::new(channel)`). Behind it:
//!
//! 1. a [`Resolver`] publishes endpoint snapshots for the target;
//! 2. an updater task applies each snapshot as it arrives, traffic or not, diffing it
//!    into per-address connections from a process-wide pool (see `connection`);
//! 3. each call picks a *ready* connection by [`Policy`]; a request that could not be
//!    sent goes to another endpoint, so a dead endpoint never fails a call while a live
//!    one exists;
//! 4. each connection watches that its peer still answers and leaves the rotation while
//!    it does not (see below).
//!
//! What a call sees, by state:
//!
//! | state | call |
//! |---|---|
//! | nothing resolved yet | waits up to [`ChannelBuilder::resolve_timeout`], then `UNAVAILABLE` with the resolver's last error |
//! | resolved, empty set | `UNAVAILABLE` naming the target at once, or waits with [`ChannelBuilder::wait_for_ready`] |
//! | endpoints, none connected yet | waits for the first to connect (bounded by the connect timeout) |
//! | every endpoint failing | `UNAVAILABLE` listing each endpoint's error |
//! | an endpoint stops answering, connection open | out of rotation within about a second, under every policy; back when it answers |
//! | every endpoint unresponsive | waits as for a connecting one (bounded by the connect timeout or the deadline), then `UNAVAILABLE` naming them |
//! | resolver error after a good set | the last set keeps serving |
//!
//! A `grpc-timeout` header (tonic's `Request::set_timeout`) bounds the whole call,
//! waiting included, and fails it with `DEADLINE_EXCEEDED`.
//!
//! # An endpoint that stops answering
//!
//! A frozen process (SIGSTOP, a paused VM, a long GC pause, a deadlock) keeps its TCP
//! connection open, so nothing fails; without help a policy keeps handing it its share
//! and a closed-loop client ends up with every caller parked there. Each connection
//! therefore watches its peer (`liveness`): when calls are pending and no response frame
//! arrived for 200 ms it sends one HTTP/2 ping; unanswered for 500 ms, the endpoint is
//! `unresponsive` in [`Channel::status`] and no policy picks it; the ping's answer puts it
//! back. A slow handler is not mistaken for a frozen process (its server answers the
//! ping), a busy healthy connection never pings, and the pings stay within grpc-go's
//! ping policy (see `liveness` for the rule), so go-zero, kratos and dtm servers with
//! their default settings never answer them with GOAWAY "too_many_pings".
//!
//! Calls already handed to the frozen endpoint stay with it: a request that may have
//! reached a server is never replayed elsewhere, so each ends by its deadline (or by the
//! endpoint answering again). Give calls a deadline: without one, calls on a frozen
//! endpoint wait for it to resume, and under a closed-loop load every caller may reach
//! it in the fraction of a second before it is found. An endpoint removed from the set
//! while frozen keeps such calls until its connection is drained (at most 30 s).
//!
//! # Which policy
//!
//! Round robin stays the default. With the liveness watch it no longer suffers from a
//! frozen instance (the one case where p2c's load-awareness was needed to keep the
//! throughput), it spreads load evenly and predictably, costs less per call (no clock
//! read, no latency bookkeeping), and is what gRPC users expect. Pick
//! [`Policy::PeakEwma`] (go-zero's default) for endpoints of uneven speed: it steers
//! calls away from slow or erroring instances, which round robin does not.
//!
//! Channels are shared: [`connect`] (and [`ChannelBuilder::connect`]) with the same
//! target and settings returns the same channel, so a process holds one registry watch
//! per target however many clients dial it.

mod connection;
mod liveness;
mod replay;
mod tls;
mod transport;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::uri::{Authority, Scheme};
use http_body::Frame;
use tokio::sync::watch;
use tonic::Status;

pub use tls::TlsConnector;

use self::connection::{ConnState, Connection, DialSettings, OpenError};
use self::transport::{Exchange, Pump, RecvBody, ReqBody};
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::resolve::{self, Endpoint, Resolver, ResolverState, SnapshotReceiver, SnapshotSender};
use crate::target::Target;

/// Boxed error of the channel's service; generated clients turn it into a `Status`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a channel spreads calls over ready endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Policy {
    /// Each ready endpoint in turn (the default).
    #[default]
    RoundRobin,
    /// Smooth weighted round robin over the endpoints' [`weight`](Endpoint::weight)s.
    WeightedRoundRobin,
    /// Power of two choices over a peak-EWMA latency estimate times pending calls,
    /// with failed calls counted as slow and a recent failure rate raising the cost;
    /// an endpoint passed over for a second gets one probe call (go-zero's choice).
    PeakEwma,
}

impl std::str::FromStr for Policy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "round_robin" | "rr" => Ok(Self::RoundRobin),
            "weighted_round_robin" | "wrr" => Ok(Self::WeightedRoundRobin),
            "p2c" | "p2c_peak_ewma" | "peak_ewma" => Ok(Self::PeakEwma),
            other => Err(Error::BadTarget {
                target: other.to_string(),
                reason: "unknown balancing policy; use round_robin, weighted_round_robin or p2c"
                    .into(),
            }),
        }
    }
}

/// Builds a [`Channel`]. Every setting has a documented default.
///
/// ```no_run
/// # async fn f() -> Result<(), driver_core::Error> {
/// use std::time::Duration;
/// use driver_core::{Channel, Policy};
/// let channel = Channel::builder("direct:///127.0.0.1:50051,127.0.0.1:50052")
///     .policy(Policy::PeakEwma)
///     .resolve_timeout(Duration::from_secs(2))
///     .connect()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ChannelBuilder {
    target: String,
    resolver: Option<Arc<dyn Resolver>>,
    /// Set by [`driver`](Self::driver): the driver's name and resolver identity.
    driver_name: Option<(String, String)>,
    policy: Policy,
    resolve_timeout: Duration,
    wait_for_ready: bool,
    dial: DialSettings,
}

impl fmt::Debug for ChannelBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBuilder")
            .field("target", &self.target)
            .field("policy", &self.policy)
            .field("resolve_timeout", &self.resolve_timeout)
            .field("wait_for_ready", &self.wait_for_ready)
            .finish_non_exhaustive()
    }
}

impl ChannelBuilder {
    fn new(target: &str) -> Self {
        Self {
            target: target.to_string(),
            resolver: None,
            driver_name: None,
            policy: Policy::default(),
            resolve_timeout: Duration::from_secs(3),
            wait_for_ready: false,
            dial: DialSettings {
                connect_timeout: Duration::from_secs(3),
                backoff_base: Duration::from_millis(100),
                backoff_max: Duration::from_secs(3),
                keepalive: None,
                keepalive_while_idle: false,
                tls: None,
            },
        }
    }

    /// The balancing policy. Default: [`Policy::RoundRobin`].
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// How long a call waits for the first resolution. Default: 3 s. Anything beyond
    /// [`FAR_FUTURE`](crate::duration::FAR_FUTURE) (`Duration::MAX` included) means the
    /// same: no limit in practice.
    pub fn resolve_timeout(mut self, timeout: Duration) -> Self {
        self.resolve_timeout = crate::duration::cap(timeout);
        self
    }

    /// Wait, up to the call's deadline, for an endpoint instead of failing at once
    /// when the set is empty or every endpoint is down (gRPC's wait-for-ready).
    /// Without a deadline the wait is bounded by the resolve timeout. Default: off.
    pub fn wait_for_ready(mut self, on: bool) -> Self {
        self.wait_for_ready = on;
        self
    }

    /// How long one dial (TCP + TLS + HTTP/2 handshake) may take. Default: 3 s. Capped
    /// like [`resolve_timeout`](Self::resolve_timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.dial.connect_timeout = crate::duration::cap(timeout);
        self
    }

    /// The longest wait between redials of a failing endpoint (the backoff starts at
    /// 100 ms and grows 1.6× per failure, ±20% jitter). Default: 3 s.
    pub fn backoff_max(mut self, max: Duration) -> Self {
        self.dial.backoff_max = crate::duration::cap(max);
        self
    }

    /// Sends an HTTP/2 ping every `interval` while calls are in flight and closes the
    /// connection if one goes unanswered for `min(interval, 20 s)`: finds a peer that
    /// vanished without closing its connections (gRPC's client keepalive `Time`).
    /// Default: off, as in grpc-go and tonic; a registry's lease or health check
    /// removes a dead instance anyway.
    ///
    /// grpc-go servers (go-zero, kratos, dtm) accept a ping at most every 5 minutes by
    /// default and close a connection that pings more often with GOAWAY
    /// `ENHANCE_YOUR_CALM` "too_many_pings"; use a shorter interval only with servers
    /// configured to allow it (`keepalive.EnforcementPolicy.MinTime`).
    pub fn keepalive(mut self, interval: Duration) -> Self {
        self.dial.keepalive = Some(crate::duration::cap(interval));
        self
    }

    /// Also ping connections with no call in flight (grpc-go's
    /// `PermitWithoutStream`), so an idle connection to a vanished peer is found
    /// before the next call. Only with [`keepalive`](Self::keepalive); a grpc-go
    /// server closes such connections unless its `EnforcementPolicy` sets
    /// `PermitWithoutStream`. Default: off.
    pub fn keepalive_while_idle(mut self, on: bool) -> Self {
        self.dial.keepalive_while_idle = on;
        self
    }

    /// Dial endpoints with TLS. Default: plaintext (`http`).
    pub fn tls(mut self, tls: TlsConnector) -> Self {
        self.dial.tls = Some(tls);
        self
    }

    /// Resolve with this resolver instead of the one installed for the scheme. Channels
    /// are shared only between builders given the same resolver value.
    pub fn resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolver = Some(resolver);
        self.driver_name = None;
        self
    }

    /// Resolve with `driver`'s resolver for the target's scheme, without installing
    /// anything globally: lets one process use several drivers side by side. Channels
    /// built this way are shared by driver name and
    /// [`resolver_identity`](Driver::resolver_identity), target and settings.
    pub fn driver(self, driver: &dyn Driver) -> Result<Self> {
        let target = Target::parse(&self.target)?;
        if let Some((_, r)) = driver
            .resolvers()
            .into_iter()
            .find(|(s, _)| *s == target.scheme())
        {
            let mut builder = self.resolver(r);
            builder.driver_name = Some((driver.name().to_string(), driver.resolver_identity()));
            return Ok(builder);
        }
        if matches!(
            target.scheme(),
            "direct" | crate::target::PASSTHROUGH_SCHEME
        ) {
            return Ok(self);
        }
        let known: Vec<&str> = driver.resolvers().iter().map(|(s, _)| *s).collect();
        Err(Error::Unsupported {
            driver: driver.name().to_string(),
            what: "resolve",
            target: self.target.clone(),
            reason: format!("it resolves the schemes: {}", known.join(", ")),
        })
    }

    /// Builds the channel, or returns the live channel already built with the same
    /// target and settings. Must run inside a tokio runtime.
    pub fn connect(self) -> Result<Channel> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Unsupported {
                driver: "-".into(),
                what: "connect to",
                target: self.target,
                reason:
                    "no tokio runtime is running; call it from within #[tokio::main] or a runtime"
                        .into(),
            });
        }
        let target = Target::parse(&self.target)?;
        let resolver = match &self.resolver {
            Some(r) => r.clone(),
            None => resolve::resolver_for(&target)?,
        };
        let key = ChannelKey {
            target: self.target.clone(),
            resolver: match &self.driver_name {
                Some((name, identity)) => ResolverKey::Driver(name.clone(), identity.clone()),
                None => ResolverKey::Value(Arc::as_ptr(&resolver) as *const () as usize),
            },
            policy: self.policy,
            resolve_timeout: self.resolve_timeout,
            wait_for_ready: self.wait_for_ready,
            dial: self.dial.clone(),
        };
        let mut channels = CHANNELS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(inner) = channels.get(&key).and_then(Weak::upgrade) {
            return Ok(Channel { inner });
        }
        let (tx, rx) = SnapshotSender::channel();
        resolver.resolve(&target, tx)?;
        let inner = ChannelInner::start(self, rx, resolver);
        channels.retain(|_, w| w.strong_count() > 0);
        channels.insert(key, Arc::downgrade(&inner));
        Ok(Channel { inner })
    }
}

/// Which resolver a shared channel was built with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ResolverKey {
    /// A resolver value (installed for the scheme, or given explicitly); the channel
    /// keeps it alive, so its address cannot be reused while the entry matters.
    Value(usize),
    /// The resolver of the driver with this name and resolver identity.
    Driver(String, String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ChannelKey {
    target: String,
    resolver: ResolverKey,
    policy: Policy,
    resolve_timeout: Duration,
    wait_for_ready: bool,
    dial: DialSettings,
}

static CHANNELS: LazyLock<Mutex<HashMap<ChannelKey, Weak<ChannelInner>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Dials `target` with default settings through the resolver installed for its
/// scheme; the same target gives the same shared channel.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// driver_core::use_driver("default")?;
/// let channel = driver_core::connect("direct:///127.0.0.1:50051")?;
/// // let mut client = GreeterClient::new(channel);
/// # Ok(()) }
/// ```
pub fn connect(target: &str) -> Result<Channel> {
    Channel::builder(target).connect()
}

/// A balanced, discovery-fed channel; cheap to clone. See the [module docs](self).
#[derive(Clone)]
pub struct Channel {
    inner: Arc<ChannelInner>,
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
                        endpoint: s.endpoint.clone(),
                        state: state.label(),
                        error,
                        retry_in_ms,
                        pending: s.conn.load.pending.load(Ordering::Relaxed),
                        connects: s.conn.connects(),
                        rtt_ms: s
                            .conn
                            .load
                            .sampled()
                            .then(|| s.conn.load.rtt_estimate().as_secs_f64() * 1000.0),
                        probes: s.conn.load.probes(),
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

struct Slot {
    endpoint: Endpoint,
    /// The endpoint's address parsed once for request URIs; `None` if it is not a
    /// valid authority (calls picking it then fail `INTERNAL` saying so).
    authority: Option<Authority>,
    conn: Arc<Connection>,
    /// Smooth-WRR running weight.
    wrr_current: AtomicI64,
}

struct Table {
    resolved: bool,
    last_error: Option<String>,
    slots: Vec<Arc<Slot>>,
}

struct ChannelInner {
    target: String,
    policy: Policy,
    resolve_timeout: Duration,
    wait_for_ready: bool,
    dial: DialSettings,
    authority_scheme: Scheme,
    /// The endpoint set in service; read on every call without a lock.
    table: ArcSwap<Table>,
    table_tx: watch::Sender<u64>,
    snapshots: SnapshotReceiver,
    active: std::sync::atomic::AtomicBool,
    rr: AtomicUsize,
    wrr_lock: Mutex<()>,
    updater: std::sync::OnceLock<tokio::task::AbortHandle>,
    /// Held so the resolver value (and its address, part of the sharing key) lives as
    /// long as the channel.
    _resolver: Arc<dyn Resolver>,
}

impl Drop for ChannelInner {
    fn drop(&mut self) {
        if let Some(updater) = self.updater.get() {
            updater.abort();
        }
    }
}

impl ChannelInner {
    fn start(
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
            dial: b.dial,
            authority_scheme,
            table: ArcSwap::from_pointee(Table {
                resolved: false,
                last_error: None,
                slots: Vec::new(),
            }),
            table_tx: watch::channel(0).0,
            snapshots: snapshots.clone(),
            active: std::sync::atomic::AtomicBool::new(false),
            rr: AtomicUsize::new(0),
            wrr_lock: Mutex::new(()),
            updater: std::sync::OnceLock::new(),
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

    fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Applies a resolver snapshot: diff into slots, reuse connections by address.
    fn apply(&self, state: &ResolverState) {
        let old = self.table();
        let Some(endpoints) = &state.endpoints else {
            if state.last_error != old.last_error {
                self.publish(Table {
                    resolved: false,
                    last_error: state.last_error.clone(),
                    slots: Vec::new(),
                });
            }
            return;
        };
        let mut slots = Vec::with_capacity(endpoints.len());
        for ep in endpoints.iter() {
            let existing = old.slots.iter().find(|s| s.endpoint.addr == ep.addr);
            let slot = match existing {
                Some(s) if s.endpoint == *ep => s.clone(),
                Some(s) => Arc::new(Slot {
                    endpoint: ep.clone(),
                    authority: s.authority.clone(),
                    conn: s.conn.clone(),
                    wrr_current: AtomicI64::new(0),
                }),
                None => {
                    tracing::info!(target = %self.target, addr = %ep.addr, weight = ep.weight, "endpoint added");
                    Arc::new(Slot {
                        endpoint: ep.clone(),
                        authority: ep.addr.parse().ok(),
                        conn: Connection::pooled(&ep.addr, &self.dial),
                        wrr_current: AtomicI64::new(0),
                    })
                }
            };
            slots.push(slot);
        }
        for gone in old
            .slots
            .iter()
            .filter(|s| !endpoints.iter().any(|e| e.addr == s.endpoint.addr))
        {
            tracing::info!(target = %self.target, addr = %gone.endpoint.addr, "endpoint removed");
        }
        if let Some(err) = &state.last_error {
            tracing::warn!(target = %self.target, error = %err, endpoints = slots.len(),
                "resolver error; keeping the last endpoint set");
        }
        self.publish(Table {
            resolved: true,
            last_error: state.last_error.clone(),
            slots,
        });
        // Dial new endpoints now if the channel is in use, so changes apply without
        // traffic; an unused channel stays lazy.
        if self.active.load(Ordering::SeqCst) {
            self.start_all();
        }
    }

    fn publish(&self, table: Table) {
        self.table.store(Arc::new(table));
        self.table_tx.send_modify(|v| *v += 1);
    }

    /// Starts dialling every endpoint (once; the first call does it).
    fn activate(&self) {
        // SeqCst pairs with `apply`: one of the two sees the other's write, so no slot
        // of an active channel stays undialled.
        if !self.active.load(Ordering::Relaxed) && !self.active.swap(true, Ordering::SeqCst) {
            self.start_all();
        }
    }

    fn start_all(&self) {
        for s in &self.table().slots {
            s.conn.start();
        }
    }

    /// Picks a ready endpoint, waiting as the [module docs](self) describe.
    async fn pick(&self, deadline: Option<Instant>) -> Result<Arc<Slot>, Status> {
        self.activate();
        // The common case: resolved, something ready. No subscriptions, no waiting.
        {
            let table = self.table.load();
            if table.resolved
                && let Some(slot) = self.choose(&table)
            {
                return Ok(slot);
            }
        }
        // Boxed: the waiting machinery would otherwise bloat every call's future.
        Box::pin(self.wait_and_pick(deadline)).await
    }

    /// The slow path of [`pick`](Self::pick): waits for the first resolution, for a
    /// connection to come up, or (wait-for-ready) for an endpoint to appear.
    async fn wait_and_pick(&self, deadline: Option<Instant>) -> Result<Arc<Slot>, Status> {
        let started = Instant::now();
        let resolve_deadline = started + self.resolve_timeout;
        let mut table_rx = self.table_tx.subscribe();
        // Every pass either returns or waits for a change with a deadline, and the
        // deadlines are finite, so this loop ends.
        loop {
            // Mark what we have seen *before* reading it, so a change in between wakes
            // the wait below instead of being lost.
            table_rx.borrow_and_update();
            let table = self.table();
            if !table.resolved {
                let until = min_deadline(Some(resolve_deadline), deadline);
                if !wait_until(&mut table_rx, until, None).await {
                    return Err(self.gave_up(deadline, &self.unresolved_status(started)));
                }
                continue;
            }
            // Slots published after `activate` ran were built idle: start them here.
            for s in &table.slots {
                s.conn.start();
            }
            let mut conn_rxs: Vec<_> = table.slots.iter().map(|s| s.conn.subscribe()).collect();
            if let Some(slot) = self.choose(&table) {
                return Ok(slot);
            }
            let (pending, failures) = summarize(&table);
            let fail_now = table.slots.is_empty() || pending.is_empty();
            if fail_now && !self.wait_for_ready {
                return Err(no_endpoint_status(&self.target, &table, &failures));
            }
            // Wait for a connection to change state or the set to change.
            let until = if self.wait_for_ready {
                deadline.or(Some(started + self.resolve_timeout))
            } else {
                min_deadline(
                    Some(started + self.dial.connect_timeout + Duration::from_millis(50)),
                    deadline,
                )
            };
            if !wait_until(&mut table_rx, until, Some(&mut conn_rxs)).await {
                let table = self.table();
                let (_, failures) = summarize(&table);
                let status = no_endpoint_status(&self.target, &table, &failures);
                return Err(self.gave_up(deadline, &status));
            }
        }
    }

    /// Why a call found no resolution in time, with the resolver's newest error.
    fn unresolved_status(&self, started: Instant) -> Status {
        let table = self.table();
        Status::unavailable(format!(
            "target `{}`: no endpoints resolved within {} ms: {}",
            self.target,
            started.elapsed().as_millis(),
            table
                .last_error
                .as_deref()
                .unwrap_or("the resolver has not answered yet")
        ))
    }

    /// The status of a wait that ran out: `DEADLINE_EXCEEDED` if the call's own
    /// deadline ended it (as gRPC reports it), else `unavailable`.
    fn gave_up(&self, deadline: Option<Instant>, unavailable: &Status) -> Status {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            Status::deadline_exceeded(format!(
                "deadline exceeded while waiting for an endpoint: {}",
                unavailable.message()
            ))
        } else {
            unavailable.clone()
        }
    }

    /// Picks one ready slot by the channel's policy, without allocating.
    fn choose(&self, table: &Table) -> Option<Arc<Slot>> {
        let ready = || table.slots.iter().filter(|s| s.conn.is_ready());
        let n = ready().count();
        let chosen = match n {
            0 => return None,
            1 => ready().next(),
            n => match self.policy {
                Policy::RoundRobin => ready().nth(self.rr.fetch_add(1, Ordering::Relaxed) % n),
                Policy::WeightedRoundRobin => self.choose_weighted(ready()),
                Policy::PeakEwma => {
                    let a = rand::random_range(0..n);
                    let mut b = rand::random_range(0..n - 1);
                    if b >= a {
                        b += 1;
                    }
                    match (ready().nth(a), ready().nth(b)) {
                        (Some(x), Some(y)) => Some(choose_cheaper(x, y)),
                        (x, y) => x.or(y),
                    }
                }
            },
        };
        // A connection may drop between counting and choosing: take any ready one.
        chosen.or_else(|| ready().next()).cloned()
    }

    /// Smooth weighted round robin (nginx's): every slot gains its weight, the
    /// richest is chosen and pays the total.
    fn choose_weighted<'a>(
        &self,
        ready: impl Iterator<Item = &'a Arc<Slot>>,
    ) -> Option<&'a Arc<Slot>> {
        let _guard = self.wrr_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = 0i64;
        let mut best: Option<(&Arc<Slot>, i64)> = None;
        for s in ready {
            let weight = i64::from(s.endpoint.weight);
            total += weight;
            let cur = s.wrr_current.fetch_add(weight, Ordering::Relaxed) + weight;
            if best.is_none_or(|(_, b)| cur > b) {
                best = Some((s, cur));
            }
        }
        let (best, _) = best?;
        best.wrr_current.fetch_sub(total, Ordering::Relaxed);
        Some(best)
    }

    async fn dispatch(
        self: Arc<Self>,
        req: http::Request<tonic::body::Body>,
        deadline: Option<Instant>,
    ) -> Result<http::Response<tonic::body::Body>, Status> {
        let (mut head, body) = req.into_parts();
        transport::strip_connection_headers(&mut head.headers);
        let mut body = ReqBody::Caller(body);
        // Each failed attempt ejects one endpoint until it redials, so the attempts
        // are bounded by the endpoints plus a few for races with redialling.
        let mut max_attempts = usize::MAX;
        let mut last_error = String::new();
        let mut attempt = 0;
        while attempt < max_attempts {
            if attempt == 1 {
                // Only a retry pays for reading the set size.
                max_attempts = self.table().slots.len() + 3;
            }
            attempt += 1;
            let slot = self.pick(deadline).await?;
            set_origin(&mut head.uri, &self.authority_scheme, &slot)?;
            let (mut response, stream) = match slot.conn.open(&head).await {
                Ok(opened) => opened,
                // It went down since the pick: pick again.
                Err(OpenError::NotReady) => continue,
                Err(OpenError::Refused(e)) => {
                    // Never sent: safe to try another endpoint.
                    let error = e.to_string();
                    tracing::debug!(addr = %slot.endpoint.addr, error = %error, "connection refused the request, trying another endpoint");
                    slot.conn.retire(&error);
                    last_error = format!("{}: {error}", slot.endpoint.addr);
                    continue;
                }
                Err(OpenError::Rejected(e)) => {
                    return Err(Status::internal(format!(
                        "target `{}`: HTTP/2 cannot carry this request: {e}",
                        self.target
                    )));
                }
            };
            let guard = CallGuard::new(slot.conn.clone(), self.policy == Policy::PeakEwma);
            let mut pump = Pump::new(body, stream);
            match transport::exchange(&mut response, &mut pump).await {
                Ok(resp) => {
                    slot.conn.load.note_progress();
                    if !pump.is_done() {
                        pump.spawn_rest();
                    }
                    let (parts, stream) = resp.into_parts();
                    let failed = grpc_failed(&parts.headers);
                    let body = ObservedBody {
                        inner: RecvBody::new(stream),
                        guard: Some(guard),
                        failed,
                    };
                    return Ok(http::Response::from_parts(
                        parts,
                        tonic::body::Body::new(body),
                    ));
                }
                Err(Exchange::BodyFailed(status)) => {
                    guard.finish(false);
                    return Err(status);
                }
                Err(Exchange::Stream(e)) => {
                    let error = e.to_string();
                    match (replay::refusal(&e), pump.replayable()) {
                        (Some(refusal), Some(again)) => {
                            // Refused unprocessed: safe to send again elsewhere.
                            tracing::debug!(addr = %slot.endpoint.addr, error = %error, "request refused, retrying on another endpoint");
                            if refusal == replay::Refusal::GoingAway {
                                slot.conn.retire(&error);
                            }
                            guard.finish(false);
                            last_error = format!("{}: {error}", slot.endpoint.addr);
                            body = again;
                        }
                        _ => {
                            guard.finish(true);
                            return Err(Status::unavailable(format!(
                                "target `{}`: call to {} failed: {error}",
                                self.target, slot.endpoint.addr
                            )));
                        }
                    }
                }
            }
        }
        Err(Status::unavailable(format!(
            "target `{}`: no endpoint took the request after {max_attempts} attempts; last error: {last_error}",
            self.target
        )))
    }
}

/// Peak-EWMA's choice of two: the cheaper one, unless the other was passed over long
/// enough to be owed a probe.
fn choose_cheaper<'a>(x: &'a Arc<Slot>, y: &'a Arc<Slot>) -> &'a Arc<Slot> {
    let (cheap, dear) = if y.conn.load.cost() < x.conn.load.cost() {
        (y, x)
    } else {
        (x, y)
    };
    if dear.conn.load.claim_forced_pick() {
        return dear;
    }
    cheap.conn.load.mark_picked();
    cheap
}

fn summarize(table: &Table) -> (Vec<String>, Vec<String>) {
    let mut pending = Vec::new();
    let mut failures = Vec::new();
    for s in &table.slots {
        match s.conn.state() {
            ConnState::Failed { error, .. } => {
                failures.push(format!("{}: {error}", s.endpoint.addr))
            }
            // Worth waiting for (it answers again, or another endpoint takes over),
            // and worth naming if nothing else turns up.
            ConnState::Unresponsive { since } => {
                failures.push(format!(
                    "{}: {}",
                    s.endpoint.addr,
                    unresponsive_error(since)
                ));
                pending.push(s.endpoint.addr.clone());
            }
            _ => pending.push(s.endpoint.addr.clone()),
        }
    }
    (pending, failures)
}

fn unresponsive_error(since: Instant) -> String {
    format!(
        "not answering: a ping sent {} ms ago is unanswered (the process may be frozen)",
        since.elapsed().as_millis()
    )
}

fn no_endpoint_status(target: &str, table: &Table, failures: &[String]) -> Status {
    if table.slots.is_empty() {
        let cause = match &table.last_error {
            Some(e) => format!("; the resolver also reports: {e}"),
            None => String::new(),
        };
        Status::unavailable(format!(
            "target `{target}` resolved to no endpoints: nothing is registered under it{cause} \
             (inspect it with `dtmdriver resolve {target}`)"
        ))
    } else if failures.is_empty() {
        Status::unavailable(format!(
            "target `{target}`: none of its {} endpoints connected in time",
            table.slots.len()
        ))
    } else {
        Status::unavailable(format!(
            "target `{target}`: all {} endpoints are unreachable: {}",
            table.slots.len(),
            failures.join("; ")
        ))
    }
}

fn min_deadline(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Waits for a table change or any connection change until `until`; false on timeout.
async fn wait_until(
    table_rx: &mut watch::Receiver<u64>,
    until: Option<Instant>,
    conns: Option<&mut Vec<watch::Receiver<ConnState>>>,
) -> bool {
    let any_change = async {
        let mut futs: FuturesUnordered<_> =
            conns.into_iter().flatten().map(|rx| rx.changed()).collect();
        tokio::select! {
            r = table_rx.changed() => r.is_ok(),
            Some(r) = futs.next() => r.is_ok(),
        }
    };
    let Some(until) = until else {
        return any_change.await;
    };
    tokio::time::timeout_at(until.into(), any_change)
        .await
        .unwrap_or_default()
}

fn set_origin(uri: &mut http::Uri, scheme: &Scheme, slot: &Slot) -> Result<(), Status> {
    let Some(authority) = slot.authority.clone() else {
        return Err(Status::internal(format!(
            "endpoint address `{}` is not a valid host:port authority; fix the registry entry",
            slot.endpoint.addr
        )));
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.scheme = Some(scheme.clone());
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *uri = http::Uri::from_parts(parts)
        .map_err(|e| Status::internal(format!("cannot build request URI: {e}")))?;
    Ok(())
}

// Header names as constants: a lookup by `&str` parses the name on every call.
static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
static GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// True if headers (or trailers) carry a grpc-status that speaks of the endpoint's
/// health rather than the request: DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
/// UNAVAILABLE, DATA_LOSS (go-zero's choice). A NOT_FOUND is the caller's business
/// and must not steer traffic away.
fn grpc_failed(headers: &http::HeaderMap) -> bool {
    headers
        .get(&GRPC_STATUS)
        .is_some_and(|v| matches!(v.as_bytes(), b"4" | b"12" | b"13" | b"14" | b"15"))
}

/// Parses gRPC's `grpc-timeout` header: up to 8 digits and a unit (H M S m u n).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get(&GRPC_TIMEOUT)?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Counts a call as pending on its connection and, for peak-EWMA, records its
/// latency when it ends.
struct CallGuard {
    conn: Arc<Connection>,
    /// When the call started, if its latency is recorded.
    start: Option<Instant>,
    done: bool,
}

impl CallGuard {
    fn new(conn: Arc<Connection>, timed: bool) -> Self {
        conn.load.call_started();
        Self {
            conn,
            start: timed.then(Instant::now),
            done: false,
        }
    }

    fn finish(mut self, failed: bool) {
        self.record(failed);
    }

    fn record(&mut self, failed: bool) {
        if !self.done {
            self.done = true;
            self.conn.load.call_ended();
            if let Some(start) = self.start {
                self.conn.load.record(start.elapsed(), failed);
            }
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.record(false);
    }
}

/// The response body, watched for the end of the call and its grpc-status.
struct ObservedBody {
    inner: RecvBody,
    guard: Option<CallGuard>,
    failed: bool,
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(g) = &this.guard {
                    g.conn.load.note_progress();
                }
                if let Some(trailers) = frame.trailers_ref() {
                    this.failed |= grpc_failed(trailers);
                }
            }
            Poll::Ready(Some(Err(_))) => this.failed = true,
            Poll::Ready(None) => {}
            Poll::Pending => return Poll::Pending,
        }
        let ended = matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_))))
            || this.inner.is_end_stream();
        if ended && let Some(g) = this.guard.take() {
            g.finish(this.failed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        if let Some(g) = self.guard.take() {
            g.finish(self.failed);
        }
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is decided per call, after the pick; a channel always accepts.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            req.headers_mut().insert(
                http::header::USER_AGENT,
                http::HeaderValue::from_static(concat!("dtmdriver-rs/", env!("CARGO_PKG_VERSION"))),
            );
            let timeout = grpc_timeout(req.headers());
            let deadline = timeout.map(|t| crate::duration::deadline_after(Instant::now(), t));
            let result = match deadline {
                None => inner.dispatch(req, None).await,
                Some(d) => {
                    let target = inner.target.clone();
                    match tokio::time::timeout_at(d.into(), inner.dispatch(req, deadline)).await {
                        Ok(r) => r,
                        Err(_) => Err(Status::deadline_exceeded(format!(
                            "target `{target}`: deadline of {} ms exceeded",
                            timeout.unwrap_or_default().as_millis()
                        ))),
                    }
                }
            };
            result.map_err(|s| Box::new(s) as BoxError)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_health_codes_count_as_failures() {
        let mut h = http::HeaderMap::new();
        assert!(!grpc_failed(&h));
        for (code, failed) in [
            ("0", false),
            ("5", false),
            ("3", false),
            ("13", true),
            ("14", true),
            ("4", true),
        ] {
            h.insert("grpc-status", code.parse().unwrap());
            assert_eq!(grpc_failed(&h), failed, "{code}");
        }
    }

    #[test]
    fn grpc_timeout_units() {
        let mut h = http::HeaderMap::new();
        for (v, d) in [
            ("5S", Duration::from_secs(5)),
            ("100m", Duration::from_millis(100)),
            ("2M", Duration::from_secs(120)),
            ("1H", Duration::from_secs(3600)),
            ("7u", Duration::from_micros(7)),
            ("9n", Duration::from_nanos(9)),
        ] {
            h.insert("grpc-timeout", v.parse().unwrap());
            assert_eq!(grpc_timeout(&h), Some(d), "{v}");
        }
        for bad in ["S", "5", "123456789S", "5x"] {
            h.insert("grpc-timeout", bad.parse().unwrap());
            assert_eq!(grpc_timeout(&h), None, "{bad}");
        }
    }
}
