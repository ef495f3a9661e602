//! Smoke tests of the private etcd processes, driven through the real `etcd-client` crate.

use std::future::Future;
use std::time::Duration;

use etcd_client::Client;
use test_support::{EtcdCluster, EtcdServer};

/// Bound on any single client call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounded retries while a restarted server / re-elected cluster comes back.
const RETRY_ATTEMPTS: usize = 100;
const RETRY_PAUSE: Duration = Duration::from_millis(100);

async fn connect(endpoints: &[String]) -> Client {
    tokio::time::timeout(CALL_TIMEOUT, Client::connect(endpoints, None))
        .await
        .expect("connecting timed out")
        .expect("connect")
}

/// Runs `op` until it succeeds, at most `RETRY_ATTEMPTS` times, each call bounded by
/// `CALL_TIMEOUT`.
async fn retry<T, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let mut last = String::new();
    for _ in 0..RETRY_ATTEMPTS {
        match tokio::time::timeout(CALL_TIMEOUT, op()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(err)) => last = err.to_string(),
            Err(_) => last = "timed out".to_owned(),
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    panic!("{what} did not succeed after {RETRY_ATTEMPTS} attempts; last error: {last}");
}

async fn get_value(client: &mut Client, key: &str) -> Option<Vec<u8>> {
    let response = tokio::time::timeout(CALL_TIMEOUT, client.get(key, None))
        .await
        .expect("get timed out")
        .expect("get");
    response.kvs().first().map(|kv| kv.value().to_vec())
}

#[tokio::test]
async fn put_then_get() {
    let server = EtcdServer::start();
    assert_eq!(server.endpoint(), format!("127.0.0.1:{}", server.port()));
    assert_eq!(server.url(), format!("http://127.0.0.1:{}", server.port()));

    let mut client = connect(&[server.endpoint()]).await;
    tokio::time::timeout(CALL_TIMEOUT, client.put("smoke/key", "value", None))
        .await
        .expect("put timed out")
        .expect("put");
    assert_eq!(
        get_value(&mut client, "smoke/key").await.as_deref(),
        Some(&b"value"[..]),
        "etcd log:\n{}",
        server.log_contents()
    );
    assert_eq!(get_value(&mut client, "smoke/missing").await, None);
}

#[tokio::test]
async fn url_form_also_connects() {
    let server = EtcdServer::start();
    let mut client = connect(&[server.url()]).await;
    tokio::time::timeout(CALL_TIMEOUT, client.put("k", "v", None))
        .await
        .expect("put timed out")
        .expect("put");
    assert_eq!(
        get_value(&mut client, "k").await.as_deref(),
        Some(&b"v"[..])
    );
}

#[tokio::test]
async fn data_survives_kill_and_restart_on_the_same_port() {
    let mut server = EtcdServer::start();
    let port = server.port();
    let data_dir = server.data_dir();
    let mut client = connect(&[server.endpoint()]).await;
    tokio::time::timeout(CALL_TIMEOUT, client.put("durable", "yes", None))
        .await
        .expect("put timed out")
        .expect("put");

    // Kill with the client's connection open, so the port has live / TIME_WAIT state
    // when etcd binds it again.
    let pid = server.pid().expect("running");
    server.kill();
    assert!(!server.is_running());
    assert_eq!(server.pid(), None);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "killed etcd {pid} was not reaped"
    );
    assert!(data_dir.exists(), "kill must keep the data directory");
    let while_down = tokio::time::timeout(CALL_TIMEOUT, client.get("durable", None)).await;
    assert!(
        !matches!(while_down, Ok(Ok(_))),
        "a get succeeded while etcd was killed"
    );

    server.restart();
    assert!(server.is_running());
    assert_eq!(server.port(), port, "restart must reuse the client port");

    // The same client reconnects by itself.
    let response = retry("get after restart", || {
        let mut client = client.clone();
        async move { client.get("durable", None).await }
    })
    .await;
    let values: Vec<&[u8]> = response.kvs().iter().map(|kv| kv.value()).collect();
    assert_eq!(
        values,
        vec![&b"yes"[..]],
        "etcd log:\n{}",
        server.log_contents()
    );
    assert!(server.log_contents().contains("### test-support: starting"));
}

#[tokio::test]
async fn dropping_the_server_kills_the_process_and_removes_its_directory() {
    let server = EtcdServer::start();
    let pid = server.pid().expect("running");
    let data_dir = server.data_dir();
    drop(server);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "dropped etcd {pid} is still around (or a zombie)"
    );
    assert!(!data_dir.exists(), "data directory was not removed");
}

#[tokio::test]
async fn cluster_survives_losing_a_member() {
    let mut cluster = EtcdCluster::start(3);
    assert_eq!(cluster.len(), 3);
    let endpoints = cluster.endpoints();
    assert_eq!(endpoints.len(), 3);

    let mut via_0 = connect(&endpoints[0..1]).await;
    tokio::time::timeout(CALL_TIMEOUT, via_0.put("cluster/key", "replicated", None))
        .await
        .expect("put timed out")
        .expect("put");

    cluster.kill_member(0);
    assert!(!cluster.is_member_running(0));

    // Member 0 may have been the leader: allow a bounded re-election.
    let via_1 = connect(&endpoints[1..2]).await;
    let response = retry("get via member 1", || {
        let mut client = via_1.clone();
        async move { client.get("cluster/key", None).await }
    })
    .await;
    let values: Vec<&[u8]> = response.kvs().iter().map(|kv| kv.value()).collect();
    assert_eq!(
        values,
        vec![&b"replicated"[..]],
        "member 1 log:\n{}",
        cluster.member_log_contents(1)
    );

    // A write while member 0 is down, then member 0 comes back and catches up.
    retry("put via member 1", || {
        let mut client = via_1.clone();
        async move { client.put("cluster/while-down", "caught-up", None).await }
    })
    .await;
    cluster.restart_member(0);
    assert!(cluster.is_member_running(0));
    let response = retry("get via restarted member 0", || {
        let mut client = via_0.clone();
        async move { client.get("cluster/while-down", None).await }
    })
    .await;
    let values: Vec<&[u8]> = response.kvs().iter().map(|kv| kv.value()).collect();
    assert_eq!(
        values,
        vec![&b"caught-up"[..]],
        "member 0 log:\n{}",
        cluster.member_log_contents(0)
    );
}
