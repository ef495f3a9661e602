//! Feeding tonic's own balancer, `tonic::transport::Channel::balance_channel`.
//!
//! # Contract
//!
//! [`feed`] spawns a task that forwards a [`Changes`] stream, compared by address only
//! (tonic's `Endpoint` carries no weight or metadata), into the change queue of a
//! balance channel, turning each inserted endpoint into a tonic `Endpoint` with the
//! caller's function. It ends when the resolver is gone (the channel keeps its last
//! set) or when every clone of the channel is dropped (the resolver's watch stops).
//!
//! # tonic's queue is drained only while calls are made
//!
//! tonic's balancer reads its change queue only when a request polls it: an idle
//! channel applies nothing, and its bounded queue fills (measured against tonic 0.14.9
//! in `driver-etcd/tests/discover.rs`: every change sent while idle stays queued until
//! the next call, which drains them all before it picks an endpoint). So the feeder
//! keeps going while the channel is idle without ever falling behind:
//!
//! * it takes a slot in the queue *before* it asks for the next change, and the
//!   [`Changes`] stream computes that change against the newest snapshot at that moment;
//!   when the queue is full the feeder waits, and the snapshots arriving meanwhile are
//!   merged rather than queued, so nothing stale piles up and nothing is lost;
//! * the first call after an idle spell applies the whole queue first. If the queue
//!   was full, the rest of the difference (often the removals, which come last) reaches
//!   tonic only with the calls after it. Give the queue room for the largest change you
//!   expect while idle: twice the largest endpoint set covers replacing all of it.
//!
//! # What tonic's balancer still gets wrong (tonic 0.14)
//!
//! * an empty endpoint set (nothing resolved yet, or every instance gone) makes every
//!   call wait forever: request timeouts do not end it, only a deadline around the call
//!   (`tokio::time::timeout`);
//! * no failover: an endpoint whose process died stays in rotation until the registry
//!   drops it, since its connect errors are reported to the call that picked it, which
//!   fails;
//! * "p2c" over a constant load, i.e. uniform random choice; no round robin, no weights.
//!
//! Prefer our [`Channel`](crate::Channel) unless you need tonic's channel itself; it
//! has none of these faults and needs no feeder.

use std::fmt;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Change, Changes, require_runtime};
use crate::resolve::Endpoint;

/// tonic's own change type, keyed by address, as `balance_channel` takes it.
pub type TonicChange = tonic::transport::channel::Change<String, tonic::transport::Endpoint>;

/// A plaintext tonic endpoint for `endpoint` (`http://host:port`), with tonic's
/// defaults; build your own for TLS or timeouts.
pub fn http_endpoint(
    endpoint: &Endpoint,
) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    tonic::transport::Endpoint::from_shared(format!("http://{}", endpoint.addr))
}

/// Spawns the task that keeps `sender`'s balance channel fed with `changes`; see the
/// [module docs](self). An endpoint `make_endpoint` fails on is left out with a
/// warning. Must run inside a tokio runtime. Dropping the handle leaves the task
/// running; abort it to stop feeding.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use driver_core::discover::{Changes, feed, http_endpoint};
/// driver_core::use_driver("default")?; // e.g. "dtm-driver-gozero", its crate linked
/// let (channel, sender) = tonic::transport::Channel::balance_channel(1024);
/// let changes = Changes::from_target("direct:///127.0.0.1:50051,127.0.0.1:50052")?;
/// feed(changes, sender, |e| {
///     Ok::<_, tonic::transport::Error>(http_endpoint(e)?.timeout(std::time::Duration::from_secs(5)))
/// });
/// // let mut client = GreeterClient::new(channel);
/// # Ok(()) }
/// ```
pub fn feed<F, E>(
    changes: Changes,
    sender: mpsc::Sender<TonicChange>,
    make_endpoint: F,
) -> JoinHandle<()>
where
    F: FnMut(&Endpoint) -> Result<tonic::transport::Endpoint, E> + Send + 'static,
    E: fmt::Display,
{
    let mut changes = changes.addresses_only().discover(make_endpoint);
    tokio::spawn(async move {
        use futures_util::StreamExt as _;
        loop {
            // A slot first, then the change: computed against the newest set.
            let Ok(permit) = sender.reserve().await else {
                break; // the channel is gone
            };
            let change = tokio::select! {
                change = changes.next() => change,
                () = sender.closed() => break,
            };
            let Some(Ok(change)) = change else {
                tracing::debug!("resolver gone: the balance channel keeps its last set");
                break;
            };
            permit.send(match change {
                Change::Insert(addr, endpoint) => TonicChange::Insert(addr, endpoint),
                Change::Remove(addr) => TonicChange::Remove(addr),
            });
        }
    })
}

/// A tonic balance channel with room for `capacity` queued changes, fed with
/// `changes` over plaintext ([`http_endpoint`]); returns the channel and the feeding
/// task. Must run inside a tokio runtime.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// driver_core::use_driver("default")?; // e.g. "dtm-driver-gozero", its crate linked
/// let changes = driver_core::discover::Changes::from_target("direct:///127.0.0.1:50051")?;
/// let (channel, _feeder) = driver_core::discover::balance_channel(changes, 1024)?;
/// // let mut client = GreeterClient::new(channel);
/// # Ok(()) }
/// ```
pub fn balance_channel(
    changes: Changes,
    capacity: usize,
) -> crate::Result<(tonic::transport::Channel, JoinHandle<()>)> {
    require_runtime("-", "start a tonic balance channel for")?;
    let (channel, sender) = tonic::transport::Channel::balance_channel(capacity.max(1));
    Ok((channel, feed(changes, sender, http_endpoint)))
}
