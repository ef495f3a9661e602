//! The log lines of a large change of a channel's endpoints: counted, not one each.
//!
//! Alone in its test binary: tracing caches per-callsite interest process-wide, and a
//! thread-local subscriber racing other tests' threads can miss events.

use test_support::{CapturedLogs, manual_channel, wait_status};

// Current-thread runtime: the thread-local subscriber sees every event.
#[tokio::test]
async fn a_large_change_logs_a_line_per_kind_and_a_small_one_a_line_per_endpoint() {
    let (logs, _guard) = CapturedLogs::capture();
    // Nothing calls the channel, so nothing is dialled: the addresses need no server.
    let addrs: Vec<String> = (0..100)
        .map(|i| format!("127.0.0.1:{}", 20_000 + i))
        .collect();
    let refs = |n: usize| addrs[..n].iter().map(String::as_str).collect::<Vec<_>>();
    let (channel, resolver) = manual_channel("bulk-logs", |b| b);

    resolver.push(&refs(100));
    wait_status(&channel, "100 listed", |s| s.endpoints.len() == 100).await;
    resolver.push(&refs(3));
    wait_status(&channel, "3 left", |s| s.endpoints.len() == 3).await;
    resolver.push(&refs(4));
    wait_status(&channel, "one back", |s| s.endpoints.len() == 4).await;

    let text = logs.text();
    let lines = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    // 100 added: one line counting them, naming the first eight.
    assert_eq!(lines("endpoints added"), 1, "{text}");
    let added = text
        .lines()
        .find(|l| l.contains("endpoints added"))
        .unwrap();
    assert!(
        added.contains("count=100") && added.contains("127.0.0.1:20007 and 92 more"),
        "{added}"
    );
    assert!(!added.contains("127.0.0.1:20008"), "{added}");
    // 97 removed: one line.
    assert_eq!(lines("endpoints removed"), 1, "{text}");
    assert!(text.contains("count=97"), "{text}");
    // One added back: a line of its own, naming it.
    assert_eq!(lines("endpoint added"), 1, "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("endpoint added") && l.contains("127.0.0.1:20003")),
        "{text}"
    );
    assert_eq!(lines("endpoint removed"), 0, "{text}");
}
