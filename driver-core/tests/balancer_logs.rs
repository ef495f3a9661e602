//! Channel status and tracing events over an endpoint's life: added, ejected,
//! readmitted, removed.
//!
//! Alone in its test binary: tracing caches per-callsite interest process-wide, and a
//! thread-local subscriber racing other tests' threads can miss events.

use test_support::{
    CapturedLogs, EchoServer, free_port, manual_channel, say, state_of, wait_status,
};

// Current-thread runtime: every task (connection tasks included) runs on this thread,
// so the thread-local subscriber sees all events.
#[tokio::test]
async fn status_and_logs_follow_the_endpoint_lifecycle() {
    let (logs, _guard) = CapturedLogs::capture();

    let live = EchoServer::start("obs-live").await;
    let dead_port = free_port();
    let dead_addr = format!("127.0.0.1:{dead_port}");
    let (channel, resolver) = manual_channel("obs", |b| b);
    let status = channel.status();
    assert!(
        !status.resolved && status.endpoints.is_empty(),
        "{status:?}"
    );

    resolver.push(&[&live.addr(), &dead_addr]);
    wait_status(&channel, "both listed", |s| {
        s.resolved && s.endpoints.len() == 2
    })
    .await;
    assert_eq!(say(&channel).await.unwrap(), "obs-live");
    wait_status(&channel, "dead ejected", |s| {
        state_of(s, &dead_addr) == Some("ejected") && state_of(s, &live.addr()) == Some("ready")
    })
    .await;
    let status = channel.status();
    let dead = status
        .endpoints
        .iter()
        .find(|e| e.endpoint.addr == dead_addr)
        .unwrap();
    assert!(
        dead.error.as_deref().unwrap_or("").contains(&dead_addr),
        "{dead:?}"
    );

    let _revived = EchoServer::start_on("obs-revived", dead_port).await;
    wait_status(&channel, "dead readmitted", |s| {
        state_of(s, &dead_addr) == Some("ready")
    })
    .await;
    resolver.push(&[&live.addr()]);
    wait_status(&channel, "dead removed", |s| s.endpoints.len() == 1).await;

    let text = logs.text();
    for event in [
        "endpoint added",
        "endpoint ejected",
        "endpoint readmitted",
        "endpoint removed",
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(event) && l.contains(&dead_addr));
        assert!(
            line.is_some(),
            "no `{event}` event for {dead_addr} in:\n{text}"
        );
    }
}
