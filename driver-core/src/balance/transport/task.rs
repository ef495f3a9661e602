//! The task that keeps one connection up: dials (TCP, then TLS if asked), performs
//! the HTTP/2 handshake, publishes the state, serves the connection until it ends, is
//! retired or stops answering, and dials again.
//!
//! Contract: `Ready` only once the server has answered the handshake's ping (as grpc-go
//! waits for the server preface), so a server that turns us away fails the dial with
//! its reason; a lost connection is redialled at once, a failed dial after an
//! exponential backoff (grpc-go's: ×1.6, ±20% jitter); stopping (the last user gone)
//! leaves the connection to finish its calls for up to [`DRAIN_GRACE`]; one WARN line
//! per outage of an address, however many connections to it fail (`outage`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::Level;

use super::connection::DialSettings;
use super::liveness::{Probe, ProbeSettings};
use super::log_budget::{self, endpoint_event};
use super::state::{Activity, ConnState, StateCell};
use super::sweeper;
use crate::backoff::Backoff;
use crate::open_files;

/// How long a dropped connection may keep serving its in-flight calls.
const DRAIN_GRACE: Duration = Duration::from_secs(30);

type ConnFuture = Pin<Box<dyn Future<Output = Result<(), h2::Error>> + Send>>;

/// A dialled connection: its handle, the future that drives it, its pinger.
type Dialled = (SendRequest<Bytes>, ConnFuture, Option<h2::PingPong>);

pub(super) struct ConnectionTask {
    pub addr: String,
    pub state: Arc<StateCell>,
    pub stop: CancellationToken,
    pub settings: Arc<DialSettings>,
    pub activity: Arc<Activity>,
}

impl ConnectionTask {
    pub async fn run(self) {
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
                        endpoint_event!(Level::INFO, addr = %self.addr, "endpoint readmitted: connected again");
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
                            endpoint_event!(Level::WARN, addr = %self.addr, error = %e, "connection lost, redialling");
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
            if outage::first_report(&self.addr) && log_budget::admit() {
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
        // The sweeper (`sweeper`) watches the connection while this guard lives, and
        // says through `close` when the connection must be closed.
        let (close, closing) = tokio::sync::oneshot::channel::<String>();
        let _watching = pinger.map(|pinger| {
            sweeper::watch(&self.activity, |waker| {
                let settings = ProbeSettings {
                    keepalive: self.settings.keepalive,
                    keepalive_while_idle: self.settings.keepalive_while_idle,
                };
                Probe::new(
                    &self.addr,
                    self.state.clone(),
                    &self.activity,
                    pinger,
                    settings,
                    close,
                    waker,
                )
            })
        });
        let liveness = async {
            match closing.await {
                Ok(reason) => reason,
                // No pinger: nothing watches this connection.
                Err(_) => std::future::pending().await,
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
        tokio::select! {
            _ = self.stop.cancelled() => {
                self.state.set(ConnState::Idle);
                drain(running);
                None
            }
            () = self.state.retired_since(generation) => {
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
        let tcp = match TcpStream::connect(&self.addr).await {
            Err(e)
                if open_files::exhausted(&e)
                    && (open_files::raise_after_exhaustion() || open_files::raised()) =>
            {
                TcpStream::connect(&self.addr).await
            }
            dialled => dialled,
        };
        let tcp = tcp.map_err(|e| {
            let advice = if open_files::exhausted(&e) {
                open_files::advice()
            } else {
                String::new()
            };
            format!("connect to {}: {e}{advice}", self.addr)
        })?;
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
