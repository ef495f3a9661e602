//! Garbage under a watched prefix is logged once, when it is written, and shortened:
//! it cannot flood the logs of every process that watches the prefix.
//!
//! Alone in its test binary: tracing caches per-callsite interest process-wide, and a
//! thread-local subscriber racing other tests' threads can miss events.

use std::time::Duration;

use dtmdriver_core::{Channel, Driver, Policy};
use dtmdriver_etcd::EtcdDriver;
use etcd_client::Client;
use test_support::{CapturedLogs, EchoServer, EtcdServer, addrs, wait_for};

// Current-thread runtime: every task runs on this thread, so the thread-local
// subscriber sees all events.
#[tokio::test]
async fn garbage_values_are_logged_once_and_shortened() {
    let (logs, _guard) = CapturedLogs::capture();

    let server = EtcdServer::start();
    let ep = server.endpoint();
    let mut client = tokio::time::timeout(Duration::from_secs(5), Client::connect([&ep], None))
        .await
        .expect("connect timed out")
        .expect("connect");
    // Three 1 MiB values that are not instances.
    let garbage = "x".repeat(1 << 20);
    for i in 0..3 {
        client
            .put(format!("/micro/flood/junk{i}"), garbage.as_str(), None)
            .await
            .unwrap();
    }
    let channel = Channel::builder(&format!("etcd://{ep}/flood"))
        .driver(&EtcdDriver)
        .unwrap()
        .policy(Policy::RoundRobin)
        .connect()
        .unwrap();
    channel.warm_up();

    // Twenty changes of valid instances under the same prefix.
    let servers: Vec<EchoServer> = {
        let mut v = Vec::new();
        for i in 0..4 {
            v.push(EchoServer::start(&format!("flood{i}")).await);
        }
        v
    };
    let mut registrations = Vec::new();
    for round in 0..5 {
        for s in &servers {
            registrations.push(
                EtcdDriver
                    .register_service(&format!("etcd://{ep}/flood"), &s.addr())
                    .await
                    .unwrap(),
            );
        }
        let expected = servers.len();
        wait_for("all instances listed", Duration::from_secs(5), || async {
            addrs(&channel).len() == expected
        })
        .await;
        if round < 4 {
            for r in registrations.drain(..) {
                r.deregister().await.unwrap();
            }
            wait_for("all instances gone", Duration::from_secs(5), || async {
                addrs(&channel).is_empty()
            })
            .await;
        }
    }

    let text = logs.text();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("not a valid instance"))
        .collect();
    assert_eq!(
        warnings.len(),
        3,
        "each garbage key is logged once, when it is read: {warnings:#?}"
    );
    for w in &warnings {
        assert!(
            w.len() < 1024,
            "a warning carries the whole value: {} bytes",
            w.len()
        );
        assert!(
            w.contains("(1048576 bytes)"),
            "says how long the value is: {w}"
        );
    }
    // What the engine itself logs above DEBUG (the capture also holds every level of
    // every dependency).
    let ours: usize = text
        .lines()
        .filter(|l| l.contains("dtmdriver_etcd") && (l.contains(" WARN ") || l.contains(" INFO ")))
        .map(str::len)
        .sum();
    assert!(ours < 64 * 1024, "{ours} bytes of log for 40 changes");
}
