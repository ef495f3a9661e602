//! What the prefix watcher logs when etcd goes away: one WARN per outage, not one per
//! retry (issue #11 items 7 and 8). That the process's own shutdown logs nothing is
//! checked on the binary, in `driver-cli/tests/quiet.rs`.
//!
//! Alone in its test binary: tracing caches per-callsite interest process-wide, and a
//! thread-local subscriber racing other tests' threads can miss events.

use std::time::{Duration, Instant};

use dtmdriver_core::Channel;
use dtmdriver_etcd::EtcdDriver;
use test_support::{CapturedLogs, EtcdServer};

/// Waits (bounded) until `f` holds.
async fn until(what: &str, within: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// Current-thread runtime: every task runs on this thread, so the thread-local
// subscriber sees all events.
#[tokio::test]
async fn an_outage_is_one_warning_and_the_next_outage_another() {
    let (logs, _guard) = CapturedLogs::capture();

    let mut server = EtcdServer::start();
    let channel = Channel::builder(&format!("etcd://{}/quiet", server.endpoint()))
        .driver(&EtcdDriver)
        .unwrap()
        .connect()
        .unwrap();
    until("resolved", Duration::from_secs(10), || {
        channel.status().resolved
    })
    .await;
    const INTERRUPTED: &str = "etcd watch interrupted";

    for outage in 1..=2 {
        server.kill();
        until("the outage reported", Duration::from_secs(5), || {
            logs.count("WARN", INTERRUPTED) >= outage
        })
        .await;
        // Retries go on every ≤ 500 ms, at DEBUG: a few seconds down is still one WARN.
        until("retries logged", Duration::from_secs(5), || {
            logs.count("DEBUG", INTERRUPTED) >= 3 * outage
        })
        .await;
        assert_eq!(logs.count("WARN", INTERRUPTED), outage);
        assert!(
            logs.count("WARN", "endpoint ejected") <= outage,
            "one connection warning per outage, got {}",
            logs.count("WARN", "endpoint ejected")
        );
        assert!(channel.status().resolver_error.is_some());
        server.restart();
        until("the watch is back", Duration::from_secs(10), || {
            channel.status().resolver_error.is_none()
        })
        .await;
    }
}
