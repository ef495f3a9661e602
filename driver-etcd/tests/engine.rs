//! The etcd engine and the native driver against real, private etcd processes.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use dtmdriver_core::{Channel, Driver, Policy};
use dtmdriver_etcd::{EtcdConfig, EtcdDriver, PrefixWatcher};
use etcd_client::{Client, CompactionOptions};
use test_support::{EchoServer, EtcdCluster, EtcdServer, addrs, say, wait_for};

async fn etcd(endpoints: &[String]) -> Client {
    tokio::time::timeout(Duration::from_secs(5), Client::connect(endpoints, None))
        .await
        .expect("connect timed out")
        .expect("connect")
}

fn channel(target: &str, policy: Policy) -> Channel {
    Channel::builder(target)
        .driver(&EtcdDriver)
        .unwrap()
        .policy(policy)
        .connect()
        .unwrap()
}

#[tokio::test]
async fn native_format_weights_and_groups_end_to_end() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let mut client = etcd(std::slice::from_ref(&ep)).await;
    let heavy = EchoServer::start("heavy").await;
    let light = EchoServer::start("light").await;
    let other = EchoServer::start("other").await;
    let _r1 = EtcdDriver
        .register_service(
            &format!("etcd://{ep}/svc?weight=3&group=blue&meta.version=2"),
            &heavy.addr(),
        )
        .await
        .unwrap();
    let _r2 = EtcdDriver
        .register_service(&format!("etcd://{ep}/svc?group=blue"), &light.addr())
        .await
        .unwrap();
    let _r3 = EtcdDriver
        .register_service(&format!("etcd://{ep}/svc?group=green"), &other.addr())
        .await
        .unwrap();

    // The stored format.
    let key = format!("/micro/svc/{}", heavy.addr());
    let resp = client.get(key.as_str(), None).await.unwrap();
    let value: serde_json::Value = serde_json::from_slice(resp.kvs()[0].value()).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"name": "svc", "address": heavy.addr(), "weight": 3,
                           "group": "blue", "metadata": {"version": "2"}})
    );
    assert!(resp.kvs()[0].lease() > 0);

    let ch = channel(
        &format!("etcd://{ep}/svc?group=blue"),
        Policy::WeightedRoundRobin,
    );
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..40 {
        *counts.entry(say(&ch).await.unwrap()).or_default() += 1;
    }
    assert_eq!(counts.get("other"), None, "{counts:?}");
    assert_eq!((counts["heavy"], counts["light"]), (30, 10), "{counts:?}");
    let status = ch.status();
    let h = status
        .endpoints
        .iter()
        .find(|e| e.endpoint.addr == heavy.addr())
        .unwrap();
    assert_eq!(h.endpoint.weight, 3);
    assert_eq!(h.endpoint.metadata["group"], "blue");
    assert_eq!(h.endpoint.metadata["version"], "2");

    let all = channel(&format!("etcd://{ep}/svc"), Policy::RoundRobin);
    wait_for("all three", Duration::from_secs(3), || async {
        addrs(&all).len() == 3
    })
    .await;
}

#[tokio::test]
async fn native_garbage_is_skipped() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let mut client = etcd(std::slice::from_ref(&ep)).await;
    let a = EchoServer::start("a").await;
    client.put("/micro/g/x", "not json", None).await.unwrap();
    client
        .put("/micro/g/y", r#"{"name":"g","address":""}"#, None)
        .await
        .unwrap();
    let _r = EtcdDriver
        .register_service(&format!("etcd://{ep}/g"), &a.addr())
        .await
        .unwrap();
    let ch = channel(&format!("etcd://{ep}/g"), Policy::RoundRobin);
    assert_eq!(say(&ch).await.unwrap(), "a");
    assert_eq!(addrs(&ch), BTreeSet::from([a.addr()]));
}

#[tokio::test]
async fn one_watch_per_prefix_however_many_channels() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let config = EtcdConfig::new([ep.clone()]);
    // Counted per prefix: other tests in this binary run watchers of their own.
    let running = || PrefixWatcher::running_for(&config, "/micro/shared/");
    assert_eq!(running(), 0);
    let w1 = PrefixWatcher::subscribe(&config, "/micro/shared/");
    let w2 = PrefixWatcher::subscribe(&config, "/micro/shared/");
    assert_eq!(running(), 1);
    // Two channels with different filters share the same watch too.
    let c1 = channel(&format!("etcd://{ep}/shared"), Policy::RoundRobin);
    let c2 = channel(&format!("etcd://{ep}/shared?group=x"), Policy::RoundRobin);
    assert_eq!(running(), 1);
    // The channels hold that same watcher: it outlives the direct subscribers.
    drop((w1, w2));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(running(), 1, "the channels must share the prefix's watcher");
    drop((c1, c2));
    wait_for("the watcher to stop", Duration::from_secs(3), || async {
        running() == 0
    })
    .await;
}

/// Every etcd write reaches the channel's endpoint set (within 2 s each); the time it
/// takes is printed, not asserted: speed is measured by the propagation benchmarks.
#[tokio::test]
async fn write_to_endpoint_set_latency() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let mut client = etcd(std::slice::from_ref(&ep)).await;
    let ch = channel(&format!("etcd://{ep}/lat"), Policy::RoundRobin);
    let mut updates = ch.updates();
    wait_for("the first resolution", Duration::from_secs(3), || async {
        ch.status().resolved
    })
    .await;
    let mut took = Vec::new();
    for i in 0..60u16 {
        let addr = format!("127.0.0.1:{}", 20000 + i);
        let value = format!(r#"{{"name":"lat","address":"{addr}"}}"#);
        updates.borrow_and_update();
        let start = Instant::now();
        client
            .put(format!("/micro/lat/{addr}"), value, None)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(2), async {
            while !addrs(&ch).contains(&addr) {
                updates.changed().await.unwrap();
            }
        })
        .await
        .expect("the write did not reach the channel within 2 s");
        took.push(start.elapsed());
    }
    took.sort();
    let median = took[took.len() / 2];
    let p99 = took[took.len() * 99 / 100];
    eprintln!("etcd write -> channel endpoint set: median {median:?}, p99 {p99:?}");
}

/// The index of the member that is the cluster's leader, asking each member; waits (at
/// most 10 s) while an election is under way.
async fn leader(endpoints: &[String]) -> usize {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        for (i, ep) in endpoints.iter().enumerate() {
            let Ok(Ok(mut c)) =
                tokio::time::timeout(Duration::from_secs(2), Client::connect([ep.as_str()], None))
                    .await
            else {
                continue;
            };
            if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(2), c.status()).await
                && status.header().map(|h| h.member_id()) == Some(status.leader())
            {
                return i;
            }
        }
        assert!(
            Instant::now() < until,
            "no member has been the leader for 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One member of three down costs no registration: a down follower is skipped by the
/// client's channel, and writes lost with a killed leader are tried again after the
/// election. Each registration is one call, not a retry loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_succeed_with_a_follower_or_the_leader_just_killed() {
    let mut cluster = EtcdCluster::start(3);
    let endpoints = cluster.endpoints();
    let target = format!("etcd://{}/down", endpoints.join(","));
    let echo = EchoServer::start("down").await;
    // A registration first, so the client is connected to every member.
    let mut registrations = vec![
        EtcdDriver
            .register_service(&format!("{target}?meta.n=0"), &echo.addr())
            .await
            .unwrap(),
    ];
    for (n, role) in ["follower", "leader", "follower", "leader"]
        .iter()
        .enumerate()
    {
        let leader = leader(&endpoints).await;
        let victim = if *role == "leader" {
            leader
        } else {
            (leader + 1) % 3
        };
        cluster.kill_member(victim);
        let started = Instant::now();
        let instance = format!("127.0.0.1:{}", 40000 + n);
        let registration = EtcdDriver
            .register_service(&target, &instance)
            .await
            .unwrap_or_else(|e| panic!("registering with the {role} (member {victim}) down: {e}"));
        eprintln!(
            "registered with the {role} (member {victim}) just killed in {:?}",
            started.elapsed()
        );
        registrations.push(registration);
        cluster.restart_member(victim);
    }
    let mut client = etcd(&endpoints).await;
    let listed = client
        .get(
            "/micro/down/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert_eq!(listed.kvs().len(), 5);
}

/// Runs an etcd request until it succeeds, for at most 10 s: right after a member is
/// killed, the cluster may be electing a leader and refuses writes ("request timed out,
/// possibly due to previous leader failure").
async fn retry_election<T, F, Fut>(what: &str, mut request: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout(Duration::from_secs(3), request()).await {
            Ok(Ok(v)) => return v,
            Ok(Err(e)) if Instant::now() >= deadline => panic!("{what}: {e}"),
            Err(_) if Instant::now() >= deadline => panic!("{what}: timed out"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The watcher talks to one member only; while that member is down, instances come and
/// go and the history is compacted. When the member is back, the watcher cannot resume
/// from its revision and must list again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_while_disconnected_and_compaction_are_caught_up() {
    let mut cluster = EtcdCluster::start(3);
    let m0 = cluster.endpoint(0);
    let mut via_m1 = etcd(&[cluster.endpoint(1)]).await;
    let put = |c: &mut Client, addr: &str| {
        let c = c.clone();
        let (key, value) = (
            format!("/micro/cc/{addr}"),
            format!(r#"{{"name":"cc","address":"{addr}"}}"#),
        );
        async move {
            retry_election("put", || {
                let mut c = c.clone();
                let (key, value) = (key.clone(), value.clone());
                async move { c.put(key, value, None).await }
            })
            .await
        }
    };
    let delete = |c: &mut Client, addr: &str| {
        let c = c.clone();
        let key = format!("/micro/cc/{addr}");
        async move {
            retry_election("delete", || {
                let mut c = c.clone();
                let key = key.clone();
                async move { c.delete(key, None).await }
            })
            .await
        }
    };
    put(&mut via_m1, "127.0.0.1:1").await;
    put(&mut via_m1, "127.0.0.1:2").await;
    let ch = channel(&format!("etcd://{m0}/cc"), Policy::RoundRobin);
    wait_for("two endpoints", Duration::from_secs(3), || async {
        addrs(&ch).len() == 2
    })
    .await;

    // Round 1: changes while disconnected arrive by resuming the watch.
    cluster.kill_member(0);
    wait_for("the watcher to notice", Duration::from_secs(3), || async {
        ch.status().resolver_error.is_some()
    })
    .await;
    assert_eq!(addrs(&ch).len(), 2, "the last set stays in service");
    delete(&mut via_m1, "127.0.0.1:1").await;
    put(&mut via_m1, "127.0.0.1:3").await;
    cluster.restart_member(0);
    wait_for("the missed changes", Duration::from_secs(5), || async {
        addrs(&ch) == BTreeSet::from(["127.0.0.1:2".to_string(), "127.0.0.1:3".to_string()])
    })
    .await;

    // Round 2: the missed history is compacted away: the watcher lists again.
    cluster.kill_member(0);
    wait_for("the watcher to notice", Duration::from_secs(3), || async {
        ch.status().resolver_error.is_some()
    })
    .await;
    delete(&mut via_m1, "127.0.0.1:2").await;
    let resp = put(&mut via_m1, "127.0.0.1:4").await;
    put(&mut via_m1, "127.0.0.1:5").await;
    let rev = resp.header().unwrap().revision();
    retry_election("compact", || {
        let mut c = via_m1.clone();
        async move {
            c.compact(rev + 1, Some(CompactionOptions::new().with_physical()))
                .await
        }
    })
    .await;
    cluster.restart_member(0);
    wait_for("the re-listed set", Duration::from_secs(5), || async {
        addrs(&ch)
            == BTreeSet::from([
                "127.0.0.1:3".to_string(),
                "127.0.0.1:4".to_string(),
                "127.0.0.1:5".to_string(),
            ])
    })
    .await;
    assert!(ch.status().resolver_error.is_none());
}

/// Every key deleted at once (as etcd does when it resumes past the lease TTL) and put
/// back by the registrar a moment later: subscribers never see the set empty. A set
/// emptied for good reaches them after the grace.
#[tokio::test]
async fn an_emptied_set_is_held_for_a_grace_unless_instances_return() {
    use dtmdriver_core::resolve::{Resolver, SnapshotSender};
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let mut client = etcd(std::slice::from_ref(&ep)).await;
    let a = EchoServer::start("grace").await;
    let target = format!("etcd://{ep}/grace");
    let registration = EtcdDriver
        .register_service(&target, &a.addr())
        .await
        .unwrap();
    let (tx, mut rx) = SnapshotSender::channel();
    dtmdriver_etcd::native::NativeResolver
        .resolve(&dtmdriver_core::Target::parse(&target).unwrap(), tx)
        .unwrap();
    let sizes = |rx: &tokio::sync::watch::Receiver<dtmdriver_core::resolve::ResolverState>| {
        rx.borrow().endpoints.as_ref().map(|e| e.len())
    };
    wait_for("the instance", Duration::from_secs(3), || {
        let n = sizes(&rx);
        async move { n == Some(1) }
    })
    .await;

    // Deleted by hand: the lease keeper puts it back within milliseconds.
    rx.borrow_and_update();
    client
        .delete(format!("/micro/grace/{}", a.addr()), None)
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_millis(1500);
    while let Ok(Ok(())) = tokio::time::timeout_at(until.into(), rx.changed()).await {
        assert_eq!(sizes(&rx), Some(1), "the set was published empty");
    }
    let listed = client
        .get(format!("/micro/grace/{}", a.addr()), None)
        .await
        .unwrap();
    assert_eq!(listed.kvs().len(), 1, "the registrar put the key back");

    // Deregistered for good: empty after the grace, not before.
    let gone = Instant::now();
    registration.deregister().await.unwrap();
    let took = wait_for("the empty set", Duration::from_secs(5), || {
        let n = sizes(&rx);
        async move { n == Some(0) }
    })
    .await;
    let took = took.max(gone.elapsed());
    assert!(
        took >= dtmdriver_etcd::EMPTY_GRACE.saturating_sub(Duration::from_millis(100)),
        "emptied after {took:?}"
    );
}

/// Every prefix watched in a process rides one Watch stream per cluster, as Go's clientv3
/// multiplexes them: 200 targets, 1 stream, 200 watchers (from etcd's own metrics); and
/// each still follows its own changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_watch_stream_per_cluster_however_many_prefixes() {
    const PREFIXES: usize = 200;
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let mut client = etcd(std::slice::from_ref(&ep)).await;
    let config = EtcdConfig::new([ep.clone()]);
    let streams_before = server
        .metric("etcd_debugging_mvcc_watch_stream_total")
        .unwrap_or(0.0);
    let watchers: Vec<PrefixWatcher> = (0..PREFIXES)
        .map(|i| PrefixWatcher::subscribe(&config, &format!("/many/{i}/")))
        .collect();
    wait_for("every prefix listed", Duration::from_secs(10), || async {
        watchers
            .iter()
            .all(|w| w.receiver().borrow().entries.is_some())
    })
    .await;
    wait_for(
        "etcd to count every watcher",
        Duration::from_secs(10),
        || async { server.metric("etcd_debugging_mvcc_watcher_total") == Some(PREFIXES as f64) },
    )
    .await;
    let streams = server
        .metric("etcd_debugging_mvcc_watch_stream_total")
        .unwrap()
        - streams_before;
    assert_eq!(streams, 1.0, "watch streams opened for {PREFIXES} prefixes");

    // Each watch still gets its own events, and only those.
    client.put("/many/7/a", "x", None).await.unwrap();
    client.put("/many/150/b", "y", None).await.unwrap();
    let has = |i: usize, key: &str| {
        watchers[i]
            .receiver()
            .borrow()
            .entries
            .as_ref()
            .is_some_and(|e| e.contains_key(key))
    };
    wait_for("the two puts", Duration::from_secs(5), || async {
        has(7, "/many/7/a") && has(150, "/many/150/b")
    })
    .await;
    assert!(watchers.iter().enumerate().all(|(i, w)| {
        let n = w
            .receiver()
            .borrow()
            .entries
            .as_ref()
            .map_or(0, |e| e.len());
        n == usize::from(i == 7 || i == 150)
    }));

    // Gone with the last subscriber: the stream closes.
    drop(watchers);
    wait_for(
        "the watchers cancelled",
        Duration::from_secs(10),
        || async { server.metric("etcd_debugging_mvcc_watcher_total") == Some(0.0) },
    )
    .await;
}

/// A listing past tonic's 4 MiB default (what ~60,000 go-zero instances take) resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_past_4_mib_resolve() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let client = etcd(std::slice::from_ref(&ep)).await;
    // 60 values of 100 KB: a 6 MB listing (etcd takes up to 1.5 MiB per request).
    let value = "v".repeat(100_000);
    let mut kv = client.kv_client();
    for i in 0..60 {
        kv.put(format!("/big/{i:02}"), value.as_str(), None)
            .await
            .unwrap();
    }
    let config = EtcdConfig::new([ep.clone()]);
    let watcher = PrefixWatcher::subscribe(&config, "/big/");
    let rx = watcher.receiver();
    wait_for("the 6 MB listing", Duration::from_secs(10), || async {
        rx.borrow().entries.as_ref().is_some_and(|e| e.len() == 60)
    })
    .await;
    assert_eq!(rx.borrow().error, None);
    // A watch event of a big value after the listing.
    kv.put("/big/60", value.as_str(), None).await.unwrap();
    wait_for("the next big value", Duration::from_secs(10), || async {
        rx.borrow().entries.as_ref().is_some_and(|e| e.len() == 61)
    })
    .await;
}
