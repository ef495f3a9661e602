//! One HTTP/2 connection per endpoint address, kept up by its own task.
//!
//! The balancer needs to know, *before* it hands a request over, whether an endpoint
//! can take it. tonic's lazy channels only find out inside the call, so this module
//! owns the connection: a task dials, performs the HTTP/2 handshake and publishes the
//! state (`Connecting`, `Ready`, `Failed` with the error and the time of the next try).
//! When the connection drops the task dials again, with exponential backoff after a
//! failure. Connections live in a process-wide pool keyed by address, so two targets
//! resolving to the same address share one connection; the task stops when the last
//! user is gone, and in-flight calls finish on the old connection. While connected, the
//! task also watches that the peer still answers (see `liveness`): one that stops
//! answering is `Unresponsive`, out of rotation but still connected, until it answers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::exchange as transport;
use super::liveness::Liveness;
use super::tls::TlsConnector;
use crate::backoff::Backoff;
use crate::balance::policy::Load;

/// How long a dropped connection may keep serving its in-flight calls.
const DRAIN_GRACE: Duration = Duration::from_secs(30);

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
    tx: watch::Sender<ConnState>,
    ready: AtomicBool,
    /// The ready connection's handle, which calls open their streams through under a
    /// short lock (a clone per call would cost two more locks of the connection).
    sender: Mutex<Option<SendRequest<Bytes>>>,
    /// Connections established so far.
    connects: AtomicU64,
    /// Counts requests to replace the connection (it refused new streams, or used
    /// up its stream ids); the task serves a connection until the count moves on from
    /// the value it had when the connection was published.
    retired: watch::Sender<u64>,
    /// Streams opened on the current connection.
    opened: AtomicU64,
    /// Counters of the channels using this connection, bumped whenever the ready flag
    /// changes, so that each keeps its list of ready endpoints without scanning.
    watchers: Mutex<Vec<Weak<AtomicU64>>>,
}

impl StateCell {
    fn new() -> Self {
        Self {
            tx: watch::channel(ConnState::Idle).0,
            ready: AtomicBool::new(false),
            sender: Mutex::new(None),
            connects: AtomicU64::new(0),
            retired: watch::channel(0).0,
            opened: AtomicU64::new(0),
            watchers: Mutex::new(Vec::new()),
        }
    }

    /// Sets the hot path's ready flag and, if it changed, tells the watchers.
    fn set_ready_flag(&self, ready: bool) {
        if self.ready.swap(ready, Ordering::AcqRel) != ready {
            let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
            // The flag's store comes first: a watcher that sees the new count sees
            // the new flag.
            watchers.retain(|w| match w.upgrade() {
                Some(count) => {
                    count.fetch_add(1, Ordering::AcqRel);
                    true
                }
                None => false,
            });
        }
    }

    /// Publishes a state other than `Ready`.
    fn set(&self, state: ConnState) {
        self.set_sender(None);
        self.tx.send_replace(state);
    }

    /// Publishes a new connection (and counts it); returns the retire count it
    /// starts from.
    fn set_ready(&self, sender: SendRequest<Bytes>) -> u64 {
        self.connects.fetch_add(1, Ordering::Relaxed);
        let generation = *self.retired.borrow();
        self.opened.store(0, Ordering::Relaxed);
        self.set_sender(Some(sender));
        self.tx.send_replace(ConnState::Ready);
        generation
    }

    /// Updates the hot path's view: the sender and the ready flag together.
    fn set_sender(&self, sender: Option<SendRequest<Bytes>>) {
        let mut slot = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        self.set_ready_flag(sender.is_some());
        *slot = sender;
    }

    /// Takes a ready connection out of rotation without closing it: its peer left the
    /// ping sent at `since` unanswered. True if it was ready.
    pub(super) fn stall(&self, since: Instant) -> bool {
        // The ready flag changes under the state's lock, as in `retire`.
        self.tx.send_if_modified(|s| match s {
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
        self.tx.send_if_modified(|s| match s {
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

/// A request's stream, opened: the response to come and where its body goes.
pub(crate) type Opened = (ResponseFuture, h2::SendStream<Bytes>);

/// Why a connection did not open a stream.
pub(crate) enum OpenError {
    /// It is not ready (any more): pick again.
    NotReady,
    /// It refuses new streams: it failed, or the server is going away.
    Refused(h2::Error),
    /// HTTP/2 cannot carry this request (say, a header too large for the peer); the
    /// connection is fine.
    Rejected(h2::Error),
}

/// Streams one connection opens before it is replaced. A client has 2^30 stream ids
/// per connection (the odd ones below 2^31), about six hours at 50 000 calls a
/// second; the connection is retired well before they run out, as grpc-go does.
const STREAM_BUDGET: u64 = (1 << 30) - (1 << 20);

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

/// What the liveness watch and the policies read of a connection's traffic: calls
/// pending, response frames received, pings sent.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Calls in flight on this connection (all channels of the process).
    pub pending: AtomicU32,
    /// Ticks for every response frame received (headers, data, trailers): the
    /// liveness watch's evidence that the peer is working.
    progress: AtomicU64,
    /// Woken when the first call starts on an idle connection, so the liveness watch
    /// sleeps while nothing is pending.
    busy: Notify,
    /// Liveness pings sent so far.
    probes: AtomicU64,
}

impl Activity {
    /// Counts a call as started on this connection.
    pub fn call_started(&self) {
        if self.pending.fetch_add(1, Ordering::Relaxed) == 0 {
            self.busy.notify_one();
        }
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

    /// Waits until a call starts on an idle connection (or returns at once if one
    /// started since the last wait).
    pub(super) async fn became_busy(&self) {
        self.busy.notified().await;
    }

    pub(super) fn count_probe(&self) {
        self.probes.fetch_add(1, Ordering::Relaxed);
    }

    /// Liveness pings sent to this address so far.
    pub fn probes(&self) -> u64 {
        self.probes.load(Ordering::Relaxed)
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
    /// Calls pending and frames received, for the liveness watch and the policies.
    pub activity: Arc<Activity>,
    /// The peak-EWMA estimate of this address, shared by every channel using it.
    pub load: Load,
    /// Streams a connection opens before it is replaced ([`STREAM_BUDGET`]).
    stream_budget: u64,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.stop.cancel();
        // Leave the pool. Nothing drops a connection while holding the pool's lock.
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entries) = pool.get_mut(self.addr.as_str()) {
            entries.retain(|(_, w)| w.strong_count() > 0);
            if entries.is_empty() {
                pool.remove(self.addr.as_str());
            }
        }
    }
}

/// The pool: by address (looked up without allocating), then by dial settings (one
/// entry in nearly every process). A connection removes itself when dropped, so a
/// lookup costs one hash whatever the pool's size.
type Pool = HashMap<String, Vec<(DialSettings, Weak<Connection>)>>;
static POOL: LazyLock<Mutex<Pool>> = LazyLock::new(|| Mutex::new(HashMap::new()));

impl Connection {
    /// The pooled connection for `addr`, created (idle) if nobody holds one.
    pub fn pooled(addr: &str, settings: &DialSettings) -> Arc<Self> {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entries) = pool.get_mut(addr) {
            if let Some(conn) = entries
                .iter()
                .find(|(s, _)| s == settings)
                .and_then(|(_, w)| w.upgrade())
            {
                return conn;
            }
            entries.retain(|(s, w)| s != settings && w.strong_count() > 0);
        }
        let conn = Arc::new(Self::new(addr, settings, STREAM_BUDGET));
        pool.entry(addr.to_string())
            .or_default()
            .push((settings.clone(), Arc::downgrade(&conn)));
        conn
    }

    /// Has `count` ticked whenever this connection enters or leaves the rotation (its
    /// ready flag changes), for as long as `count` lives. Registering twice is once.
    pub fn watch_ready(&self, count: &Arc<AtomicU64>) {
        let mut watchers = self
            .state
            .watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        watchers.retain(|w| w.strong_count() > 0);
        if !watchers
            .iter()
            .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(count)))
        {
            watchers.push(Arc::downgrade(count));
        }
    }

    /// Sets the ready flag alone, as a connection coming up or going down does, for
    /// tests of what reads it.
    #[cfg(test)]
    pub fn force_ready(&self, ready: bool) {
        self.state.set_ready_flag(ready);
    }

    /// A connection outside the pool that is never dialled, for tests.
    #[cfg(test)]
    pub fn detached(addr: &str) -> Arc<Self> {
        let settings = DialSettings {
            connect_timeout: Duration::from_secs(1),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            keepalive: None,
            keepalive_while_idle: false,
            tls: None,
        };
        Arc::new(Self::new(addr, &settings, STREAM_BUDGET))
    }

    fn new(addr: &str, settings: &DialSettings, stream_budget: u64) -> Self {
        Self {
            addr: addr.to_string(),
            state: Arc::new(StateCell::new()),
            started: AtomicBool::new(false),
            stop: CancellationToken::new(),
            settings: settings.clone(),
            activity: Arc::new(Activity::default()),
            load: Load::new(),
            stream_budget,
        }
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
            activity: self.activity.clone(),
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

    /// Opens a stream for a request with this head, if the connection is ready.
    pub async fn open(&self, head: &http::request::Parts) -> Result<Opened, OpenError> {
        let own_handle = {
            let mut sender = self.state.sender.lock().unwrap_or_else(|e| e.into_inner());
            let Some(tx) = sender.as_mut() else {
                return Err(OpenError::NotReady);
            };
            match tx.send_request(transport::head(head), false) {
                Ok(opened) => {
                    drop(sender);
                    self.count_stream();
                    return Ok(opened);
                }
                // Streams waiting to open (the server's concurrency limit), or the
                // connection failed: a handle of our own waits, or says which.
                Err(_) => tx.clone(),
            }
        };
        let classify = |e: h2::Error| {
            if e.is_io() || e.is_go_away() || e.reason().is_some() {
                OpenError::Refused(e)
            } else {
                OpenError::Rejected(e)
            }
        };
        let mut tx = own_handle.ready().await.map_err(classify)?;
        let opened = tx
            .send_request(transport::head(head), false)
            .map_err(classify)?;
        self.count_stream();
        Ok(opened)
    }

    fn count_stream(&self) {
        if self.state.opened.fetch_add(1, Ordering::Relaxed) + 1 == self.stream_budget {
            self.retire("it used up its stream ids");
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<ConnState> {
        self.state.tx.subscribe()
    }

    /// Takes the connection out of rotation now (it refused a stream: the server is
    /// going away, or the connection failed) and has the task replace it; calls in
    /// flight on it finish.
    pub fn retire(&self, error: &str) {
        let retired = self.state.tx.send_if_modified(|s| match s {
            ConnState::Ready | ConnState::Unresponsive { .. } => {
                *s = ConnState::Connecting;
                self.state.set_sender(None);
                true
            }
            _ => false,
        });
        if retired {
            tracing::debug!(addr = %self.addr, error, "connection retired, redialling");
            self.state.retired.send_modify(|g| *g += 1);
        }
    }
}

type ConnFuture = Pin<Box<dyn Future<Output = Result<(), h2::Error>> + Send>>;

/// A dialled connection: its handle, the future that drives it, its pinger.
type Dialled = (SendRequest<Bytes>, ConnFuture, Option<h2::PingPong>);

struct ConnectionTask {
    addr: String,
    state: Arc<StateCell>,
    stop: CancellationToken,
    settings: DialSettings,
    activity: Arc<Activity>,
}

impl ConnectionTask {
    async fn run(self) {
        let mut failures: u32 = 0;
        let mut backoff = Backoff::new(self.settings.backoff_base, self.settings.backoff_max)
            .factor(BACKOFF_FACTOR)
            .jitter(BACKOFF_JITTER);
        loop {
            self.state.set(ConnState::Connecting);
            let dial = tokio::time::timeout(self.settings.connect_timeout, self.dial());
            let result = tokio::select! {
                _ = self.stop.cancelled() => return,
                r = dial => r,
            };
            let error = match result {
                Ok(Ok((sender, conn, pinger))) => {
                    if failures > 0 {
                        tracing::info!(addr = %self.addr, "endpoint readmitted: connected again");
                    } else {
                        tracing::debug!(addr = %self.addr, "endpoint connected");
                    }
                    failures = 0;
                    backoff.reset();
                    outage::over(&self.addr);
                    let generation = self.state.set_ready(sender);
                    match self.serve(conn, pinger, generation).await {
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
            let delay = backoff.next_delay();
            if outage::first_report(&self.addr) {
                tracing::warn!(addr = %self.addr, error = %error, retry_in_ms = delay.as_millis() as u64,
                    "endpoint ejected: cannot connect");
            } else {
                tracing::debug!(addr = %self.addr, error = %error, retry_in_ms = delay.as_millis() as u64,
                    failures, "endpoint ejected: cannot connect");
            }
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
    /// background), or the reason it ended.
    async fn serve(
        &self,
        conn: ConnFuture,
        pinger: Option<h2::PingPong>,
        generation: u64,
    ) -> Option<String> {
        // The connection runs as a task of its own: it wakes for every frame, and a
        // select here would poll the stop token on each of those wake-ups too.
        let mut running = tokio::spawn(conn);
        let liveness = async {
            match pinger {
                Some(pinger) => {
                    let watch = Liveness {
                        addr: &self.addr,
                        state: &self.state,
                        activity: &self.activity,
                        keepalive: self.settings.keepalive,
                        keepalive_while_idle: self.settings.keepalive_while_idle,
                    };
                    watch.run(pinger).await
                }
                None => std::future::pending().await,
            }
        };
        let drain = |running: tokio::task::JoinHandle<_>| {
            // Our handle is gone: the connection closes once its calls are done.
            let abort = running.abort_handle();
            tokio::spawn(async move {
                if tokio::time::timeout(DRAIN_GRACE, running).await.is_err() {
                    abort.abort();
                }
            });
        };
        let mut retired = self.state.retired.subscribe();
        tokio::select! {
            _ = self.stop.cancelled() => {
                self.state.set(ConnState::Idle);
                drain(running);
                None
            }
            _ = retired.wait_for(|g| *g != generation) => {
                drain(running);
                Some("retired: it refused new streams or used up its stream ids".to_string())
            }
            reason = liveness => {
                running.abort();
                Some(reason)
            }
            r = &mut running => match r {
                Ok(Ok(())) => Some("closed by the peer".to_string()),
                Ok(Err(e)) => Some(e.to_string()),
                // Cancelled: the runtime is shutting down; nothing to redial or report.
                Err(e) if e.is_cancelled() => None,
                Err(e) => Some(format!("connection task ended: {e}")),
            },
        }
    }

    async fn dial(&self) -> Result<Dialled, String> {
        let tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| format!("connect to {}: {e}", self.addr))?;
        let _ = tcp.set_nodelay(true);
        match &self.settings.tls {
            None => self.handshake(tcp).await,
            Some(tls) => {
                let (stream, asked) = tls.connect(&self.addr, tcp).await?;
                self.handshake(stream).await.map_err(|e| {
                    if asked.load(Ordering::Relaxed) {
                        format!(
                            "{e}: the server asked for a client certificate and this channel \
                             has none (give one with TlsConnector::from_pem)"
                        )
                    } else {
                        e
                    }
                })
            }
        }
    }

    async fn handshake<T>(&self, io: T) -> Result<Dialled, String>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, mut conn) = h2::client::Builder::new()
            .enable_push(false)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| format!("HTTP/2 handshake with {}: {e}", self.addr))?;
        let mut pinger = conn.ping_pong();
        let mut conn: ConnFuture = Box::pin(conn);
        // Ready only once the server has answered (its SETTINGS come before the PONG of
        // this ping), as grpc-go waits for the server preface: a server that turns us
        // away (a TLS 1.3 client-certificate alert, which arrives after our side of the
        // TLS handshake is done; a peer that does not speak HTTP/2) fails the dial with
        // its reason, instead of the first call failing with a broken pipe.
        if let Some(pinger) = pinger.as_mut() {
            let ping = pinger.ping(h2::Ping::opaque());
            tokio::pin!(ping);
            tokio::select! {
                answer = &mut ping => {
                    answer.map_err(|e| format!("HTTP/2 handshake with {}: {e}", self.addr))?;
                }
                ended = &mut conn => {
                    return Err(match ended {
                        Ok(()) => format!("{} closed the connection during the HTTP/2 handshake", self.addr),
                        Err(e) => format!("HTTP/2 handshake with {}: {e}", self.addr),
                    });
                }
            }
        }
        Ok((tx, conn, pinger))
    }
}

/// Flow-control windows we grant the server (hyper's client defaults): a response
/// streams this far ahead of the caller reading it.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// One warning per outage of an address, however many connections to it fail: a
/// client rebuilt for every retry (the etcd engine's) dials anew each time, and each
/// of its failures would otherwise be a WARN line.
mod outage {
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex};
    use std::time::{Duration, Instant};

    /// A long outage is reported again this often.
    const REPORT_AGAIN: Duration = Duration::from_secs(60);

    /// Addresses whose outage was reported, and when.
    static REPORTED: LazyLock<Mutex<HashMap<String, Instant>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));

    /// Whether a failure to connect to `addr` is to be reported at WARN: the first of
    /// an outage, or the first for a while.
    pub(super) fn first_report(addr: &str) -> bool {
        let mut reported = REPORTED.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match reported.get(addr) {
            Some(at) if now.saturating_duration_since(*at) < REPORT_AGAIN => false,
            _ => {
                reported.insert(addr.to_string(), now);
                true
            }
        }
    }

    /// `addr` answered: its next failure starts a new outage.
    pub(super) fn over(addr: &str) {
        let mut reported = REPORTED.lock().unwrap_or_else(|e| e.into_inner());
        if !reported.is_empty() {
            reported.remove(addr);
        }
    }
}

/// Redial backoff: ×1.6 per failure, ±20% jitter (grpc-go's connection backoff).
const BACKOFF_FACTOR: f64 = 1.6;
const BACKOFF_JITTER: f64 = 0.2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_shares_by_address_and_forgets_dropped_connections() {
        let settings = DialSettings {
            connect_timeout: Duration::from_secs(1),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            keepalive: None,
            keepalive_while_idle: false,
            tls: None,
        };
        let addr = "10.5.0.1:80";
        let a = Connection::pooled(addr, &settings);
        assert!(Arc::ptr_eq(&a, &Connection::pooled(addr, &settings)));
        let mut other = settings.clone();
        other.keepalive = Some(Duration::from_secs(30));
        let b = Connection::pooled(addr, &other);
        assert!(!Arc::ptr_eq(&a, &b));
        let entries = |addr: &str| POOL.lock().unwrap().get(addr).map_or(0, Vec::len);
        assert_eq!(entries(addr), 2);
        drop(a);
        assert_eq!(entries(addr), 1);
        drop(b);
        assert!(!POOL.lock().unwrap().contains_key(addr));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_is_replaced_before_its_stream_ids_run_out() {
        let server = test_support::EchoServer::start("budget").await;
        let settings = DialSettings {
            connect_timeout: Duration::from_secs(2),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
            keepalive: None,
            keepalive_while_idle: false,
            tls: None,
        };
        let conn = Connection::new(&server.addr(), &settings, 5);
        conn.start();
        let head = http::Request::post(format!("http://{}/echo.Echo/Say", server.addr()))
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let until = Instant::now() + Duration::from_secs(10);
        let mut opened = 0;
        while opened < 12 {
            match conn.open(&head).await {
                Ok(_) => opened += 1,
                Err(OpenError::NotReady) => {
                    assert!(Instant::now() < until, "no connection within 10 s");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(OpenError::Refused(e) | OpenError::Rejected(e)) => panic!("open: {e}"),
            }
        }
        // Five streams each: the first two connections were retired, the third took
        // the last two streams.
        assert_eq!(conn.connects(), 3);
    }
}
