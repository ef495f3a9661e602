//! What the lease keeper logs while etcd is down: one WARN with the fix when the outage
//! starts, the retries at DEBUG, one INFO when the key holds again — not a line per retry.
//!
//! Alone in its test binary: tracing caches per-callsite interest process-wide, and a
//! thread-local subscriber racing other tests' threads can miss events.

use std::time::Duration;

use dtmdriver_etcd::{EtcdConfig, LeaseKeeper, shared_client};
use test_support::{CapturedLogs, EtcdServer};

/// The captured lines of the lease keeper at `level` that hold `text`.
fn lines(logs: &CapturedLogs, level: &str, text: &str) -> Vec<String> {
    logs.text()
        .lines()
        .filter(|l| l.contains(level) && l.contains("dtmdriver_etcd::lease") && l.contains(text))
        .map(str::to_string)
        .collect()
}

// Current-thread runtime: every task runs on this thread, so the thread-local
// subscriber sees all events.
#[tokio::test]
async fn an_outage_is_one_warn_with_the_fix_and_one_info() {
    let (logs, _guard) = CapturedLogs::capture();

    let mut server = EtcdServer::start_with_auth("pw", None);
    let config = EtcdConfig::new([server.endpoint()]).with_user(EtcdServer::ROOT_USER, "pw");
    let client = shared_client(&config).await.expect("client");
    let registration = LeaseKeeper::new(client, |_| "logs/a".to_string(), "127.0.0.1:7001")
        .ttl(Duration::from_secs(2))
        .start(
            &format!("etcd://{}/logs", server.endpoint()),
            "127.0.0.1:7001",
        )
        .await
        .expect("register");
    tokio::time::sleep(Duration::from_secs(1)).await; // past etcd's backend commit

    server.kill();
    // Let the keeper notice and retry for a while (its backoff tops out at 500 ms).
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart();
    let mut health = registration.watch_health();
    tokio::time::timeout(Duration::from_secs(3), health.wait_for(|s| s.is_live()))
        .await
        .expect("not live again within 3 s")
        .unwrap();

    let warns = lines(&logs, "WARN", "");
    assert_eq!(warns.len(), 1, "one WARN per outage: {warns:#?}");
    assert!(
        warns[0].contains("is etcd running"),
        "the WARN names no fix: {}",
        warns[0]
    );
    let retries = lines(&logs, "DEBUG", "not restored yet");
    assert!(retries.len() >= 3, "the retries: {retries:#?}");
    let resumed = lines(&logs, "INFO", "resumed");
    assert_eq!(resumed.len(), 1, "{resumed:#?}");
    registration.deregister().await.expect("deregister");
}
