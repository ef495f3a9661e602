//! One HTTP/2 connection per endpoint address, kept up by its own task.
//!
//! The balancer needs to know, *before* it hands a request over, whether an endpoint
//! can take it. tonic's lazy channels only find out inside the call, so this module
//! owns the connection: a task dials, performs the HTTP/2 handshake and publishes the
//! state (`Connecting`, `Ready`, `Failed` with the error and the time of the next try).
//! When the connection drops the task dials again, with exponential backoff after a
//! failure. Connections live in a process-wide pool keyed by address, so two targets
//! resolving to the same address share one connection; the task stops when the last
//! user is gone, and in-flight calls finish on the old connection.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::tls::TlsConnector;

/// How long a dropped connection may keep serving its in-flight calls.
const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// What the connection task says about an address.
#[derive(Clone, Debug)]
pub(crate) enum ConnState {
    /// Nobody asked for it yet: no dial until the first call (lazy).
    Idle,
    /// Dialling, or handshaking.
    Connecting,
    /// Connected; requests go through this sender.
    Ready(SendRequest<tonic::body::Body>),
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
            ConnState::Ready(_) => "ready",
            ConnState::Failed { .. } => "ejected",
        }
    }
}

/// A connection's published state, with a lock-free "ready" flag for the hot path
/// (the pick reads it for every endpoint on every call).
#[derive(Debug)]
struct StateCell {
    tx: watch::Sender<ConnState>,
    ready: AtomicBool,
    /// The ready connection's sender, which calls send through under a short lock.
    /// Cloning it out of `tx` instead would cost every call a read lock and six
    /// reference-count updates on lines all cores share.
    sender: Mutex<Option<SendRequest<tonic::body::Body>>>,
    /// Connections established so far.
    connects: AtomicU64,
}

impl StateCell {
    fn new() -> Self {
        Self {
            tx: watch::channel(ConnState::Idle).0,
            ready: AtomicBool::new(false),
            sender: Mutex::new(None),
            connects: AtomicU64::new(0),
        }
    }

    fn set(&self, state: ConnState) {
        self.set_sender(match &state {
            ConnState::Ready(sender) => Some(sender.clone()),
            _ => None,
        });
        self.tx.send_replace(state);
    }

    /// Updates the hot path's view: the sender and the ready flag together.
    fn set_sender(&self, sender: Option<SendRequest<tonic::body::Body>>) {
        let mut slot = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        self.ready.store(sender.is_some(), Ordering::Release);
        *slot = sender;
    }
}

/// What sending a request on a connection ends with: the response, or the error
/// and, if the connection closed before taking it, the request.
pub(crate) type SendResult = Result<
    http::Response<hyper::body::Incoming>,
    hyper::client::conn::TrySendError<http::Request<tonic::body::Body>>,
>;

/// Settings that decide how an address is dialled; part of the pool key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct DialSettings {
    pub connect_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Ping interval while calls are in flight; `None`: no pings.
    pub keepalive: Option<Duration>,
    /// Ping idle connections too.
    pub keepalive_while_idle: bool,
    pub tls: Option<TlsConnector>,
}

/// Live load numbers of one connection, read by the peak-EWMA policy.
#[derive(Debug)]
pub(crate) struct Load {
    pub pending: AtomicU32,
    /// Peak-EWMA round-trip estimate in nanoseconds, as `f64` bits.
    rtt_ns: AtomicU64,
    /// When `rtt_ns` was last updated, in nanoseconds since `epoch`; 0 until the
    /// first sample, which replaces the default outright.
    updated_ns: AtomicU64,
    /// When the policy last picked this connection, in nanoseconds since `epoch`.
    picked_ns: AtomicU64,
    /// Share of recent calls that failed, an EWMA over calls, as `f64` bits.
    failure_rate: AtomicU64,
    epoch: Instant,
}

/// Time constant of the EWMA: how fast the estimate follows new samples, and how fast
/// it decays towards zero while no samples arrive.
const DECAY: Duration = Duration::from_secs(10);
/// The estimate a fresh endpoint starts with, until its first call returns.
const DEFAULT_RTT: Duration = Duration::from_millis(10);
/// The round-trip time an error counts as, so an endpoint that fails fast is not
/// mistaken for a fast one.
const ERROR_PENALTY: Duration = Duration::from_secs(1);
/// An endpoint the policy passed over this long gets one call anyway (go-zero's
/// "force pick"), so an estimate made bad by errors or a slow spell is refreshed.
const FORCE_PICK: Duration = Duration::from_secs(1);
/// The least weight one sample has in the estimate, however close it follows the last.
const MIN_SAMPLE_WEIGHT: f64 = 0.05;
/// Weight of the newest call in the failure rate: a few failures in a row are enough.
const FAILURE_ALPHA: f64 = 0.25;
/// How much a failure rate of 1 multiplies the cost. Latency alone cannot tell a
/// failing endpoint from a busy one when every estimate is high (a loaded host); the
/// rate can.
const FAILURE_COST: f64 = 1000.0;

impl Load {
    fn new() -> Self {
        Self {
            pending: AtomicU32::new(0),
            rtt_ns: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            updated_ns: AtomicU64::new(0),
            picked_ns: AtomicU64::new(0),
            failure_rate: AtomicU64::new(0f64.to_bits()),
            epoch: Instant::now(),
        }
    }

    fn now_ns(&self) -> u64 {
        // Offset by one so that 0 always means "never".
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_nanos() as u64
            + 1
    }

    /// The stored estimate, the decay weight `e^(-elapsed/DECAY)` since it was set,
    /// and whether any sample was recorded yet.
    fn stored(&self, now_ns: u64) -> (f64, f64, bool) {
        let rtt = f64::from_bits(self.rtt_ns.load(Ordering::Relaxed));
        let updated = self.updated_ns.load(Ordering::Relaxed);
        if updated == 0 {
            return (rtt, 1.0, false); // the default does not decay
        }
        let elapsed = now_ns.saturating_sub(updated) as f64;
        (rtt, (-elapsed / DECAY.as_nanos() as f64).exp(), true)
    }

    /// Whether any call was timed yet.
    pub fn sampled(&self) -> bool {
        self.updated_ns.load(Ordering::Relaxed) != 0
    }

    /// The current round-trip estimate, decayed towards zero while no samples arrive
    /// so that an endpoint once slow is tried again later.
    pub fn rtt_estimate(&self) -> Duration {
        let (rtt, weight, _) = self.stored(self.now_ns());
        Duration::from_nanos((rtt * weight) as u64)
    }

    /// Cost for peak-EWMA: estimate × (pending + 1), scaled up by the failure rate.
    pub fn cost(&self) -> f64 {
        let (rtt, weight, _) = self.stored(self.now_ns());
        let failures = f64::from_bits(self.failure_rate.load(Ordering::Relaxed));
        rtt * weight
            * f64::from(self.pending.load(Ordering::Relaxed) + 1)
            * (1.0 + failures * FAILURE_COST)
    }

    /// Records a finished call. Races between concurrent samples lose one sample at
    /// worst, which an estimate can afford.
    pub fn record(&self, rtt: Duration, failed: bool) {
        let sample = if failed { rtt.max(ERROR_PENALTY) } else { rtt }.as_nanos() as f64;
        let now_ns = self.now_ns();
        let (stored, weight, sampled) = self.stored(now_ns);
        let next = if !sampled || sample > stored * weight {
            sample // the first sample, or a peak: take it at once
        } else {
            // Move from the stored estimate towards the sample, more the longer the
            // gap, and at least by MIN_SAMPLE_WEIGHT: a busy endpoint recovers from an
            // outlier (a stall of the host) within a few dozen calls, not seconds.
            let weight = weight.min(1.0 - MIN_SAMPLE_WEIGHT);
            stored * weight + sample * (1.0 - weight)
        };
        self.rtt_ns.store(next.to_bits(), Ordering::Relaxed);
        self.updated_ns.store(now_ns, Ordering::Relaxed);
        let rate = f64::from_bits(self.failure_rate.load(Ordering::Relaxed));
        let outcome = if failed { 1.0 } else { 0.0 };
        let rate = rate + (outcome - rate) * FAILURE_ALPHA;
        self.failure_rate.store(rate.to_bits(), Ordering::Relaxed);
    }

    /// Claims this connection's forced pick if the policy passed it over for
    /// [`FORCE_PICK`]; at most one caller wins each period.
    pub fn claim_forced_pick(&self) -> bool {
        let now = self.now_ns();
        let last = self.picked_ns.load(Ordering::Relaxed);
        now.saturating_sub(last) > FORCE_PICK.as_nanos() as u64
            && self
                .picked_ns
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Notes that the policy picked this connection.
    pub fn mark_picked(&self) {
        self.picked_ns.store(self.now_ns(), Ordering::Relaxed);
    }
}

/// A pooled connection to one address.
#[derive(Debug)]
pub(crate) struct Connection {
    pub addr: String,
    state: Arc<StateCell>,
    started: AtomicBool,
    stop: CancellationToken,
    settings: DialSettings,
    pub load: Load,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

type PoolKey = (String, DialSettings);
static POOL: LazyLock<Mutex<HashMap<PoolKey, Weak<Connection>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

impl Connection {
    /// The pooled connection for `addr`, created (idle) if nobody holds one.
    pub fn pooled(addr: &str, settings: &DialSettings) -> Arc<Self> {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        let key = (addr.to_string(), settings.clone());
        if let Some(conn) = pool.get(&key).and_then(Weak::upgrade) {
            return conn;
        }
        pool.retain(|_, w| w.strong_count() > 0);
        let conn = Arc::new(Self {
            addr: addr.to_string(),
            state: Arc::new(StateCell::new()),
            started: AtomicBool::new(false),
            stop: CancellationToken::new(),
            settings: settings.clone(),
            load: Load::new(),
        });
        pool.insert(key, Arc::downgrade(&conn));
        conn
    }

    /// Starts the connection task once; later calls do nothing.
    pub fn start(&self) {
        if self.started.load(Ordering::Acquire) || self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let task = ConnectionTask {
            addr: self.addr.clone(),
            state: self.state.clone(),
            stop: self.stop.clone(),
            settings: self.settings.clone(),
        };
        tokio::spawn(task.run());
    }

    pub fn state(&self) -> ConnState {
        self.state.tx.borrow().clone()
    }

    /// How many connections to the address were established: 1 + reconnects.
    pub fn connects(&self) -> u64 {
        self.state.connects.load(Ordering::Relaxed)
    }

    /// True if a request can be handed over now; cheaper than [`state`](Self::state).
    pub fn is_ready(&self) -> bool {
        self.state.ready.load(Ordering::Acquire)
    }

    /// Hands `req` to the connection if it is ready; gives it back if not.
    // The request comes back by value: boxing it would cost every call an allocation.
    #[allow(clippy::result_large_err)]
    pub fn send(
        &self,
        req: http::Request<tonic::body::Body>,
    ) -> Result<impl Future<Output = SendResult> + Send + use<>, http::Request<tonic::body::Body>>
    {
        let mut sender = self.state.sender.lock().unwrap_or_else(|e| e.into_inner());
        match sender.as_mut() {
            Some(s) => Ok(s.try_send_request(req)),
            None => Err(req),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<ConnState> {
        self.state.tx.subscribe()
    }

    /// Called when the server refused a request because it is going away: take the
    /// connection out of rotation now; the task redials once it has drained.
    pub fn retire(&self, error: &str) {
        self.state.tx.send_if_modified(|s| match s {
            ConnState::Ready(_) => {
                *s = ConnState::Connecting;
                self.state.set_sender(None);
                tracing::debug!(addr = %self.addr, error, "server going away, redialling");
                true
            }
            _ => false,
        });
    }

    /// Called when a request could not be sent on the current connection: the task
    /// will notice the closed connection too, but callers must stop picking it now.
    pub fn mark_broken(&self, error: &str) {
        self.state.tx.send_if_modified(|s| match s {
            ConnState::Ready(tx) if tx.is_closed() || !tx.is_ready() => {
                *s = ConnState::Connecting;
                self.state.set_sender(None);
                tracing::debug!(addr = %self.addr, error, "connection unusable, redialling");
                true
            }
            _ => false,
        });
    }
}

type ConnFuture = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

struct ConnectionTask {
    addr: String,
    state: Arc<StateCell>,
    stop: CancellationToken,
    settings: DialSettings,
}

impl ConnectionTask {
    async fn run(self) {
        let mut failures: u32 = 0;
        loop {
            self.state.set(ConnState::Connecting);
            let dial = tokio::time::timeout(self.settings.connect_timeout, self.dial());
            let result = tokio::select! {
                _ = self.stop.cancelled() => return,
                r = dial => r,
            };
            let error = match result {
                Ok(Ok((sender, conn))) => {
                    if failures > 0 {
                        tracing::info!(addr = %self.addr, "endpoint readmitted: connected again");
                    } else {
                        tracing::debug!(addr = %self.addr, "endpoint connected");
                    }
                    failures = 0;
                    self.state.connects.fetch_add(1, Ordering::Relaxed);
                    self.state.set(ConnState::Ready(sender));
                    match self.serve(conn).await {
                        None => return,
                        Some(e) => {
                            tracing::warn!(addr = %self.addr, error = %e, "connection lost, redialling");
                            // Redial at once: a restarted server should not wait a backoff.
                            continue;
                        }
                    }
                }
                Ok(Err(e)) => e,
                Err(_) => format!(
                    "connect timed out after {} ms",
                    self.settings.connect_timeout.as_millis()
                ),
            };
            failures = failures.saturating_add(1);
            let delay = backoff(&self.settings, failures);
            tracing::warn!(addr = %self.addr, error = %error, retry_in_ms = delay.as_millis() as u64,
                "endpoint ejected: cannot connect");
            self.state.set(ConnState::Failed {
                error,
                retry_at: Instant::now() + delay,
            });
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Drives a live connection. `None` when stopped (the connection drains in the
    /// background), or the reason it closed.
    async fn serve(&self, conn: ConnFuture) -> Option<String> {
        // The connection runs as a task of its own: it wakes for every frame, and a
        // select here would poll the stop token on each of those wake-ups too.
        let mut running = tokio::spawn(conn);
        tokio::select! {
            _ = self.stop.cancelled() => {
                // Drop our sender so the connection closes once its calls are done.
                self.state.set(ConnState::Idle);
                let abort = running.abort_handle();
                tokio::spawn(async move {
                    if tokio::time::timeout(DRAIN_GRACE, running).await.is_err() {
                        abort.abort();
                    }
                });
                None
            }
            r = &mut running => Some(match r {
                Ok(Ok(())) => "closed by the peer".to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => format!("connection task ended: {e}"),
            }),
        }
    }

    async fn dial(&self) -> Result<(SendRequest<tonic::body::Body>, ConnFuture), String> {
        let tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| format!("connect to {}: {e}", self.addr))?;
        let _ = tcp.set_nodelay(true);
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        if let Some(interval) = self.settings.keepalive {
            builder
                .keep_alive_interval(interval)
                .keep_alive_timeout(interval.min(Duration::from_secs(20)))
                .keep_alive_while_idle(self.settings.keepalive_while_idle);
        }
        match &self.settings.tls {
            None => {
                let (tx, conn) = builder
                    .handshake(TokioIo::new(tcp))
                    .await
                    .map_err(|e| format!("HTTP/2 handshake with {}: {e}", self.addr))?;
                Ok((tx, Box::pin(conn)))
            }
            Some(tls) => {
                let stream = tls.connect(&self.addr, tcp).await?;
                let (tx, conn) = builder
                    .handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("HTTP/2 handshake with {}: {e}", self.addr))?;
                Ok((tx, Box::pin(conn)))
            }
        }
    }
}

fn backoff(s: &DialSettings, failures: u32) -> Duration {
    let exp = s.backoff_base.as_secs_f64() * 1.6f64.powi(failures.saturating_sub(1).min(30) as i32);
    let capped = exp.min(s.backoff_max.as_secs_f64());
    // ±20% jitter so many clients do not redial in step.
    let jitter = 0.8 + rand::random::<f64>() * 0.4;
    Duration::from_secs_f64(capped * jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(load: &Load) -> f64 {
        load.rtt_estimate().as_secs_f64() * 1000.0
    }

    #[test]
    fn first_sample_replaces_the_default_and_peaks_jump() {
        let load = Load::new();
        assert!((ms(&load) - DEFAULT_RTT.as_secs_f64() * 1000.0).abs() < 0.01);
        load.record(Duration::from_micros(300), false);
        assert!(ms(&load) < 0.31, "{}", ms(&load));
        load.record(Duration::from_millis(20), false);
        assert!(ms(&load) > 19.9, "{}", ms(&load));
        // A fast sample right after moves the estimate only a little...
        load.record(Duration::from_micros(300), false);
        assert!(ms(&load) > 18.0, "{}", ms(&load));
        // ...but a few dozen bring it back down.
        for _ in 0..60 {
            load.record(Duration::from_micros(300), false);
        }
        assert!(ms(&load) < 2.0, "{}", ms(&load));
    }

    #[test]
    fn errors_cost_at_least_the_penalty() {
        let load = Load::new();
        load.record(Duration::from_micros(100), true);
        assert!(load.rtt_estimate() >= ERROR_PENALTY.mul_f64(0.99));
        load.pending.store(1, Ordering::Relaxed);
        assert!(load.cost() >= 2.0 * ERROR_PENALTY.as_nanos() as f64 * 0.99);
    }

    #[test]
    fn a_failing_endpoint_costs_more_than_a_slow_healthy_one() {
        let failing = Load::new();
        let slow = Load::new();
        for _ in 0..5 {
            failing.record(Duration::from_micros(100), true);
            slow.record(Duration::from_millis(900), false);
        }
        assert!(failing.cost() > 100.0 * slow.cost());
        // Recovery: successes bring the rate back down.
        for _ in 0..30 {
            failing.record(Duration::from_micros(100), false);
        }
        assert!(f64::from_bits(failing.failure_rate.load(Ordering::Relaxed)) < 0.01);
    }

    #[test]
    fn a_passed_over_connection_is_owed_one_pick_per_period() {
        let mut load = Load::new();
        // Just created: nothing owed yet.
        assert!(!load.claim_forced_pick());
        load.picked_ns.store(1, Ordering::Relaxed);
        load.epoch = Instant::now() - FORCE_PICK * 2;
        assert!(load.claim_forced_pick());
        assert!(!load.claim_forced_pick(), "one claim per period");
    }
}
