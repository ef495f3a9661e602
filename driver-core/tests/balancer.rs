//! The balancing channel against in-process echo servers on loopback.
//!
//! Each test drives its channel through a [`ManualResolver`] whose snapshots the test
//! pushes by hand, and uses its own target string (channels are shared per target).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dtmdriver_core::resolve::{Resolver, SnapshotSender};
use dtmdriver_core::{Channel, Endpoint, Policy, Target};
use test_support::{
    Behavior, EchoClient, EchoServer, ManualResolver, SayRequest, free_port, manual_channel, say,
    state_of, wait_status,
};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;

/// A unique target string per test (channels are shared per target).
fn target(test: &str) -> String {
    format!("test:///{test}-{}", free_port())
}

async fn say_within(channel: &Channel, timeout: Option<Duration>) -> Result<String, tonic::Status> {
    let mut req = tonic::Request::new(SayRequest {
        message: "hi".into(),
    });
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    // A hang must fail the test, not stall the suite.
    match tokio::time::timeout(
        Duration::from_secs(20),
        EchoClient::new(channel.clone()).say(req),
    )
    .await
    {
        Ok(r) => r.map(|r| r.into_inner().server),
        Err(_) => panic!("a call hung for 20 s"),
    }
}

/// Waits (bounded) until `check` holds for the channel's status.
async fn all_ready(channel: &Channel, n: usize) {
    channel.warm_up();
    wait_status(channel, "every endpoint ready", |s| {
        s.endpoints.len() == n && s.endpoints.iter().all(|e| e.state == "ready")
    })
    .await;
}

/// Sends `calls` calls, `concurrency` at a time, and counts replies per server.
async fn spread(channel: &Channel, calls: usize, concurrency: usize) -> HashMap<String, usize> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let channel = channel.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen: HashMap<String, usize> = HashMap::new();
            while next.fetch_add(1, Ordering::SeqCst) < calls {
                let server = match say(&channel).await {
                    Ok(s) => s,
                    Err(s) if s.message().contains("fails on purpose") => s
                        .message()
                        .split(' ')
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                    Err(s) => panic!("unexpected failure: {s:?}"),
                };
                *seen.entry(server).or_default() += 1;
            }
            seen
        }));
    }
    let mut total = HashMap::new();
    for t in tasks {
        for (k, v) in t.await.unwrap() {
            *total.entry(k).or_default() += v;
        }
    }
    total
}

/// `server` took `want` calls, within 2%.
fn about(counts: &HashMap<String, usize>, server: &str, want: usize) {
    let got = counts.get(server).copied().unwrap_or(0);
    assert!(
        got.abs_diff(want) <= want / 50,
        "{server}: {got} calls, want {want}; {counts:?}"
    );
}

fn share(counts: &HashMap<String, usize>, server: &str) -> f64 {
    let all: usize = counts.values().sum();
    *counts.get(server).unwrap_or(&0) as f64 * 100.0 / all as f64
}

// 1. Before the first resolution.

#[tokio::test]
async fn first_call_waits_for_resolution_then_fails_with_resolver_error() {
    let (channel, resolver) = manual_channel("unresolved", |b| {
        b.resolve_timeout(Duration::from_millis(400))
    });
    resolver.fail("registry down: etcd at 127.0.0.1:1 refused");
    let started = Instant::now();
    let err = say(&channel).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message()
            .contains("registry down: etcd at 127.0.0.1:1 refused"),
        "{err:?}"
    );
    assert!(
        took >= Duration::from_millis(350),
        "gave up early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "waited too long: {took:?}");
}

#[tokio::test]
async fn first_call_waits_for_a_late_resolution_and_succeeds() {
    let server = EchoServer::start("late").await;
    let (channel, resolver) = manual_channel("late-resolution", |b| {
        b.resolve_timeout(Duration::from_secs(5))
    });
    let addr = server.addr();
    let pusher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        resolver.push(&[&addr]);
    });
    assert_eq!(say(&channel).await.unwrap(), "late");
    pusher.await.unwrap();
}

// 2. Empty set: fail fast, or wait for ready.

#[tokio::test]
async fn empty_set_fails_fast_naming_the_target() {
    let (channel, resolver) = manual_channel("empty", |b| b);
    resolver.push(&[]);
    wait_status(&channel, "resolved", |s| s.resolved).await;
    let started = Instant::now();
    let err = say(&channel).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains(channel.target()), "{err:?}");
    assert!(took < Duration::from_millis(50), "took {took:?}");
}

#[tokio::test]
async fn every_endpoint_failing_fails_naming_a_few_and_counting_the_rest() {
    // Ports nobody listens on: every dial is refused.
    let (channel, dead) = test_support::refused_channel("all-failing", 40).await;
    let err = say(&channel).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let message = err.message();
    assert!(
        message.contains("all 40 endpoints are unreachable"),
        "{message}"
    );
    let named = dead.iter().filter(|a| message.contains(a.as_str())).count();
    assert_eq!(named, 5, "{message}");
    assert!(message.ends_with("; and 35 more failing"), "{message}");
}

#[tokio::test]
async fn wait_for_ready_waits_until_an_endpoint_appears() {
    let server = EchoServer::start("wfr").await;
    let (channel, resolver) = manual_channel("wait-for-ready", |b| b.wait_for_ready(true));
    resolver.push(&[]);
    let addr = server.addr();
    let pusher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        resolver.push(&[&addr]);
    });
    let started = Instant::now();
    let reply = say_within(&channel, Some(Duration::from_secs(10))).await;
    assert_eq!(reply.unwrap(), "wfr");
    assert!(started.elapsed() >= Duration::from_millis(250));
    pusher.await.unwrap();
}

#[tokio::test]
async fn wait_for_ready_ends_at_the_deadline() {
    let (channel, resolver) = manual_channel("wait-for-ready-deadline", |b| {
        b.wait_for_ready(true)
            .resolve_timeout(Duration::from_secs(30))
    });
    resolver.push(&[]);
    let started = Instant::now();
    let err = say_within(&channel, Some(Duration::from_millis(300)))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(took >= Duration::from_millis(250), "took {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "hung past the deadline: {took:?}"
    );
}

// 3. Failover, ejection and readmission.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_endpoint_never_fails_a_call_and_is_readmitted() {
    let live = EchoServer::start("live").await;
    let dead_port = free_port();
    let dead_addr = format!("127.0.0.1:{dead_port}");
    let (channel, resolver) = manual_channel("failover", |b| b);
    resolver.push(&[&dead_addr, &live.addr()]);
    let mut failures = Vec::new();
    for _ in 0..200 {
        match say(&channel).await {
            Ok(server) => assert_eq!(server, "live"),
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures: {failures:?}",
        failures.len()
    );
    let status = channel.status();
    let dead = status
        .endpoints
        .iter()
        .find(|e| e.endpoint.addr == dead_addr)
        .unwrap();
    assert_eq!(dead.state, "ejected", "{status:?}");
    assert!(
        dead.error.is_some() && dead.retry_in_ms.is_some(),
        "{dead:?}"
    );

    let revived = EchoServer::start_on("revived", dead_port).await;
    let until = Instant::now() + Duration::from_secs(15);
    while revived.calls() == 0 {
        assert!(
            Instant::now() < until,
            "the revived endpoint got no traffic"
        );
        assert!(say(&channel).await.is_ok());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(state_of(&channel.status(), &dead_addr), Some("ready"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_going_down_under_traffic_fails_no_call() {
    let mut doomed = EchoServer::start("down-doomed").await;
    let steady = EchoServer::start("down-steady").await;
    let (channel, resolver) = manual_channel("down", |b| b);
    resolver.push(&[&doomed.addr(), &steady.addr()]);
    all_ready(&channel, 2).await;
    let traffic = {
        let channel = channel.clone();
        tokio::spawn(async move {
            let mut failures = Vec::new();
            for _ in 0..300 {
                if let Err(e) = say(&channel).await {
                    failures.push(e);
                }
            }
            failures
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    doomed.stop().await;
    let failures = traffic.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} failures: {failures:?}",
        failures.len()
    );
    assert!(steady.calls() > 0 && doomed.calls() > 0);
}

// 4. Changes apply while idle; pushes never block.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_channel_applies_changes_without_traffic() {
    let a = EchoServer::start("idle-a").await;
    let b = EchoServer::start("idle-b").await;
    let (channel, resolver) = manual_channel("idle", |b| b);
    resolver.push(&[&a.addr()]);
    assert_eq!(say(&channel).await.unwrap(), "idle-a");

    resolver.push(&[&a.addr(), &b.addr()]);
    // No call from here on until the check: the status must show `b` connected.
    wait_status(&channel, "b listed and connected without traffic", |s| {
        state_of(s, &b.addr()) == Some("ready")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut servers = Vec::new();
    for _ in 0..4 {
        servers.push(say(&channel).await.unwrap());
    }
    assert!(servers.iter().any(|s| s == "idle-b"), "{servers:?}");
    assert!(servers.iter().any(|s| s == "idle-a"), "{servers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_changes_never_block_the_resolver() {
    let a = EchoServer::start("burst-a").await;
    let b = EchoServer::start("burst-b").await;
    let (channel, resolver) = manual_channel("burst", |b| b);
    let sender = resolver.sender();
    let started = Instant::now();
    for i in 0..10_000 {
        let set = if i % 2 == 0 { &a } else { &b };
        sender.update(vec![Endpoint::new(set.addr())]);
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "10 000 pushes took {took:?}");
    // The last set (b) wins, and the channel serves it.
    wait_status(&channel, "the last set applied", |s| {
        s.endpoints.len() == 1 && s.endpoints[0].endpoint.addr == b.addr()
    })
    .await;
    assert_eq!(say(&channel).await.unwrap(), "burst-b");
}

// 5. Resolver errors keep the last set.

#[tokio::test]
async fn resolver_error_keeps_the_last_set_until_recovery() {
    let a = EchoServer::start("keep-a").await;
    let b = EchoServer::start("keep-b").await;
    let (channel, resolver) = manual_channel("keep", |b| b);
    resolver.push(&[&a.addr()]);
    assert_eq!(say(&channel).await.unwrap(), "keep-a");

    resolver.fail("registry down");
    wait_status(&channel, "the error reported", |s| {
        s.resolver_error.as_deref() == Some("registry down")
    })
    .await;
    for _ in 0..20 {
        assert_eq!(say(&channel).await.unwrap(), "keep-a");
    }
    assert_eq!(channel.status().endpoints.len(), 1);

    resolver.push(&[&b.addr()]);
    wait_status(&channel, "recovery applied", |s| {
        s.resolver_error.is_none() && s.endpoints.len() == 1 && state_of(s, &b.addr()).is_some()
    })
    .await;
    for _ in 0..20 {
        assert_eq!(say(&channel).await.unwrap(), "keep-b");
    }
}

// 6. Policies.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_evenly() {
    let servers = [
        EchoServer::start("rr-0").await,
        EchoServer::start("rr-1").await,
        EchoServer::start("rr-2").await,
    ];
    let (channel, resolver) = manual_channel("rr", |b| b);
    resolver.push(
        &servers
            .iter()
            .map(|s| s.addr())
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    all_ready(&channel, 3).await;
    let counts = spread(&channel, 300, 1).await;
    for s in &servers {
        let n = counts.get(s.name()).copied().unwrap_or(0);
        assert!((90..=110).contains(&n), "{counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_follows_weights() {
    let servers = [
        EchoServer::start("wrr-1").await,
        EchoServer::start("wrr-2").await,
        EchoServer::start("wrr-3").await,
    ];
    let (channel, resolver) = manual_channel("wrr", |b| b.policy(Policy::WeightedRoundRobin));
    let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    resolver.push_weighted(&[(&addrs[0], 1), (&addrs[1], 2), (&addrs[2], 3)]);
    all_ready(&channel, 3).await;
    let counts = spread(&channel, 600, 4).await;
    for (s, want) in servers.iter().zip([100.0 / 6.0, 100.0 / 3.0, 50.0]) {
        let got = share(&counts, s.name());
        assert!(
            (got - want).abs() <= 5.0,
            "{}: {got:.1}% vs {want:.1}%; {counts:?}",
            s.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_follows_a_weight_change_and_a_new_endpoint() {
    let servers = [
        EchoServer::start("wrr-change-1").await,
        EchoServer::start("wrr-change-2").await,
        EchoServer::start("wrr-change-3").await,
    ];
    let (channel, resolver) =
        manual_channel("wrr-change", |b| b.policy(Policy::WeightedRoundRobin));
    let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    resolver.push_weighted(&[(&addrs[0], 1), (&addrs[1], 1)]);
    all_ready(&channel, 2).await;
    // One caller at a time: every pick follows the schedule, so whole cycles are exact
    // (within 2%, for a connection the loaded host may take out of rotation a moment).
    let counts = spread(&channel, 200, 1).await;
    about(&counts, "wrr-change-1", 100);
    // The weights change: the same connections, the new shares.
    resolver.push_weighted(&[(&addrs[0], 3), (&addrs[1], 1)]);
    wait_status(&channel, "the new weight", |s| {
        s.endpoints.iter().any(|e| e.endpoint.weight == 3)
    })
    .await;
    let counts = spread(&channel, 400, 1).await;
    about(&counts, "wrr-change-1", 300);
    about(&counts, "wrr-change-2", 100);
    // A third endpoint joins: it gets its share once it is connected.
    resolver.push_weighted(&[(&addrs[0], 3), (&addrs[1], 1), (&addrs[2], 4)]);
    all_ready(&channel, 3).await;
    let counts = spread(&channel, 800, 1).await;
    about(&counts, "wrr-change-3", 400);
    about(&counts, "wrr-change-1", 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_avoids_a_slow_endpoint() {
    let servers = [
        EchoServer::start("p2c-slow").await,
        EchoServer::start("p2c-fast-1").await,
        EchoServer::start("p2c-fast-2").await,
    ];
    servers[0].set_behavior(Behavior {
        delay: Duration::from_millis(20),
        fail: None,
    });
    let (channel, resolver) = manual_channel("p2c-slow", |b| b.policy(Policy::PeakEwma));
    let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    resolver.push(&[&addrs[0], &addrs[1], &addrs[2]]);
    all_ready(&channel, 3).await;
    let counts = spread(&channel, 1000, 4).await;
    let slow = share(&counts, "p2c-slow");
    assert!(slow < 20.0, "slow endpoint got {slow:.1}%: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_avoids_a_failing_endpoint() {
    let servers = [
        EchoServer::start("p2c-bad").await,
        EchoServer::start("p2c-good-1").await,
        EchoServer::start("p2c-good-2").await,
    ];
    servers[0].set_behavior(Behavior {
        delay: Duration::ZERO,
        fail: Some(Code::Internal),
    });
    let (channel, resolver) = manual_channel("p2c-bad", |b| b.policy(Policy::PeakEwma));
    let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    resolver.push(&[&addrs[0], &addrs[1], &addrs[2]]);
    all_ready(&channel, 3).await;
    let counts = spread(&channel, 1000, 8).await;
    let bad = share(&counts, "p2c-bad");
    eprintln!(
        "p2c bad: {counts:?} {:?}",
        channel
            .status()
            .endpoints
            .iter()
            .map(|e| (e.endpoint.addr.clone(), e.rtt_ms, e.pending))
            .collect::<Vec<_>>()
    );
    assert!(bad < 10.0, "failing endpoint got {bad:.1}%: {counts:?}");
}

// 7. Sharing.

#[tokio::test]
async fn same_target_shares_one_channel_and_one_resolver() {
    let server = EchoServer::start("shared").await;
    let resolver = Arc::new(ManualResolver::default());
    let target = target("shared");
    let first = Channel::builder(&target)
        .resolver(resolver.clone())
        .connect()
        .unwrap();
    let second = Channel::builder(&target)
        .resolver(resolver.clone())
        .connect()
        .unwrap();
    assert_eq!(resolver.resolves(), 1);
    resolver.push(&[&server.addr()]);
    assert_eq!(say(&first).await.unwrap(), "shared");
    // The second handle sees the same set without asking anyone.
    assert_eq!(second.status().endpoints.len(), 1);
    assert_eq!(say(&second).await.unwrap(), "shared");
    assert_eq!(resolver.resolves(), 1);
}

/// A TCP proxy in front of `backend` that counts the connections it accepts.
async fn counting_proxy(backend: String) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let backend = backend.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(&backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn two_targets_on_one_address_share_the_connection() {
    let server = EchoServer::start("conn-shared").await;
    let (proxy, accepted) = counting_proxy(server.addr()).await;
    let (one, r1) = manual_channel("conn-one", |b| b);
    let (two, r2) = manual_channel("conn-two", |b| b);
    r1.push(&[&proxy]);
    r2.push(&[&proxy]);
    for _ in 0..5 {
        assert_eq!(say(&one).await.unwrap(), "conn-shared");
        assert_eq!(say(&two).await.unwrap(), "conn-shared");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

// 8. Removal drains in-flight calls.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_endpoint_finishes_its_in_flight_calls() {
    let slow = EchoServer::start("drain-slow").await;
    let other = EchoServer::start("drain-other").await;
    slow.set_behavior(Behavior {
        delay: Duration::from_millis(500),
        fail: None,
    });
    let (channel, resolver) = manual_channel("drain", |b| b);
    resolver.push(&[&slow.addr()]);
    all_ready(&channel, 1).await;
    let in_flight = {
        let channel = channel.clone();
        tokio::spawn(async move { say(&channel).await })
    };
    let until = Instant::now() + Duration::from_secs(5);
    while slow.calls() == 0 {
        assert!(Instant::now() < until, "the call never reached the server");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    resolver.push(&[&other.addr()]);
    wait_status(&channel, "slow removed", |s| {
        state_of(s, &slow.addr()).is_none()
    })
    .await;
    assert_eq!(in_flight.await.unwrap().unwrap(), "drain-slow");
    for _ in 0..10 {
        assert_eq!(say(&channel).await.unwrap(), "drain-other");
    }
    assert_eq!(slow.calls(), 1);
}

/// Channels built from a driver value (as `invoke_with` does on every call) are shared
/// like `connect`'s: one channel and one resolver per driver, target and settings.
#[tokio::test]
async fn channels_built_from_a_driver_value_are_shared() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct CountingResolver(Arc<AtomicUsize>);
    impl Resolver for CountingResolver {
        fn resolve(
            &self,
            _t: &Target,
            updates: SnapshotSender,
        ) -> Result<(), dtmdriver_core::Error> {
            self.0.fetch_add(1, Ordering::SeqCst);
            updates.update(vec![Endpoint::new("127.0.0.1:1")]);
            Ok(())
        }
    }
    struct CountingDriver(Arc<AtomicUsize>, &'static str);
    #[async_trait::async_trait]
    impl dtmdriver_core::Driver for CountingDriver {
        fn name(&self) -> &str {
            "counting-driver"
        }
        fn resolver_identity(&self) -> String {
            self.1.to_string()
        }
        fn resolvers(&self) -> Vec<(&'static str, Arc<dyn Resolver>)> {
            // A fresh resolver value on every call, as most drivers do.
            vec![("counting", Arc::new(CountingResolver(self.0.clone())))]
        }
        fn parse_server_method(
            &self,
            uri: &str,
        ) -> Result<dtmdriver_core::ServerMethod, dtmdriver_core::Error> {
            dtmdriver_core::parse::parse_scheme_url(uri)
        }
    }

    let resolves = Arc::new(AtomicUsize::new(0));
    let driver = CountingDriver(resolves.clone(), "registry-1");
    let a = Channel::builder("counting:///svc")
        .driver(&driver)
        .unwrap()
        .connect()
        .unwrap();
    let b = Channel::builder("counting:///svc")
        .driver(&driver)
        .unwrap()
        .connect()
        .unwrap();
    assert_eq!(
        resolves.load(Ordering::SeqCst),
        1,
        "one resolver for the shared channel"
    );
    a.warm_up();
    assert_eq!(a.status().endpoints.len(), b.status().endpoints.len());
    let _other = Channel::builder("counting:///other")
        .driver(&driver)
        .unwrap()
        .connect()
        .unwrap();
    assert_eq!(
        resolves.load(Ordering::SeqCst),
        2,
        "another target, another channel"
    );
}

/// A server that refuses every stream unprocessed (REFUSED_STREAM, as a server does
/// for streams it will not serve): the request was not processed, so the channel sends
/// it again to another endpoint and the caller never sees the refusal.
#[tokio::test]
async fn refused_streams_are_retried_on_another_endpoint() {
    let refused = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refuser = listener.local_addr().unwrap().to_string();
    let counter = refused.clone();
    let server = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(sock).await else {
                    return;
                };
                while let Some(Ok((_request, mut respond))) = conn.accept().await {
                    counter.fetch_add(1, Ordering::SeqCst);
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                }
            });
        }
    });
    let echo = EchoServer::start("not-refusing").await;
    let (ch, resolver) = manual_channel("refused-streams", |b| b);
    resolver.push(&[&refuser, &echo.addr()]);
    ch.warm_up();
    wait_status(&ch, "both endpoints ready", |s| {
        s.endpoints.iter().filter(|e| e.state == "ready").count() == 2
    })
    .await;
    for i in 0..10 {
        let served = say(&ch).await.unwrap_or_else(|s| panic!("call {i}: {s}"));
        assert_eq!(served, "not-refusing");
    }
    assert!(
        refused.load(Ordering::SeqCst) >= 3,
        "round robin sent {} requests to the refusing endpoint; the retry path was not exercised",
        refused.load(Ordering::SeqCst)
    );
    server.abort();
}
