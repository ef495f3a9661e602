//! Finding a peer that stopped answering while its connection stays open.
//!
//! Contract, for every connection and so under every policy:
//!
//! - a connection with calls pending that received no response frame (headers, data,
//!   trailers) for [`SILENCE`] sends one HTTP/2 PING; a PING unanswered for
//!   [`PROBE_TIMEOUT`] makes the connection `Unresponsive`: out of rotation (no new call
//!   picks it), still connected. The peer is found about [`SILENCE`] + [`PROBE_TIMEOUT`]
//!   (+ up to one check of [`CHECK`] to see its last response) after it froze: under a
//!   second;
//! - the PING's answer puts it back in rotation at once: a process resumed from a
//!   freeze serves again without a redial;
//! - calls already handed to it stay bound to it (their deadline, or the caller's
//!   cancellation, ends them): a request that may have reached the server is never
//!   sent again elsewhere. That includes requests the HTTP/2 layer holds back under the
//!   server's concurrency limit (`h2` does not say which), so with no deadline such a
//!   call waits for the peer to answer, its connection to break or the drain of a
//!   removed endpoint's connection (30 s) to end it. Calls not yet handed to a
//!   connection never pick an unresponsive one;
//! - a connection never answering again stays out of rotation until the registry
//!   removes the endpoint, the TCP connection breaks, or (if configured) the keepalive
//!   closes it;
//! - with [`keepalive`](crate::balance::ChannelBuilder::keepalive) the same watch also pings at
//!   the configured interval and closes the connection when a ping stays unanswered for
//!   `min(interval, 20 s)`.
//!
//! Who checks: a [`Probe`] per live connection holds what the watch remembers (the
//! pinger, the ping on its way, the ping policy's counts); the process's one sweeper
//! thread (`sweeper`) checks the probes of the connections with calls pending or a
//! ping on its way every [`CHECK`] and whenever a ping or a ping's timeout is due,
//! those of idle connections pinging while idle when their ping is due, and is woken
//! at once by a ping's answer. A call only counts itself
//! (`Activity::call_started`): it wakes no task, and a connection with nothing
//! pending costs nothing. Before the sweeper each connection had a watch task of its
//! own, which every call on an idle connection woke and which then armed a timer: with
//! calls spread over thousands of connections, that was the largest cost a call had
//! beyond the transport's own (`docs/performance.md`).
//!
//! Why a ping, and only then: a frozen process (SIGSTOP, a VM paused, a GC pause, a
//! deadlock in its I/O) leaves its TCP connection open, so nothing fails — calls just
//! never return, and round robin would keep handing it its share until every caller is
//! parked there. Call outcomes cannot tell a frozen peer from a slow handler in time;
//! a ping can: a slow handler's server answers it at once (its HTTP/2 layer is not the
//! handler), a frozen one does not. A connection answering responses needs no ping, so
//! busy healthy connections never send one, and an idle one is left alone.
//!
//! Servers limit pings. grpc-go's (go-zero, kratos, dtm) counts a ping as a "strike"
//! when the server wrote no headers or data since the previous ping and the previous
//! ping is less than `EnforcementPolicy.MinTime` (5 minutes by default) old, and sends
//! GOAWAY `ENHANCE_YOUR_CALM` "too_many_pings" at the third strike in a row (more than
//! `maxPingStrikes` = 2); a ping after the server wrote headers or data resets the
//! count. grpc-java enforces the same rule. So a liveness ping goes out only if a
//! response frame arrived since the last ping was answered, or the last ping did follow
//! one, or [`PING_POLICY_MIN_TIME`] passed: at most one ping in a row without fresh
//! data, at most one strike, never a GOAWAY. The price: a connection whose only calls
//! are long and silent is probed once per silence, not again until it answers
//! something.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::Level;

use super::log_budget::endpoint_event;
use super::state::{Activity, StateCell};

/// How long a connection with calls pending may go without any response frame before
/// it is asked for a ping.
pub(super) const SILENCE: Duration = Duration::from_millis(200);
/// How long a ping may go unanswered before the connection leaves the rotation. A
/// healthy server answers within a millisecond; this leaves room for a loaded host.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How often a busy connection is checked (by the sweeper, `sweeper`).
pub(super) const CHECK: Duration = Duration::from_millis(50);
/// grpc-go's default `EnforcementPolicy.MinTime`: a ping this long after the last one
/// is never a strike.
const PING_POLICY_MIN_TIME: Duration = Duration::from_secs(5 * 60);
/// The longest a keepalive ping may go unanswered before the connection is closed.
const KEEPALIVE_TIMEOUT_MAX: Duration = Duration::from_secs(20);

/// A ping on its way: the pinger comes back with the answer.
type InFlight = Pin<Box<dyn Future<Output = (h2::PingPong, Result<h2::Pong, h2::Error>)> + Send>>;

fn send_ping(mut pinger: h2::PingPong) -> InFlight {
    Box::pin(async move {
        let answer = pinger.ping(h2::Ping::opaque()).await;
        (pinger, answer)
    })
}

/// The liveness watch of one live connection: what the sweeper checks, kept in the
/// connection's [`Activity`] while the connection lives.
pub(super) struct Probe {
    addr: String,
    state: Arc<StateCell>,
    /// Keepalive ping interval, if configured.
    keepalive: Option<Duration>,
    /// Keepalive pings idle connections too.
    keepalive_while_idle: bool,
    mem: Memory,
    /// `None` while a ping is on its way.
    pinger: Option<h2::PingPong>,
    in_flight: Option<(Instant, InFlight)>,
    /// Out of rotation: a ping went unanswered for [`PROBE_TIMEOUT`].
    stalled: bool,
    /// Tells the connection task to close the connection, and why.
    close: Option<oneshot::Sender<String>>,
    /// Wakes the sweeper for this connection when its ping is answered.
    waker: Waker,
    /// The sweeper's bookkeeping: the due time of the entry it set the connection
    /// aside under (see [`idle_until`](Self::idle_until)), if any.
    pub(super) set_aside: Option<Instant>,
}

/// What the watch remembers between checks.
struct Memory {
    /// The progress count at the last check.
    seen: u64,
    /// The later of the last progress seen and the last moment nothing was pending.
    quiet_since: Instant,
    /// When the last ping was sent (the handshake's, at first).
    last_ping: Instant,
    /// The progress count when the last ping was answered.
    progress_at_pong: u64,
    /// Whether the last ping went out without a response frame since the one before.
    last_unprogressed: bool,
}

/// What a check found.
pub(super) enum Verdict {
    /// Keep checking; the next check is due by this instant at the latest (the
    /// sweeper checks every [`CHECK`] anyway).
    Watch(Option<Instant>),
    /// Nothing pending, no ping on its way: nothing to watch until a call starts.
    Idle,
    /// The connection is to be closed (its task was told why).
    Closed,
}

/// How a connection is watched, from its dial settings.
pub(super) struct ProbeSettings {
    /// Keepalive ping interval, if configured.
    pub keepalive: Option<Duration>,
    /// Keepalive pings idle connections too.
    pub keepalive_while_idle: bool,
}

impl Probe {
    /// The watch of a connection just established (its handshake ping answered now),
    /// which closes it through `close`; `waker` brings a ping's answer to the sweeper.
    pub(super) fn new(
        addr: &str,
        state: Arc<StateCell>,
        activity: &Activity,
        pinger: h2::PingPong,
        settings: ProbeSettings,
        close: oneshot::Sender<String>,
        waker: Waker,
    ) -> Self {
        let now = Instant::now();
        Self {
            addr: addr.to_string(),
            state,
            keepalive: settings.keepalive,
            keepalive_while_idle: settings.keepalive.is_some() && settings.keepalive_while_idle,
            mem: Memory {
                seen: activity.progress(),
                quiet_since: now,
                last_ping: now,
                progress_at_pong: activity.progress(),
                last_unprogressed: false,
            },
            pinger: Some(pinger),
            in_flight: None,
            stalled: false,
            close: Some(close),
            waker,
            set_aside: None,
        }
    }

    /// Whether the connection is watched even with nothing pending.
    pub(super) fn watched_while_idle(&self) -> bool {
        self.keepalive_while_idle
    }

    /// When the connection, watched only for its idle keepalive, is next due: `Some`
    /// while it pings idle connections, nothing is pending and no ping is on its way.
    /// The sweeper sets such a connection aside until then (or until a call starts on
    /// it) instead of checking it every [`CHECK`].
    pub(super) fn idle_until(&self, activity: &Activity) -> Option<Instant> {
        let idle = self.keepalive_while_idle
            && self.in_flight.is_none()
            && self.close.is_some()
            && activity.pending() == 0;
        let interval = self.keepalive.filter(|_| idle)?;
        self.mem.last_ping.checked_add(interval)
    }

    /// A call started at `at` on the connection while it was not watched: its silence
    /// counts from then.
    pub(super) fn busy_since(&mut self, at: Instant, activity: &Activity) {
        self.mem.seen = activity.progress();
        self.mem.quiet_since = at;
    }

    /// Takes in the answer to the ping on its way, if it came: back in rotation if
    /// it was out. `None` if no answer came (or no ping is on its way); `Some(false)`
    /// if the connection is to be closed.
    pub(super) fn take_answer(&mut self, activity: &Activity) -> Option<bool> {
        let (_, ping) = self.in_flight.as_mut()?;
        let mut cx = Context::from_waker(&self.waker);
        let Poll::Ready((returned, answer)) = ping.as_mut().poll(&mut cx) else {
            return None;
        };
        let sent = self
            .in_flight
            .take()
            .map_or_else(Instant::now, |(sent, _)| sent);
        if let Err(e) = answer {
            self.close(format!("ping failed: {e}"));
            return Some(false);
        }
        self.pinger = Some(returned);
        self.mem.progress_at_pong = activity.progress();
        if self.stalled {
            self.stalled = false;
            if self.state.unstall() {
                endpoint_event!(Level::INFO, addr = %self.addr, silent_ms = sent.elapsed().as_millis() as u64,
                    "endpoint answers again; back in rotation");
            }
        }
        Some(true)
    }

    /// One check at `now` (the sweeper's, every [`CHECK`] while the connection is
    /// busy): stalls a connection whose ping went unanswered, pings a silent one.
    pub(super) fn check(&mut self, now: Instant, activity: &Activity) -> Verdict {
        match self.take_answer(activity) {
            Some(false) => return Verdict::Closed,
            // As after any answer, the next ping waits for a check to come.
            Some(true) => return Verdict::Watch(None),
            None => {}
        }
        if self.close.is_none() {
            return Verdict::Closed;
        }
        let progress = activity.progress();
        let pending = activity.pending();
        if progress != self.mem.seen || pending == 0 {
            self.mem.seen = progress;
            self.mem.quiet_since = now;
        }
        if let Some((sent, _)) = &self.in_flight {
            let sent = *sent;
            let waited = now.saturating_duration_since(sent);
            if !self.stalled && waited >= PROBE_TIMEOUT {
                self.stalled = true;
                if self.state.stall(sent) {
                    endpoint_event!(Level::WARN, addr = %self.addr, waited_ms = waited.as_millis() as u64, pending,
                        "endpoint not answering (a ping went unanswered); out of rotation until it answers");
                }
            }
            let mut due = (!self.stalled).then(|| sent + PROBE_TIMEOUT);
            if let Some(interval) = self.keepalive {
                let limit = interval.min(KEEPALIVE_TIMEOUT_MAX);
                if waited >= limit {
                    self.close(format!(
                        "keepalive ping unanswered for {} ms",
                        limit.as_millis()
                    ));
                    return Verdict::Closed;
                }
                due = earliest(due, sent.checked_add(limit));
            }
            return Verdict::Watch(due);
        }
        if self.should_ping(now, progress, pending) {
            self.mem.last_unprogressed = progress == self.mem.progress_at_pong;
            self.mem.last_ping = now;
            if let Some(p) = self.pinger.take() {
                activity.count_probe();
                self.in_flight = Some((now, send_ping(p)));
                // The first poll sends it.
                if self.take_answer(activity) == Some(false) {
                    return Verdict::Closed;
                }
            }
            return Verdict::Watch(None);
        }
        if pending == 0 && !self.keepalive_while_idle {
            return Verdict::Idle;
        }
        let keepalive_due = self
            .keepalive
            .and_then(|interval| self.mem.last_ping.checked_add(interval));
        let silence_due = (pending > 0).then(|| self.mem.quiet_since + SILENCE);
        Verdict::Watch(earliest(keepalive_due, silence_due))
    }

    fn should_ping(&self, now: Instant, progress: u64, pending: u32) -> bool {
        let since_ping = now.saturating_duration_since(self.mem.last_ping);
        let keepalive_due = self.keepalive.is_some_and(|interval| {
            (pending > 0 || self.keepalive_while_idle) && since_ping >= interval
        });
        let overdue = pending > 0 && now.saturating_duration_since(self.mem.quiet_since) >= SILENCE;
        keepalive_due || (overdue && policy_allows(&self.mem, progress, since_ping))
    }

    fn close(&mut self, reason: String) {
        if let Some(close) = self.close.take() {
            let _ = close.send(reason);
        }
    }
}

/// The earlier of two optional instants.
pub(super) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether a liveness ping keeps within grpc-go's ping policy (see the module docs).
fn policy_allows(mem: &Memory, progress: u64, since_ping: Duration) -> bool {
    progress != mem.progress_at_pong || !mem.last_unprogressed || since_ping >= PING_POLICY_MIN_TIME
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(progress_at_pong: u64, last_unprogressed: bool) -> Memory {
        let now = Instant::now();
        Memory {
            seen: 0,
            quiet_since: now,
            last_ping: now,
            progress_at_pong,
            last_unprogressed,
        }
    }

    #[test]
    fn at_most_one_ping_in_a_row_without_fresh_data() {
        // Data since the last answer: always allowed.
        assert!(policy_allows(&memory(3, true), 4, Duration::ZERO));
        // No data, but the last ping followed data: one strike is allowed.
        assert!(policy_allows(&memory(3, false), 3, Duration::ZERO));
        // No data twice in a row: not until grpc-go's MinTime passed.
        assert!(!policy_allows(&memory(3, true), 3, Duration::from_secs(60)));
        assert!(policy_allows(&memory(3, true), 3, PING_POLICY_MIN_TIME));
    }
}
