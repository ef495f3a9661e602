//! The log lines of many endpoints failing at once: a bounded number at WARN, every one
//! at DEBUG.
//!
//! Alone in its test binary: tracing caches per-callsite interest process-wide, and a
//! thread-local subscriber racing other tests' threads can miss events; and the bound
//! is per process.

use std::collections::HashSet;

use test_support::{CapturedLogs, refused_channel};

// Current-thread runtime: every connection task runs on this thread, so the
// thread-local subscriber sees all their events.
#[tokio::test]
async fn forty_endpoints_failing_at_once_write_at_most_twenty_warnings() {
    let (logs, _guard) = CapturedLogs::capture();
    // Ports nobody listens on: every dial is refused.
    let (_channel, dead) = refused_channel("outage-logs", 40).await;

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
