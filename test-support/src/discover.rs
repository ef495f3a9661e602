//! Scenarios for `dtmdriver_core::discover` against a real registry, shared by the etcd
//! and consul tests: the same contract must hold on every engine.
//!
//! The registration targets take `?weight=N`, as the native drivers' do.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use dtmdriver_core::Driver;
use dtmdriver_core::discover::{Change, Changes, feed, http_endpoint};
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;

use crate::{CALL_BOUND, EchoClient, EchoServer, SayRequest, wait_for};

/// How long a registry change may take to arrive as a change.
const CHANGE_BOUND: Duration = Duration::from_secs(10);

/// The next change of `changes`, as `+ADDR/WEIGHT` or `-ADDR`.
///
/// # Panics
///
/// Panics if none arrives within 10 s or the stream ends.
pub async fn next_change(changes: &mut Changes) -> String {
    match tokio::time::timeout(CHANGE_BOUND, changes.next()).await {
        Ok(Some(Change::Insert(addr, e))) => format!("+{addr}/{}", e.weight),
        Ok(Some(Change::Remove(addr))) => format!("-{addr}"),
        Ok(None) => panic!("the change stream ended"),
        Err(_) => panic!(
            "no change within {CHANGE_BOUND:?} (resolver error: {:?})",
            changes.last_error()
        ),
    }
}

/// Registers two instances through `driver` at `target` (`SCHEME://REGISTRY/NAME`, no
/// query), changes one's weight and removes the other: each arrives, in order, as
/// `Insert`, `Insert`, `Remove` + `Insert` with the new weight, `Remove`.
pub async fn changes_arrive_in_order(target: &str, driver: &dyn Driver) {
    let (a, b) = ("127.0.0.1:9101", "127.0.0.1:9102");
    let ra = driver.register_service(target, a).await.unwrap();
    let mut changes = Changes::with_driver(target, driver).unwrap();
    assert_eq!(next_change(&mut changes).await, format!("+{a}/1"));

    let rb = driver.register_service(target, b).await.unwrap();
    assert_eq!(next_change(&mut changes).await, format!("+{b}/1"));

    let heavier = format!("{target}?weight=5");
    let ra5 = driver.register_service(&heavier, a).await.unwrap();
    assert_eq!(next_change(&mut changes).await, format!("-{a}"));
    assert_eq!(next_change(&mut changes).await, format!("+{a}/5"));

    rb.deregister().await.unwrap();
    assert_eq!(next_change(&mut changes).await, format!("-{b}"));

    // Nothing else arrives.
    let more = tokio::time::timeout(Duration::from_millis(300), changes.next()).await;
    assert!(
        more.is_err(),
        "an unexpected change: {:?}",
        more.map(|c| c.is_some())
    );
    ra5.deregister().await.unwrap();
    ra.deregister().await.unwrap();
}

/// One echo call through tonic's channel: the name of the server that answered.
async fn say(channel: &tonic::transport::Channel) -> String {
    let mut client = EchoClient::new(channel.clone());
    let call = client.say(SayRequest {
        message: "hi".into(),
    });
    match tokio::time::timeout(CALL_BOUND, call).await {
        Ok(reply) => reply.unwrap().into_inner().server,
        Err(_) => panic!("a call through tonic's balance channel hung for {CALL_BOUND:?}"),
    }
}

/// Slots of tonic's change queue in use: changes queued plus the one the feeder holds
/// reserved for its next change.
fn in_use(probe: &mpsc::Sender<dtmdriver_core::discover::TonicChange>) -> usize {
    probe.max_capacity() - probe.capacity()
}

/// Feeds tonic's `balance_channel` from `driver`'s resolver at `target`, then, with the
/// channel idle, adds an instance and removes one that keeps running. Shows that tonic
/// applies nothing while idle (the changes wait in its queue) and that the first call
/// after the idle spell already sees the current set: the removed instance never
/// answers again, the added one does. Returns how long the two changes took to reach
/// tonic's queue.
pub async fn tonic_feeder_keeps_the_set_current_while_idle(
    target: &str,
    driver: &dyn Driver,
) -> Duration {
    let a = EchoServer::start("a").await;
    let b = EchoServer::start("b").await;
    let c = EchoServer::start("c").await;
    let ra = driver.register_service(target, &a.addr()).await.unwrap();
    let rb = driver.register_service(target, &b.addr()).await.unwrap();

    let (channel, sender) = tonic::transport::Channel::balance_channel(16);
    let probe = sender.clone();
    let feeder = feed(
        Changes::with_driver(target, driver).unwrap(),
        sender,
        http_endpoint,
    );
    let mut served = BTreeSet::new();
    for _ in 0..200 {
        served.insert(say(&channel).await);
        if served.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(served, BTreeSet::from(["a".into(), "b".into()]));
    assert_eq!(in_use(&probe), 1, "the queue is empty after calls");

    // Idle: one instance comes, one goes (its server keeps answering).
    let started = Instant::now();
    let rc = driver.register_service(target, &c.addr()).await.unwrap();
    rb.deregister().await.unwrap();
    wait_for("both changes in tonic's queue", CHANGE_BOUND, || async {
        in_use(&probe) == 3
    })
    .await;
    let queued_after = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(in_use(&probe), 3, "tonic drained its queue while idle");

    // The first call applies the queue before it picks an endpoint.
    let first = say(&channel).await;
    assert_ne!(
        first, "b",
        "the first call after the idle spell reached a removed instance"
    );
    assert_eq!(in_use(&probe), 1, "the first call drains the queue");
    let mut served = BTreeSet::from([first]);
    for _ in 0..200 {
        let server = say(&channel).await;
        assert_ne!(server, "b", "a call reached a removed instance");
        served.insert(server);
        if served.contains("c") && served.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(served, BTreeSet::from(["a".into(), "c".into()]));

    feeder.abort();
    rc.deregister().await.unwrap();
    ra.deregister().await.unwrap();
    queued_after
}
