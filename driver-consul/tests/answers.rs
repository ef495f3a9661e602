//! Health answers of any size against a real consul agent (issue #12): an answer
//! larger than the watcher reads is an error said once, not a loop of re-reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dtmdriver_consul::{ConsulConfig, HealthQuery, HealthState, HealthWatcher};
use test_support::{ConsulAgent, synthetic_addr};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A loopback TCP forwarder to `to` that counts the connections made through it.
async fn counting_forwarder(to: String) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let to = to.clone();
            tokio::spawn(async move {
                if let Ok(mut agent) = TcpStream::connect(&to).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut agent).await;
                }
            });
        }
    });
    (addr, count)
}

/// Waits up to 10 s for a state satisfying `want`.
async fn wait_state(rx: &mut watch::Receiver<HealthState>, want: impl Fn(&HealthState) -> bool) {
    let found = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| want(s)))
        .await
        .is_ok();
    assert!(found, "no such state in 10 s: {:?}", rx.borrow().error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_the_limit_is_an_error_said_once_and_read_again_on_a_change() {
    const INSTANCES: usize = 2_000; // an answer of about 2 MB
    let agent = ConsulAgent::start();
    let entry = |i: usize| {
        let addr = synthetic_addr(i);
        let host = addr.trim_end_matches(":8080");
        format!(r#"{{"ID":"big-{i}","Service":"big","Address":"{host}","Port":8080}}"#)
    };
    let entries: Vec<String> = (0..INSTANCES).map(entry).collect();
    agent.catalog_services("many-instances", "set", &entries);

    let (via, connections) = counting_forwarder(agent.http_addr()).await;
    let mut query = HealthQuery::new(ConsulConfig::new(via), "big");
    query.wait = Duration::from_secs(14);
    query.max_answer = 1 << 20;
    let mut rx = HealthWatcher::subscribe(&query).receiver();
    wait_state(&mut rx, |s| s.error.is_some()).await;
    let error = rx.borrow().error.clone().unwrap_or_default();
    assert!(
        error.contains("with more than 1048576 bytes") && error.contains("?tag="),
        "{error}"
    );
    assert!(rx.borrow().entries.is_none());

    // Once said, the watcher waits on the answer's index: one connection for the
    // refused answer, one for the blocking query, none more while nothing changes
    // (a retry loop would open one a second or more).
    rx.borrow_and_update();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !rx.has_changed().unwrap(),
        "published again: {:?}",
        rx.borrow().error
    );
    let made = connections.load(Ordering::SeqCst);
    assert!(
        made <= 2,
        "{made} connections in 3 s: the answer is read again and again"
    );

    // A change that makes the answer fit is read at once.
    let keep = 10;
    agent.catalog_services("many-instances", "delete", &entries[keep..]);
    wait_state(&mut rx, |s| {
        s.error.is_none() && s.entries.as_ref().is_some_and(|e| e.len() == keep)
    })
    .await;
}
