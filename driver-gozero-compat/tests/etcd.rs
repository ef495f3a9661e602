//! `dtm-driver-gozero` against a real, private etcd per test.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dtmdriver_core::{Channel, Driver};
use dtmdriver_gozero::GoZeroDriver;
use etcd_client::{Client, GetOptions, LeaseTimeToLiveOptions};
use test_support::{EchoServer, EtcdCluster, EtcdServer, addrs, say, wait_for};

async fn etcd(endpoints: &[String]) -> Client {
    tokio::time::timeout(Duration::from_secs(5), Client::connect(endpoints, None))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// Every key/value under `prefix`, with each key's lease; empty when etcd fails.
async fn list(client: &mut Client, prefix: &str) -> Vec<(String, String, i64)> {
    let get = client.get(prefix, Some(GetOptions::new().with_prefix()));
    match tokio::time::timeout(Duration::from_secs(2), get).await {
        Ok(Ok(resp)) => resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    kv.key_str().unwrap().to_string(),
                    kv.value_str().unwrap().to_string(),
                    kv.lease(),
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn channel(target: &str) -> Channel {
    Channel::builder(target)
        .driver(&GoZeroDriver)
        .unwrap()
        .connect()
        .unwrap()
}

#[tokio::test]
async fn register_writes_the_go_zero_key_value_and_lease() {
    let server = EtcdServer::start();
    let mut client = etcd(&[server.endpoint()]).await;
    let target = format!("etcd://{}/trans.rpc", server.endpoint());
    let reg = GoZeroDriver
        .register_service(&target, "127.0.0.1:9000")
        .await
        .unwrap();
    let kvs = list(&mut client, "trans.rpc/").await;
    assert_eq!(kvs.len(), 1, "{kvs:?}");
    let (key, value, lease) = &kvs[0];
    assert_eq!(key, &format!("trans.rpc/{lease}"));
    assert!(*lease > 0);
    assert_eq!(value, "127.0.0.1:9000");
    let ttl = client
        .lease_time_to_live(*lease, Some(LeaseTimeToLiveOptions::new()))
        .await
        .unwrap();
    assert_eq!(ttl.granted_ttl(), 10);
    assert!((8..=10).contains(&ttl.ttl()), "ttl {}", ttl.ttl());

    reg.deregister().await.unwrap();
    assert!(
        list(&mut client, "trans.rpc/").await.is_empty(),
        "deregister must remove the key at once"
    );
    let ttl = client.lease_time_to_live(*lease, None).await.unwrap();
    assert_eq!(ttl.ttl(), -1, "the lease must be revoked");
}

/// `?ttl=` is the lease's TTL (the value does not carry it, readers never see it); an
/// option go-zero's bare `host:port` value cannot carry is refused, naming it, and
/// nothing is written.
#[tokio::test]
async fn ttl_sets_the_lease_and_options_the_value_cannot_carry_are_refused() {
    let server = EtcdServer::start();
    let mut client = etcd(&[server.endpoint()]).await;
    let target = format!("etcd://{}/ttl.rpc", server.endpoint());
    let reg = GoZeroDriver
        .register_service(&format!("{target}?ttl=30s"), "127.0.0.1:9000")
        .await
        .unwrap();
    let kvs = list(&mut client, "ttl.rpc/").await;
    assert_eq!(kvs.len(), 1, "{kvs:?}");
    let ttl = client.lease_time_to_live(kvs[0].2, None).await.unwrap();
    assert_eq!(ttl.granted_ttl(), 30);
    let refused = ["weight=3", "group=blue", "meta.zone=a"];
    let format = "go-zero's etcd format";
    test_support::options::refuses_options(&GoZeroDriver, &target, &refused, format).await;
    assert_eq!(list(&mut client, "ttl.rpc/").await.len(), 1);
    reg.deregister().await.unwrap();
}

#[tokio::test]
async fn dropping_the_registration_removes_the_key() {
    let server = EtcdServer::start();
    let mut client = etcd(&[server.endpoint()]).await;
    let reg = GoZeroDriver
        .register_service(
            &format!("etcd:///{}?key=svc", server.endpoint()),
            "127.0.0.1:9001",
        )
        .await
        .unwrap();
    assert_eq!(list(&mut client, "svc/").await.len(), 1);
    drop(reg);
    wait_for("the key to go after drop", Duration::from_secs(2), || {
        let mut c = client.clone();
        async move { list(&mut c, "svc/").await.is_empty() }
    })
    .await;
}

#[tokio::test]
async fn a_deleted_key_is_put_back_and_a_revoked_lease_re_granted() {
    let server = EtcdServer::start();
    let mut client = etcd(&[server.endpoint()]).await;
    let _reg = GoZeroDriver
        .register_service(
            &format!("etcd://{}/svc", server.endpoint()),
            "127.0.0.1:9002",
        )
        .await
        .unwrap();
    let (key, _, lease) = list(&mut client, "svc/").await.remove(0);
    client.delete(key.as_str(), None).await.unwrap();
    let took = wait_for(
        "the deleted key to come back",
        Duration::from_secs(2),
        || {
            let mut c = client.clone();
            let key = key.clone();
            async move { list(&mut c, "svc/").await.iter().any(|(k, _, _)| *k == key) }
        },
    )
    .await;
    eprintln!("deleted key back after {took:?}");

    client.lease_revoke(lease).await.unwrap();
    let took = wait_for("a new lease and key", Duration::from_secs(3), || {
        let mut c = client.clone();
        async move {
            let kvs = list(&mut c, "svc/").await;
            kvs.len() == 1
                && kvs[0].2 != lease
                && kvs[0].0 == format!("svc/{}", kvs[0].2)
                && kvs[0].1 == "127.0.0.1:9002"
        }
    })
    .await;
    eprintln!("re-registered under a new lease after {took:?}");
}

#[tokio::test]
async fn both_target_forms_and_the_discov_alias_resolve() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let a = EchoServer::start("a").await;
    let _reg = GoZeroDriver
        .register_service(&format!("etcd://{ep}/echo"), &a.addr())
        .await
        .unwrap();
    for target in [
        format!("etcd://{ep}/echo"),
        format!("etcd:///{ep}?key=echo"),
        format!("discov://{ep}/echo"),
    ] {
        let ch = channel(&target);
        assert_eq!(say(&ch).await.unwrap(), "a", "{target}");
    }
    let direct = channel(&format!("direct:///{}", a.addr()));
    assert_eq!(say(&direct).await.unwrap(), "a");
}

#[tokio::test]
async fn garbage_values_are_skipped_and_duplicates_merged() {
    let server = EtcdServer::start();
    let mut client = etcd(&[server.endpoint()]).await;
    let a = EchoServer::start("a").await;
    client.put("g/1", "not an address", None).await.unwrap();
    client.put("g/2", vec![0xffu8, 0xfe], None).await.unwrap();
    client.put("g/3", a.addr(), None).await.unwrap();
    client.put("g/4", a.addr(), None).await.unwrap();
    client.put("gx/5", "127.0.0.1:1", None).await.unwrap(); // other service, same start
    let ch = channel(&format!("etcd://{}/g", server.endpoint()));
    assert_eq!(say(&ch).await.unwrap(), "a");
    assert_eq!(addrs(&ch), BTreeSet::from([a.addr()]));
    // Garbage arriving by watch is skipped too.
    client.put("g/6", "{}", None).await.unwrap();
    client.put("g/7", "127.0.0.1:2", None).await.unwrap();
    wait_for(
        "the watch to deliver g/7",
        Duration::from_secs(2),
        || async { addrs(&ch).contains("127.0.0.1:2") },
    )
    .await;
    assert_eq!(addrs(&ch).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_uses_a_sticky_subset_of_32_servers_as_go_zero_clients_do() {
    let server = EtcdServer::start();
    let mut client = etcd(&[server.endpoint()]).await;
    let mut servers = Vec::new();
    for i in 0..40 {
        let echo = EchoServer::start(&format!("s{i}")).await;
        client
            .put(format!("big/{i}"), echo.addr(), None)
            .await
            .unwrap();
        servers.push(echo);
    }
    let ch = channel(&format!("etcd://{}/big", server.endpoint()));
    assert!(say(&ch).await.is_ok());
    let chosen = addrs(&ch);
    assert_eq!(chosen.len(), 32);
    // Calls reach the subset and nothing else.
    for _ in 0..96 {
        say(&ch).await.unwrap();
    }
    let called: BTreeSet<String> = servers
        .iter()
        .filter(|s| s.calls() > 0)
        .map(|s| s.addr())
        .collect();
    assert_eq!(called, chosen);

    // A chosen server leaves: its place is filled, the other 31 stay.
    let (gone_key, gone) = (0..40)
        .map(|i| (format!("big/{i}"), servers[i].addr()))
        .find(|(_, addr)| chosen.contains(addr))
        .unwrap();
    client.delete(gone_key, None).await.unwrap();
    wait_for(
        "the deletion to reach the channel",
        Duration::from_secs(5),
        || async { !addrs(&ch).contains(&gone) },
    )
    .await;
    let now = addrs(&ch);
    assert_eq!(now.len(), 32);
    assert_eq!(now.intersection(&chosen).count(), 31);

    // ?subset=20 bounds the set at 20; ?subset=0 takes all 39.
    let other = channel(&format!("etcd://{}/big?subset=20", server.endpoint()));
    assert!(say(&other).await.is_ok());
    assert_eq!(addrs(&other).len(), 20);
    let all = channel(&format!("etcd://{}/big?subset=0", server.endpoint()));
    assert!(say(&all).await.is_ok());
    assert_eq!(addrs(&all).len(), 39);
    let bad = Channel::builder(&format!("etcd://{}/big?subset=many", server.endpoint()))
        .driver(&GoZeroDriver)
        .unwrap()
        .connect()
        .unwrap_err();
    assert!(bad.to_string().contains("subset=N"), "{bad}");
}

#[tokio::test]
async fn wildcard_listen_address_is_published_routable() {
    let server = EtcdServer::start();
    let mut client = etcd(&[server.endpoint()]).await;
    let reg = GoZeroDriver
        .register_service(
            &format!("etcd://{}/wild", server.endpoint()),
            "0.0.0.0:9100",
        )
        .await
        .unwrap();
    assert_ne!(reg.endpoint(), "0.0.0.0:9100");
    let kvs = list(&mut client, "wild/").await;
    assert_eq!(kvs[0].1, reg.endpoint());
    assert!(kvs[0].1.ends_with(":9100") && !kvs[0].1.starts_with("0.0.0.0"));
}

/// Steady traffic through etcd being killed and restarted: no failed call, the
/// registrations are kept alive afterwards, and the watch sees changes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restart_under_traffic_fails_no_call() {
    let mut server = EtcdServer::start();
    let ep = server.endpoint();
    let mut client = etcd(std::slice::from_ref(&ep)).await;
    let target = format!("etcd://{ep}/busy");
    let a = EchoServer::start("a").await;
    let b = EchoServer::start("b").await;
    let _ra = GoZeroDriver
        .register_service(&target, &a.addr())
        .await
        .unwrap();
    let _rb = GoZeroDriver
        .register_service(&target, &b.addr())
        .await
        .unwrap();
    let ch = channel(&target);
    wait_for("both endpoints", Duration::from_secs(3), || async {
        addrs(&ch).len() == 2
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let traffic = {
        let (ch, stop, ok, failed) = (ch.clone(), stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match say(&ch).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("call failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    wait_for(
        "the channel to see the outage",
        Duration::from_secs(3),
        || async { ch.status().resolver_error.is_some() },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.restart();
    let back = Instant::now();
    let took = wait_for(
        "the registrations after etcd's return",
        Duration::from_secs(2),
        || {
            let mut c = client.clone();
            async move { list(&mut c, "busy/").await.len() == 2 }
        },
    )
    .await;
    eprintln!("registrations visible {took:?} after etcd's return");
    wait_for("the watch to reconnect", Duration::from_secs(3), || async {
        ch.status().resolver_error.is_none()
    })
    .await;
    eprintln!("watch reconnected {:?} after etcd's return", back.elapsed());
    // A change made now reaches the channel through the resumed watch.
    let c = EchoServer::start("c").await;
    let _rc = GoZeroDriver
        .register_service(&target, &c.addr())
        .await
        .unwrap();
    wait_for("the new endpoint", Duration::from_secs(2), || async {
        addrs(&ch).len() == 3
    })
    .await;
    // Keep-alive works again: the leases outlive their 10 s TTL.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(list(&mut client, "busy/").await.len(), 3);
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("calls: {ok} ok, {failed} failed");
    assert!(ok > 100, "too little traffic: {ok}");
    assert_eq!(failed, 0);
    assert!(c.calls() > 0, "the new endpoint got no call");
}

/// A three-member cluster: killing any one member (whichever the client used) keeps
/// registration and resolution working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_survives_losing_the_member_in_use() {
    let mut cluster = EtcdCluster::start(3);
    let hosts = cluster.endpoints().join(",");
    let target = format!("etcd://{hosts}/clu");
    let mut client = etcd(&cluster.endpoints()).await;
    let a = EchoServer::start("a").await;
    let _ra = GoZeroDriver
        .register_service(&target, &a.addr())
        .await
        .unwrap();
    let ch = channel(&target);
    assert_eq!(say(&ch).await.unwrap(), "a");
    let mut regs = Vec::new();
    let mut servers = Vec::new();
    for i in 0..3 {
        cluster.kill_member(i);
        let s = EchoServer::start(&format!("s{i}")).await;
        let reg = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match GoZeroDriver.register_service(&target, &s.addr()).await {
                    Ok(r) => break r,
                    Err(e) => {
                        eprintln!("register with member {i} down: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
        .await
        .expect("registering with one member down");
        let addr = s.addr();
        wait_for(
            "the new endpoint with a member down",
            Duration::from_secs(5),
            || async { addrs(&ch).contains(&addr) },
        )
        .await;
        assert!(say(&ch).await.is_ok());
        regs.push(reg);
        servers.push(s);
        cluster.restart_member(i);
    }
    assert_eq!(list(&mut client, "clu/").await.len(), 4);
}
