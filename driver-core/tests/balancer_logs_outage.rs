//! The log lines of many endpoints failing at once: a bounded number at WARN, every one
//! at DEBUG.
//!
//! Alone in its test binary: tracing caches per-callsite interest process-wide, and a
//! thread-local subscriber racing other tests' threads can miss events; and the bound
//! is per process.

use std::collections::HashSet;

use test_support::{CapturedLogs, manual_channel, wait_status};

// Current-thread runtime: every connection task runs on this thread, so the
// thread-local subscriber sees all their events.
#[tokio::test]
async fn forty_endpoints_failing_at_once_write_at_most_twenty_warnings() {
    let (logs, _guard) = CapturedLogs::capture();
    // Ports nobody listens on: every dial is refused.
    let dead: Vec<String> = test_support::free_ports(40)
        .into_iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let (channel, resolver) = manual_channel("outage-logs", |b| b);
    resolver.push(&dead.iter().map(String::as_str).collect::<Vec<_>>());
    channel.warm_up();
    wait_status(&channel, "every endpoint ejected", |s| {
        s.endpoints.len() == 40 && s.endpoints.iter().all(|e| e.state == "ejected")
    })
    .await;

    let text = logs.text();
    let ejected = |level: &str| -> Vec<&str> {
        text.lines()
            .filter(|l| l.contains(level) && l.contains("endpoint ejected"))
            .collect()
    };
    let warned = ejected("WARN");
    assert!(
        !warned.is_empty() && warned.len() <= 20,
        "{} WARN lines:\n{text}",
        warned.len()
    );
    assert_eq!(
        logs.count("WARN", "more than 20 endpoint events"),
        1,
        "{text}"
    );
    // Nothing lost: every address's failure is in the log, at WARN or DEBUG.
    let named: HashSet<&String> = dead
        .iter()
        .filter(|a| {
            (warned.iter().chain(&ejected("DEBUG"))).any(|l| l.contains(&format!("addr={a}")))
        })
        .collect();
    assert_eq!(named.len(), 40, "{text}");
}
