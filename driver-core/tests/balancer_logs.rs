//! Channel status and tracing events over an endpoint's life: added, ejected,
//! readmitted, removed.
//!
//! Alone in its test binary: tracing caches per-callsite interest process-wide, and a
//! thread-local subscriber racing other tests' threads can miss events.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driver_core::resolve::{Resolver, SnapshotSender};
use driver_core::{Channel, ChannelStatus, Endpoint, Target};
use test_support::{EchoServer, free_port, say};

/// A resolver the test feeds by hand.
#[derive(Default)]
struct TestResolver {
    sender: Mutex<Option<SnapshotSender>>,
    resolves: AtomicUsize,
}

impl Resolver for TestResolver {
    fn resolve(&self, _target: &Target, updates: SnapshotSender) -> driver_core::Result<()> {
        self.resolves.fetch_add(1, Ordering::SeqCst);
        *self.sender.lock().unwrap() = Some(updates);
        Ok(())
    }
}

impl TestResolver {
    fn push(&self, addrs: &[&str]) {
        let sender = self
            .sender
            .lock()
            .unwrap()
            .clone()
            .expect("resolve was called");
        sender.update(addrs.iter().map(|a| Endpoint::new(*a)).collect());
    }
}

fn channel(test: &str) -> (Channel, Arc<TestResolver>) {
    let resolver = Arc::new(TestResolver::default());
    let channel = Channel::builder(&format!("test:///{test}-{}", free_port()))
        .resolver(resolver.clone())
        .connect_timeout(Duration::from_secs(2))
        .backoff_max(Duration::from_millis(500))
        .connect()
        .expect("connect");
    (channel, resolver)
}

async fn wait_status(channel: &Channel, what: &str, check: impl Fn(&ChannelStatus) -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let status = channel.status();
        if check(&status) {
            return;
        }
        assert!(
            Instant::now() < until,
            "timed out waiting for {what}; status: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn state_of<'a>(status: &'a ChannelStatus, addr: &str) -> Option<&'a str> {
    status
        .endpoints
        .iter()
        .find(|e| e.endpoint.addr == addr)
        .map(|e| e.state)
}

/// Collects formatted tracing output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// Current-thread runtime: every task (connection tasks included) runs on this thread,
// so the thread-local subscriber sees all events.
#[tokio::test]
async fn status_and_logs_follow_the_endpoint_lifecycle() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let live = EchoServer::start("obs-live").await;
    let dead_port = free_port();
    let dead_addr = format!("127.0.0.1:{dead_port}");
    let (channel, resolver) = channel("obs");
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
