//! An etcd member cut off from its peers by a network partition while clients still
//! reach it: it loses its leader and learns no more writes. Watches and keep-alives on
//! it must move to a member that has a leader (etcd's `hasleader` stream metadata), as
//! go-zero's watches and clientv3's keep-alives do.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dtmdriver_core::Channel;
use dtmdriver_etcd::EtcdDriver;
use etcd_client::Client;
use test_support::{EtcdCluster, addrs, wait_for};

async fn etcd(endpoints: &[String]) -> Client {
    tokio::time::timeout(Duration::from_secs(5), Client::connect(endpoints, None))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// The member serving `metric` (one stream of ours), waited for up to 5 s.
async fn member_with(cluster: &EtcdCluster, what: &str, count: impl Fn(usize) -> f64) -> usize {
    let mut found = None;
    wait_for(what, Duration::from_secs(5), || {
        found = (0..cluster.len()).find(|&i| count(i) > 0.0);
        std::future::ready(found.is_some())
    })
    .await;
    found.unwrap()
}

/// The other members' client endpoints.
fn others(cluster: &EtcdCluster, isolated: usize) -> Vec<String> {
    (0..cluster.len())
        .filter(|&i| i != isolated)
        .map(|i| cluster.endpoint(i))
        .collect()
}

/// Puts `key`, retrying while the majority settles (an election may follow the cut).
async fn put(client: &Client, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = client.clone();
        match tokio::time::timeout(Duration::from_secs(3), c.put(key, value, None)).await {
            Ok(Ok(_)) => return,
            other => assert!(Instant::now() < deadline, "put {key}: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A resolver whose watch is on the member cut off sees the instances registered with
/// the others: etcd ends the watch on the leaderless member and it resumes elsewhere.
/// Without `hasleader` the watch stays open on the isolated member and sees nothing for
/// as long as the partition lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_a_member_cut_off_from_its_peers_resumes_on_the_others() {
    let cluster = EtcdCluster::start_partitionable(3);
    let endpoints = cluster.endpoints();
    let all = etcd(&endpoints).await;
    let value = |addr: &str| format!(r#"{{"name":"part","address":"{addr}"}}"#);
    put(&all, "/micro/part/127.0.0.1:1", &value("127.0.0.1:1")).await;
    let channel = Channel::builder(&format!("etcd://{}/part", endpoints.join(",")))
        .driver(&EtcdDriver)
        .unwrap()
        .connect()
        .unwrap();
    wait_for("the first instance", Duration::from_secs(5), || async {
        addrs(&channel).len() == 1
    })
    .await;
    let watched = member_with(&cluster, "the member with our watch stream", |i| {
        cluster
            .member_metric(i, "etcd_debugging_mvcc_watch_stream_total")
            .unwrap_or(0.0)
    })
    .await;

    cluster.isolate_member(watched);
    let cut = Instant::now();
    let majority = etcd(&others(&cluster, watched)).await;
    put(&majority, "/micro/part/127.0.0.1:2", &value("127.0.0.1:2")).await;
    // Fails unless the resolver sees it within 15 s.
    wait_for(
        "the instance registered with the others",
        Duration::from_secs(15),
        || async { addrs(&channel).len() == 2 },
    )
    .await;
    eprintln!(
        "member {watched} cut off: the new instance seen {:?} after the cut",
        cut.elapsed()
    );
    cluster.rejoin_member(watched);
}

/// A registration whose keep-alive stream is on the member cut off keeps its lease: the
/// keeper renews through another member well before the TTL runs out, and the key is
/// never deleted. Without `hasleader` the renewals hang in the isolated member's wait
/// for a leader until the keeper gives the stream up at the TTL, and the lease expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_renewing_on_a_member_cut_off_from_its_peers_keeps_its_lease() {
    use dtmdriver_core::Driver;
    let cluster = EtcdCluster::start_partitionable(3);
    let endpoints = cluster.endpoints();
    let registration = EtcdDriver
        .register_service(
            &format!("etcd://{}/keep", endpoints.join(",")),
            "127.0.0.1:7",
        )
        .await
        .unwrap();
    let renewing = member_with(&cluster, "the member with our keep-alive stream", |i| {
        cluster.member_open_streams(i, "LeaseKeepAlive")
    })
    .await;
    let majority = etcd(&others(&cluster, renewing)).await;
    let key = "/micro/keep/127.0.0.1:7";
    let listed = majority.clone().get(key, None).await.unwrap();
    let lease = listed.kvs().first().expect("the registered key").lease();
    let mut events = majority.clone().watch(key, None).await.unwrap();
    let deletes = Arc::new(AtomicUsize::new(0));
    let counted = deletes.clone();
    tokio::spawn(async move {
        while let Ok(Some(resp)) = events.message().await {
            let delete = etcd_client::EventType::Delete;
            if resp.events().iter().any(|e| e.event_type() == delete) {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        }
    });

    cluster.isolate_member(renewing);
    let cut = Instant::now();
    let mut lowest = i64::MAX;
    while cut.elapsed() < Duration::from_secs(15) {
        let mut c = majority.clone();
        if let Ok(Ok(ttl)) =
            tokio::time::timeout(Duration::from_secs(1), c.lease_time_to_live(lease, None)).await
        {
            lowest = lowest.min(ttl.ttl());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("member {renewing} cut off for 15 s: lowest TTL left on the lease {lowest} s of 10");
    cluster.rejoin_member(renewing);
    let deleted = deletes.load(Ordering::SeqCst);
    assert_eq!(
        deleted, 0,
        "the registered key was deleted during the partition"
    );
    assert!(lowest >= 2, "the lease came within {lowest} s of expiring");
    registration.deregister().await.unwrap();
}
