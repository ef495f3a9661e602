//! What a resolver logs about an instance it cannot dial: one WARN naming it, however
//! many answers (each the whole service) and subscribers meet it — not a line per
//! answer per subscriber.
//!
//! Alone in its test binary: tracing caches per-callsite interest process-wide, and a
//! thread-local subscriber racing other tests' threads can miss events.

use std::time::Duration;

use dtmdriver_consul::native::NativeResolver;
use dtmdriver_core::Target;
use dtmdriver_core::resolve::{Resolver, SnapshotSender};
use test_support::{CapturedLogs, ConsulAgent};

// Current-thread runtime: every task runs on this thread, so the thread-local
// subscriber sees all events.
#[tokio::test]
async fn an_undialable_instance_is_one_warn_across_answers_and_subscribers() {
    let (logs, _guard) = CapturedLogs::capture();
    let agent = ConsulAgent::start();
    let put = |body: &str| {
        let (code, text) = agent.api("PUT", "/v1/agent/service/register", body);
        assert_eq!(code, 200, "{text}");
    };
    // No port: consul takes it, no client can dial it.
    put(r#"{"ID":"broken-1","Name":"skip","Address":"127.0.0.1","Port":0}"#);
    let target = Target::parse(&format!("consul://{}/skip?wait=1s", agent.http_addr())).unwrap();
    let mut subscribers = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = SnapshotSender::channel();
        NativeResolver.resolve(&target, tx).unwrap();
        subscribers.push(rx);
    }
    // Five more answers: an instance registered under a new id each time.
    for i in 0..5 {
        put(&format!(
            r#"{{"ID":"ok-{i}","Name":"skip","Address":"127.0.0.1","Port":{}}}"#,
            9000 + i
        ));
        let want = i + 1;
        for rx in &mut subscribers {
            let seen = rx.wait_for(|s| s.endpoints.as_ref().is_some_and(|e| e.len() == want));
            tokio::time::timeout(Duration::from_secs(5), seen)
                .await
                .expect("the answer within 5 s")
                .unwrap();
        }
    }
    let text = logs.text();
    let skipped = |level: &str| {
        text.lines()
            .filter(|l| {
                l.contains(level)
                    && l.contains("skipping a consul instance")
                    && l.contains("broken-1")
            })
            .count()
    };
    assert_eq!(skipped("WARN"), 1, "{text}");
    assert!(
        skipped("DEBUG") >= 5,
        "every later meeting at DEBUG: {text}"
    );
}
