//! The fail-fast gate: what a call does when no endpoint is ready at once.
//!
//! Contract (the table in the [module docs](super)): before the first resolution a call
//! waits up to the resolve timeout, then fails `UNAVAILABLE` with the resolver's last
//! error; an empty set fails at once naming the target (or waits, with
//! wait-for-ready); endpoints still connecting are waited for up to the connect timeout;
//! every endpoint failing fails at once naming the first five with their errors and
//! counting the rest (a status stays small whatever the set's size); a call's own deadline
//! bounds every wait and ends it with `DEADLINE_EXCEEDED`. Each wait wakes on a table
//! change or any connection's state change, never by polling: one wait on the
//! channel's [`ReadyLog`](super::transport::ready_log::ReadyLog), which every
//! connection of the channel wakes when it publishes a state, not a subscription per
//! connection. A waiting or failing call costs one pass over the states, read in place
//! (`BENCH_PART=outage cargo bench -p dtmdriver-core --bench endpoints`: a failing call
//! at 10,000 endpoints 3.7 ms and a 767 KB message before, 0.3 ms and 470 bytes now).

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::pin::Pin;
use std::sync::atomic::Ordering;

use tokio::sync::futures::Notified;
use tokio::sync::watch;
use tonic::Status;

use super::channel::ChannelInner;
use super::table::{Slot, Table};
use super::transport::connection::ConnState;

impl ChannelInner {
    /// Picks a ready endpoint, waiting as the [module docs](self) describe.
    pub(super) async fn pick(&self, deadline: Option<Instant>) -> Result<Arc<Slot>, Status> {
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
            // Slots published after `activate` ran were built idle: start them here,
            // once per table.
            if !table.started.swap(true, Ordering::AcqRel) {
                for s in &table.slots {
                    s.conn.start();
                }
            }
            // Enabled before the states are read: a change in between still wakes it.
            let conn_change = self.ready_log.state_changed();
            tokio::pin!(conn_change);
            conn_change.as_mut().enable();
            if let Some(slot) = self.choose(&table) {
                return Ok(slot);
            }
            let summary = Summary::of(&table);
            let fail_now = table.slots.is_empty() || summary.pending == 0;
            if fail_now && !self.wait_for_ready {
                return Err(no_endpoint_status(&self.target, &table, &summary));
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
            if !wait_until(&mut table_rx, until, Some(conn_change)).await {
                let table = self.table();
                let status = no_endpoint_status(&self.target, &table, &Summary::of(&table));
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
}

/// Endpoints whose errors a status names; the others are counted. A set of thousands
/// of failing endpoints would otherwise make a message of megabytes for every call.
const NAMED_FAILURES: usize = 5;

/// The state of a table's connections, as a failing call reports it.
#[derive(Default)]
struct Summary {
    /// Connections worth waiting for (connecting, idle, unresponsive).
    pending: usize,
    /// Connections failing (their dial failed, or they stopped answering).
    failing: usize,
    /// The first [`NAMED_FAILURES`] failing ones: address and error.
    named: Vec<String>,
}

impl Summary {
    /// One pass over the slots, reading each state in place (no copy of it).
    fn of(table: &Table) -> Self {
        let mut summary = Summary::default();
        for s in &table.slots {
            let name = summary.named.len() < NAMED_FAILURES;
            let (failing, pending, error) = s.conn.with_state(|state| match state {
                ConnState::Failed { error, .. } => (true, false, name.then(|| error.clone())),
                // Worth waiting for (it answers again, or another endpoint takes over),
                // and worth naming if nothing else turns up.
                ConnState::Unresponsive { since } => {
                    (true, true, name.then(|| unresponsive_error(*since)))
                }
                _ => (false, true, None),
            });
            summary.pending += usize::from(pending);
            summary.failing += usize::from(failing);
            if let Some(error) = error {
                summary.named.push(format!("{}: {error}", s.endpoint.addr));
            }
        }
        summary
    }
}

pub(super) fn unresponsive_error(since: Instant) -> String {
    format!(
        "not answering: a ping sent {} ms ago is unanswered (the process may be frozen)",
        since.elapsed().as_millis()
    )
}

fn no_endpoint_status(target: &str, table: &Table, summary: &Summary) -> Status {
    if table.slots.is_empty() {
        let cause = match &table.last_error {
            Some(e) => format!("; the resolver also reports: {e}"),
            None => String::new(),
        };
        Status::unavailable(format!(
            "target `{target}` resolved to no endpoints: nothing is registered under it{cause} \
             (inspect it with `dtmdriver resolve {target}`)"
        ))
    } else if summary.failing == 0 {
        Status::unavailable(format!(
            "target `{target}`: none of its {} endpoints connected in time",
            table.slots.len()
        ))
    } else {
        let more = match summary.failing - summary.named.len() {
            0 => String::new(),
            n => format!("; and {n} more failing"),
        };
        Status::unavailable(format!(
            "target `{target}`: all {} endpoints are unreachable: {}{more}",
            table.slots.len(),
            summary.named.join("; ")
        ))
    }
}

fn min_deadline(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Waits for a table change or (with `conn_change`, the channel's wait on its
/// connections' states) any connection's change until `until`; false on timeout.
async fn wait_until(
    table_rx: &mut watch::Receiver<u64>,
    until: Option<Instant>,
    conn_change: Option<Pin<&mut Notified<'_>>>,
) -> bool {
    let any_change = async {
        match conn_change {
            Some(conn_change) => tokio::select! {
                r = table_rx.changed() => r.is_ok(),
                () = conn_change => true,
            },
            None => table_rx.changed().await.is_ok(),
        }
    };
    let Some(until) = until else {
        return any_change.await;
    };
    tokio::time::timeout_at(until.into(), any_change)
        .await
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::net::TcpListener;

    use crate::balance::channel::test_channel;
    use crate::balance::policy::Policy;
    use crate::resolve::{Endpoint, ResolverState};

    #[tokio::test]
    async fn a_waiting_call_wakes_when_a_connection_is_ready() {
        // Servers that accept and never answer: each connection stays connecting
        // (the HTTP/2 handshake waits) for the connect timeout (3 s).
        let mut listeners = Vec::new();
        for _ in 0..20 {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect();
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            loop {
                for l in &listeners {
                    if let Ok(Ok((s, _))) =
                        tokio::time::timeout(Duration::from_millis(5), l.accept()).await
                    {
                        sockets.push(s);
                    }
                }
            }
        });
        let inner = test_channel(Policy::RoundRobin);
        inner.apply(&ResolverState::with_endpoints(
            addrs.iter().map(Endpoint::new),
        ));
        let waiting = {
            let inner = inner.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(2);
                inner
                    .pick(Some(deadline))
                    .await
                    .map(|s| s.endpoint.addr.clone())
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "nothing is ready: the call waits");
        let table = inner.table();
        // A connection coming up wakes it at once.
        table.slots[7].conn.set_ready_by_hand(true);
        let picked = tokio::time::timeout(Duration::from_millis(500), waiting)
            .await
            .expect("woken by the connection's change")
            .unwrap()
            .expect("a ready endpoint");
        assert_eq!(picked, table.slots[7].endpoint.addr);
        held.abort();
    }
}
