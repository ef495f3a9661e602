//! One HTTP/2 connection per endpoint address, shared by every channel through a
//! process-wide pool, and how a call opens its stream on it.
//!
//! Contract: [`Connection::pooled`] gives the one connection of an address and dial
//! settings while anyone holds it (a [`SharedByKey`]: looked up once per new address of
//! a channel, not per call), created idle and dialled on [`start`](Connection::start);
//! its task stops when the last user is gone, and in-flight calls finish on the old
//! connection. [`open`](Connection::open) opens a stream if the connection is ready, or
//! says why not ([`OpenError`]); the state (`state`) is published before a request is
//! handed over.
//!
//! The balancer needs to know, *before* it hands a request over, whether an endpoint
//! can take it. tonic's lazy channels only find out inside the call, so this module
//! owns the connection: a task (`task`) dials, performs the HTTP/2 handshake and
//! publishes the state (`Connecting`, `Ready`, `Failed` with the error and the time of
//! the next try). When the connection drops the task dials again, with exponential
//! backoff after a failure. While connected, the process's liveness sweeper watches
//! that the peer still answers (see `liveness`, `sweeper`): one that stops answering is
//! `Unresponsive`, out of rotation but still connected, until it answers.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use h2::client::ResponseFuture;
use tokio_util::sync::CancellationToken;

use super::exchange as transport;
use super::ready_log::ReadyLog;
use super::state::StateCell;
pub(crate) use super::state::{Activity, ConnState};
use super::task::ConnectionTask;
use super::tls::TlsConnector;
use crate::balance::policy::Load;
use crate::shared::SharedByKey;

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

#[cfg(test)]
impl DialSettings {
    /// Short timeouts and no TLS or pings, for tests of connections that are not dialled.
    pub fn for_tests() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            keepalive: None,
            keepalive_while_idle: false,
            tls: None,
        }
    }
}

/// A pooled connection to one address.
#[derive(Debug)]
pub(crate) struct Connection {
    /// The state, which also holds the address ([`Self::addr`]).
    state: Arc<StateCell>,
    started: AtomicBool,
    /// Stops the connection's task; made when the task starts (most connections of a
    /// large set are never dialled: 100,000 tokens were 3% of a first table's CPU).
    stop: OnceLock<CancellationToken>,
    /// Shared with the channels that dial with them and the pool's key (one copy per
    /// channel, not per connection).
    settings: Arc<DialSettings>,
    /// Calls pending and frames received, for the liveness watch and the policies.
    pub activity: Arc<Activity>,
    /// The peak-EWMA estimate of this address, shared by every channel using it.
    pub load: Load,
    /// Streams a connection opens before it is replaced ([`STREAM_BUDGET`]).
    stream_budget: u64,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.get() {
            stop.cancel();
        }
        // Leave the pool (the key is two pointers to what the connection holds).
        POOL.remove_dead(&(self.state.addr.clone(), self.settings.clone()));
    }
}

/// A connection's address and its channel's dial settings.
type PoolKey = (Arc<str>, Arc<DialSettings>);

/// The pool, by address and dial settings (compared by value: channels with equal
/// settings share connections; one entry per address in nearly every process). A
/// connection leaves it when dropped. The key holds the connection's own address and
/// the channel's settings, not copies.
static POOL: LazyLock<SharedByKey<PoolKey, Connection>> = LazyLock::new(SharedByKey::default);

impl Connection {
    /// The pooled connection for `addr`, created (idle) if nobody holds one.
    pub fn pooled(addr: &str, settings: &Arc<DialSettings>) -> Arc<Self> {
        let key = (Arc::<str>::from(addr), settings.clone());
        let made = POOL.get_or_try_insert_with(&key, || {
            let (addr, settings) = key.clone();
            Ok::<_, Infallible>(Arc::new(Self::new(addr, settings, STREAM_BUDGET)))
        });
        match made {
            Ok(conn) => conn,
            Err(never) => match never {},
        }
    }

    /// Makes room in the process's pool for `n` more addresses at once (a channel
    /// taking a large set): one growth of the pool's map instead of one per doubling,
    /// and no sweep of it among them.
    pub fn reserve_pool(n: usize) {
        POOL.reserve(n);
    }

    /// Has `log` record this connection's address whenever it enters or leaves the
    /// rotation (its ready flag changes), for as long as `log` lives. Registering
    /// twice is once.
    pub fn watch_ready(&self, log: &Arc<ReadyLog>) {
        let mut watchers = self
            .state
            .watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        watchers.retain(|w| w.strong_count() > 0);
        if !watchers
            .iter()
            .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(log)))
        {
            watchers.push(Arc::downgrade(log));
        }
    }

    /// Sets the ready flag alone, as a connection coming up or going down does, for
    /// tests and benches of what reads it.
    pub fn set_ready_by_hand(&self, ready: bool) {
        self.state.set_ready_flag(ready);
        self.state.announce();
    }

    /// Sets the ready flag without telling the channels, for tests that show which
    /// flags a channel reads.
    #[cfg(test)]
    pub fn force_ready_unrecorded(&self, ready: bool) {
        self.state.ready.store(ready, Ordering::Release);
    }

    /// A connection outside the pool that is never dialled, for tests.
    #[cfg(test)]
    pub fn detached(addr: &str) -> Arc<Self> {
        let settings = Arc::new(DialSettings::for_tests());
        Arc::new(Self::new(addr.into(), settings, STREAM_BUDGET))
    }

    fn new(addr: Arc<str>, settings: Arc<DialSettings>, stream_budget: u64) -> Self {
        Self {
            state: Arc::new(StateCell::new(addr)),
            started: AtomicBool::new(false),
            stop: OnceLock::new(),
            settings,
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
            addr: self.addr().to_string(),
            state: self.state.clone(),
            stop: self.stop.get_or_init(CancellationToken::new).clone(),
            settings: self.settings.clone(),
            activity: self.activity.clone(),
        };
        tokio::spawn(task.run());
    }

    /// The address dialled.
    pub fn addr(&self) -> &str {
        &self.state.addr
    }

    pub fn state(&self) -> ConnState {
        self.state.read().clone()
    }

    /// `f` of the state, read in place (no copy of it).
    pub fn with_state<R>(&self, f: impl FnOnce(&ConnState) -> R) -> R {
        f(&self.state.read())
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

    /// Takes the connection out of rotation now (it refused a stream: the server is
    /// going away, or the connection failed) and has the task replace it; calls in
    /// flight on it finish.
    pub fn retire(&self, error: &str) {
        let retired = self.state.publish_if(|s| match s {
            ConnState::Ready | ConnState::Unresponsive { .. } => {
                *s = ConnState::Connecting;
                self.state.set_sender(None);
                true
            }
            _ => false,
        });
        if retired {
            tracing::debug!(addr = %self.addr(), error, "connection retired, redialling");
            self.state.retire();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn the_pool_shares_by_address_and_forgets_dropped_connections() {
        let settings = Arc::new(DialSettings::for_tests());
        let addr = "10.5.0.1:80";
        let a = Connection::pooled(addr, &settings);
        assert!(Arc::ptr_eq(&a, &Connection::pooled(addr, &settings)));
        // Equal settings of another channel: the same connection.
        let equal = Arc::new(DialSettings::for_tests());
        assert!(Arc::ptr_eq(&a, &Connection::pooled(addr, &equal)));
        let mut other = DialSettings::for_tests();
        other.keepalive = Some(Duration::from_secs(30));
        let other = Arc::new(other);
        let b = Connection::pooled(addr, &other);
        assert!(!Arc::ptr_eq(&a, &b));
        let pooled = |s: &Arc<DialSettings>| POOL.has_entry(&(addr.into(), s.clone()));
        assert!(pooled(&settings) && pooled(&other));
        drop(a);
        assert!(!pooled(&settings) && pooled(&other));
        drop(b);
        assert!(!pooled(&other));
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
        let conn = Connection::new(server.addr().into(), Arc::new(settings), 5);
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
