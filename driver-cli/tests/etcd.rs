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

/// etcd with authentication and a 2 s `--auth-token-ttl`: the token dtmdriver logged in
/// with is dead by the time SIGINT comes; the key must go at once all the same.
#[tokio::test]
async fn with_etcd_auth_sigint_after_the_token_expired_removes_the_key() {
    let server = EtcdServer::start_with_auth("pw", Some(Duration::from_secs(2)));
    let options = etcd_client::ConnectOptions::new()
        .with_user(EtcdServer::ROOT_USER, "pw")
        .with_auto_token_refresh(true);
    let mut client = tokio::time::timeout(
        Duration::from_secs(5),
        Client::connect([server.endpoint()], Some(options)),
    )
    .await
    .expect("connect timed out")
    .expect("connect as root");
    let target = format!("etcd://root:pw@{}/auth.rpc", server.endpoint());
    let running = Running::start(&[
        "--driver",
        "dtm-driver-gozero",
        "register",
        &target,
        "127.0.0.1:9000",
    ]);
    let (_, line) = running.next_line(Duration::from_secs(10));
    assert!(line.contains("registered"), "{line}");
    assert_eq!(list(&mut client, "auth.rpc/").await.len(), 1);
    tokio::time::sleep(Duration::from_secs(5)).await; // past the token's TTL
    running.interrupt();
    assert!(
        list(&mut client, "auth.rpc/").await.is_empty(),
        "the key must be gone once dtmdriver exits"
    );
}

#[test]
fn with_etcd_auth_and_no_credentials_register_says_to_give_them() {
    let server = EtcdServer::start_with_auth("pw", None);
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dtmdriver"));
    command
        .args(["--driver", "dtm-driver-gozero", "register"])
        .arg(format!("etcd://{}/auth.rpc", server.endpoint()))
        .arg("127.0.0.1:9000")
        .env_remove("DTM_DRIVER")
        .env("RUST_LOG", "error");
    let out = common::run_bounded(command, "dtmdriver register");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("USER:PASSWORD@"), "{stderr}");
    assert!(!stderr.contains("is etcd running"), "{stderr}");
}
