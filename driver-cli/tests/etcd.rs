//! `dtmdriver` with `dtm-driver-gozero` against a real, private etcd.

mod common;

use common::Running;

use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use test_support::EtcdServer;

async fn etcd(endpoint: &str) -> Client {
    tokio::time::timeout(Duration::from_secs(5), Client::connect([endpoint], None))
        .await
        .expect("connect timed out")
        .expect("connect")
}

async fn list(client: &mut Client, prefix: &str) -> Vec<(String, String, i64)> {
    let resp = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    resp.kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_string(),
                kv.value_str().unwrap().to_string(),
                kv.lease(),
            )
        })
        .collect()
}

#[tokio::test]
async fn register_writes_the_go_zero_key_and_sigint_removes_it() {
    let server = EtcdServer::start();
    let mut client = etcd(&server.endpoint()).await;
    let target = format!("etcd://{}/trans.rpc", server.endpoint());
    let running = Running::start(&[
        "--driver",
        "dtm-driver-gozero",
        "register",
        &target,
        "127.0.0.1:9000",
    ]);
    let (_, line) = running.next_line(Duration::from_secs(10));
    assert!(line.contains("registered"), "{line}");
    let kvs = list(&mut client, "trans.rpc/").await;
    assert_eq!(kvs.len(), 1, "{kvs:?}");
    let (key, value, lease) = &kvs[0];
    assert_eq!(key, &format!("trans.rpc/{lease}"));
    assert_eq!(value, "127.0.0.1:9000");
    let ttl = client.lease_time_to_live(*lease, None).await.unwrap();
    assert_eq!(ttl.granted_ttl(), 10);

    running.interrupt();
    assert!(
        list(&mut client, "trans.rpc/").await.is_empty(),
        "the key must be gone once dtmdriver exits"
    );
}

#[tokio::test]
async fn resolve_watch_prints_each_change_within_100_ms() {
    let server = EtcdServer::start();
    let mut client = etcd(&server.endpoint()).await;
    let target = format!("etcd://{}/w", server.endpoint());
    let running = Running::start(&[
        "--driver",
        "dtm-driver-gozero",
        "resolve",
        &target,
        "--watch",
    ]);
    let (_, first) = running.next_line(Duration::from_secs(10));
    assert!(first.contains(r#""endpoints":[]"#), "{first}");
    let mut took = Vec::new();
    for i in 1..=20u16 {
        let addr = format!("127.0.0.1:{}", 30000 + i);
        let start = Instant::now();
        client
            .put(format!("w/{i}"), addr.clone(), None)
            .await
            .unwrap();
        let (at, line) = running.next_line(Duration::from_secs(2));
        assert!(line.contains(&addr), "{line}");
        took.push(at.duration_since(start));
    }
    client.delete("w/1", None).await.unwrap();
    let (_, line) = running.next_line(Duration::from_secs(2));
    assert!(!line.contains("127.0.0.1:30001"), "{line}");
    took.sort();
    eprintln!(
        "etcd write -> dtmdriver line: median {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert!(
        took[took.len() - 1] < Duration::from_millis(100),
        "{took:?}"
    );
    running.interrupt();
}

/// A registrar that dies without deregistering leaves a key that expires with its
/// 10 s lease: still there right after the kill, gone within the TTL (plus slack for
/// etcd's lease checker).
#[tokio::test]
async fn sigkill_lets_the_key_expire_within_the_ttl() {
    let server = EtcdServer::start();
    let mut client = etcd(&server.endpoint()).await;
    let target = format!("etcd://{}/killed.rpc", server.endpoint());
    let mut running = Running::start(&[
        "--driver",
        "dtm-driver-gozero",
        "register",
        &target,
        "127.0.0.1:9001",
    ]);
    let (_, line) = running.next_line(Duration::from_secs(10));
    assert!(line.contains("registered"), "{line}");
    running.child.kill().expect("SIGKILL dtmdriver");
    running.child.wait().expect("reap dtmdriver");
    let killed = Instant::now();
    assert_eq!(
        list(&mut client, "killed.rpc/").await.len(),
        1,
        "a killed registrar cannot revoke: the key outlives it"
    );
    let deadline = killed + Duration::from_secs(12);
    loop {
        if list(&mut client, "killed.rpc/").await.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the key did not expire within 12 s of SIGKILL (TTL 10 s)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let expired_after = killed.elapsed();
    assert!(
        expired_after > Duration::from_secs(3),
        "expired after {expired_after:?}: too early for a 10 s lease kept alive every ~3.3 s"
    );
}
