//! The feeder for tonic's own balancer, `tonic::transport::Channel::balance_channel`;
//! what it guarantees and what tonic's balancer still gets wrong are in the
//! [`discover`](super) module docs, where users read them.

use std::fmt;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Change, Changes};
use crate::driver::require_runtime;
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

/// Spawns the task that keeps `sender`'s balance channel fed with `changes`; see
/// [feeding tonic's balancer](super#feeding-tonics-balance_channel). An endpoint `make_endpoint` fails on is left out with a
/// warning. Must run inside a tokio runtime. Dropping the handle leaves the task
/// running; abort it to stop feeding.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use dtmdriver_core::discover::{Changes, feed, http_endpoint};
/// dtmdriver_core::use_driver("default")?; // e.g. "dtm-driver-gozero", its crate linked
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
/// dtmdriver_core::use_driver("default")?; // e.g. "dtm-driver-gozero", its crate linked
/// let changes = dtmdriver_core::discover::Changes::from_target("direct:///127.0.0.1:50051")?;
/// let (channel, _feeder) = dtmdriver_core::discover::balance_channel(changes, 1024)?;
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::resolve::SnapshotSender;

    fn eps(ports: &[u16]) -> Vec<Endpoint> {
        ports
            .iter()
            .map(|p| Endpoint::new(format!("127.0.0.1:{p}")))
            .collect()
    }

    fn show(change: TonicChange) -> String {
        match change {
            TonicChange::Insert(addr, _) => format!("+{addr}"),
            TonicChange::Remove(addr) => format!("-{addr}"),
        }
    }

    async fn queued_reaches(rx: &mpsc::Receiver<TonicChange>, n: usize) {
        for _ in 0..500 {
            if rx.len() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("the queue holds {} changes, not {n}", rx.len());
    }

    #[tokio::test]
    async fn a_full_queue_merges_what_arrives_meanwhile_and_loses_nothing() {
        let (snapshots, rx) = SnapshotSender::channel();
        snapshots.update(eps(&[1]));
        let (tx, mut queue) = mpsc::channel(2);
        let feeder = feed(Changes::new(rx), tx, http_endpoint);
        queued_reaches(&queue, 1).await;
        assert_eq!(show(queue.recv().await.unwrap()), "+127.0.0.1:1");

        // Nobody reads the queue (an idle tonic channel): two changes fill it.
        snapshots.update(eps(&[1, 2]));
        queued_reaches(&queue, 1).await;
        snapshots.update(eps(&[1, 2, 3]));
        queued_reaches(&queue, 2).await;
        // Meanwhile 5 comes and goes, 4 comes, 1 and 3 go.
        snapshots.update(eps(&[1, 2, 3, 5]));
        tokio::time::sleep(Duration::from_millis(50)).await;
        snapshots.update(eps(&[2, 4]));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(queue.len(), 2);

        let mut seen = Vec::new();
        while seen.len() < 5 {
            let change = tokio::time::timeout(Duration::from_secs(5), queue.recv())
                .await
                .expect("the feeder stalled")
                .unwrap();
            seen.push(show(change));
        }
        assert_eq!(
            seen,
            [
                "+127.0.0.1:2",
                "+127.0.0.1:3",
                "+127.0.0.1:4",
                "-127.0.0.1:1",
                "-127.0.0.1:3"
            ]
        );
        // Nothing else (no stale +5/-5); the feeder ends with the resolver.
        drop(snapshots);
        let end = tokio::time::timeout(Duration::from_secs(5), queue.recv()).await;
        assert!(matches!(end, Ok(None)), "more after the set was current");
        tokio::time::timeout(Duration::from_secs(5), feeder)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn the_feeder_ends_when_the_channel_is_gone_and_frees_the_resolver() {
        let (snapshots, rx) = SnapshotSender::channel();
        snapshots.update(eps(&[1]));
        let (tx, queue) = mpsc::channel(8);
        let feeder = feed(Changes::new(rx), tx, http_endpoint);
        drop(queue);
        tokio::time::timeout(Duration::from_secs(5), feeder)
            .await
            .unwrap()
            .unwrap();
        assert!(
            snapshots.is_closed(),
            "the resolver's receiver outlived the feeder"
        );
    }
}
