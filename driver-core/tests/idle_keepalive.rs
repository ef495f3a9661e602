//! Idle connections that ping while idle (`keepalive_while_idle`) cost the process's
//! liveness sweeper nothing between their keepalive pings, and still ping on time.
//! A test binary of its own: the sweeper's check count is process-wide.

use std::time::{Duration, Instant};

use dtmdriver_core::__private::liveness_checks;
use dtmdriver_core::Channel;
use test_support::{EchoClient, EchoServer, SayRequest};

const N: usize = 16;

/// One echo call through `channel`, failing the test with `what` if it fails or
/// hangs for 10 s.
async fn say(channel: &Channel, what: &str) {
    let mut client = EchoClient::new(channel.clone());
    let call = client.say(SayRequest {
        message: "hi".into(),
    });
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for 10 s"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

/// A channel over `servers` pinging every `interval`, idle or not, each endpoint
/// connected and called once.
async fn idle_channel(servers: &[EchoServer], interval: Duration) -> Channel {
    let addrs: Vec<String> = servers.iter().map(EchoServer::addr).collect();
    let channel = Channel::builder(&format!("direct:///{}", addrs.join(",")))
        .keepalive(interval)
        .keepalive_while_idle(true)
        .connect()
        .expect("a direct channel");
    channel.warm_up();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let s = channel.status();
        if s.endpoints.len() == N && s.endpoints.iter().all(|e| e.state == "ready") {
            break;
        }
        assert!(Instant::now() < until, "not all ready in 20 s: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..N {
        say(&channel, "a call").await;
    }
    channel
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_checked_when_a_ping_is_due_not_every_tick() {
    let mut servers = Vec::new();
    for i in 0..N {
        servers.push(EchoServer::start(&format!("idle-{i}")).await);
    }

    // A 30 s keepalive: between two pings an idle connection has nothing due. The
    // sweeper ticks every 50 ms; visiting each connection each tick made 20 checks a
    // connection a second (320 here).
    let quiet = idle_channel(&servers, Duration::from_secs(30)).await;
    // The calls' connections are watched until a check finds them idle (a tick).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = liveness_checks();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let checks = liveness_checks() - before;
    // At most a late first check each (a loaded machine), never a tick's worth.
    assert!(
        checks < 2 * N as u64,
        "{checks} checks of {N} idle connections in 1 s with nothing due"
    );
    // Calls on a set-aside connection are watched again and answered.
    say(&quiet, "a call on a set-aside connection").await;
    drop(quiet);

    // A 200 ms keepalive: set-aside connections still ping on time, each about 5
    // times a second (setting aside that lost them would leave this near 0).
    let pinging = idle_channel(&servers, Duration::from_millis(200)).await;
    let probes = |c: &Channel| c.status().endpoints.iter().map(|e| e.probes).sum::<u64>();
    let before = probes(&pinging);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pings = probes(&pinging) - before;
    // 2 s / 200 ms = 10 a connection; a loaded machine wakes the sweeper late.
    assert!(
        pings >= 6 * N as u64,
        "{pings} keepalive pings from {N} idle connections in 2 s at 200 ms"
    );
    let status = pinging.status();
    assert!(
        status
            .endpoints
            .iter()
            .all(|e| e.state == "ready" && e.connects == 1),
        "{status:?}"
    );
}
