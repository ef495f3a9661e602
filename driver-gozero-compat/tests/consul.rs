//! dtm-driver-gozero over consul against a real, private consul agent.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use dtmdriver_core::resolve::{Resolver, ResolverState, SnapshotReceiver, SnapshotSender};
use dtmdriver_core::{Channel, Driver, Policy, Target};
use dtmdriver_gozero::{GoZeroConsulFormat, GoZeroConsulResolver, GoZeroDriver};
use serde_json::{Value, json};
use test_support::{ConsulAgent, EchoClient, EchoServer, SayRequest, synthetic_addr};

fn get(agent: &ConsulAgent, path: &str) -> Value {
    let (code, body) = agent.api("GET", path, "");
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// The addresses of a snapshot, `None` before the first resolution: the one place this
/// file reads `ResolverState::endpoints`.
fn addr_set(state: &ResolverState) -> Option<BTreeSet<String>> {
    let endpoints = state.endpoints.as_ref()?;
    Some(endpoints.iter().map(|e| e.addr.clone()).collect())
}

/// The endpoint set `target` resolves to once it has resolved and matches `expect`
/// (waits at most 5 s for it).
async fn resolves_to(target: &str, expect: &BTreeSet<String>) {
    let (tx, mut rx) = SnapshotSender::channel();
    GoZeroConsulResolver
        .resolve(&Target::parse(target).unwrap(), tx)
        .unwrap();
    let wait = rx.wait_for(|s| addr_set(s).as_ref() == Some(expect));
    if tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .is_err()
    {
        panic!("{target} did not resolve to {expect:?}: {:?}", *rx.borrow());
    }
}

#[tokio::test]
async fn registration_has_the_zero_contrib_fields_and_deregister_removes_it() {
    let agent = ConsulAgent::start();
    let target = format!("consul://{}/trans.rpc", agent.http_addr());
    let registration = GoZeroDriver
        .register_service(&target, "127.0.0.1:9000")
        .await
        .unwrap();
    let id = "trans.rpc-127.0.0.1-9000";
    let services = get(&agent, "/v1/agent/services");
    let service = &services[id];
    assert_eq!(service["ID"], id);
    assert_eq!(service["Service"], "trans.rpc");
    assert_eq!(service["Address"], "127.0.0.1");
    assert_eq!(service["Port"], 9000);
    assert_eq!(service["Tags"], json!(["tag", "rpc"]));
    assert_eq!(service["Meta"], json!({"Protocol": "grpc"}));
    let checks = get(&agent, "/v1/agent/checks");
    let check = &checks[id];
    assert_eq!(check["CheckID"], id);
    assert_eq!(check["Name"], "trans.rpc");
    assert_eq!(check["Type"], "ttl");
    assert_eq!(check["Status"], "passing");
    assert_eq!(check["ServiceID"], id);
    assert_eq!(checks.as_object().unwrap().len(), 1, "{checks}");

    // zero-contrib's layout stores no registration option: each is refused, naming it,
    // and nothing more is registered.
    let all = ["weight=3", "ttl=30s", "group=blue", "meta.zone=a"];
    test_support::options::refuses_options(&GoZeroDriver, &target, &all, "zero-contrib's").await;
    assert_eq!(
        get(&agent, "/v1/agent/services").as_object().unwrap().len(),
        1
    );

    registration.deregister().await.unwrap();
    assert!(get(&agent, "/v1/agent/services").get(id).is_none());
    assert!(get(&agent, "/v1/agent/checks").get(id).is_none());
}

#[tokio::test]
async fn critical_instances_resolve_unless_healthy_true_and_limit_caps() {
    let agent = ConsulAgent::start();
    let addr = agent.http_addr();
    let a = EchoServer::start("a").await;
    let b = EchoServer::start("b").await;
    let _ra = GoZeroDriver
        .register_service(&format!("consul://{addr}/k"), &a.addr())
        .await
        .unwrap();
    let _rb = GoZeroDriver
        .register_service(&format!("consul://{addr}/k"), &b.addr())
        .await
        .unwrap();
    let both = BTreeSet::from([a.addr(), b.addr()]);
    resolves_to(&format!("consul://{addr}/k?wait=14s"), &both).await;

    let (host, port) = b
        .addr()
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .unwrap();
    let (code, body) = agent.api("PUT", &format!("/v1/agent/check/fail/k-{host}-{port}"), "");
    assert_eq!(code, 200, "{body}");
    // go-zero's default: critical instances are still returned.
    resolves_to(&format!("consul://{addr}/k"), &both).await;
    resolves_to(&format!("consul://{addr}/k?healthy=false&tag=rpc"), &both).await;
    resolves_to(
        &format!("consul://{addr}/k?healthy=true"),
        &BTreeSet::from([a.addr()]),
    )
    .await;
    resolves_to(&format!("consul://{addr}/k?tag=nosuch"), &BTreeSet::new()).await;

    let (tx, mut rx) = SnapshotSender::channel();
    GoZeroConsulResolver
        .resolve(
            &Target::parse(&format!("consul://{addr}/k?limit=1")).unwrap(),
            tx,
        )
        .unwrap();
    let state = tokio::time::timeout(
        Duration::from_secs(5),
        rx.wait_for(|s| addr_set(s).is_some()),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    assert_eq!(addr_set(&state).unwrap().len(), 1);

    // End to end through the driver's channel: calls reach the passing instance only.
    let ch = Channel::builder(&format!("consul://{addr}/k?healthy=true"))
        .driver(&GoZeroDriver)
        .unwrap()
        .policy(Policy::RoundRobin)
        .connect()
        .unwrap();
    let mut client = EchoClient::new(ch);
    for _ in 0..4 {
        let reply = client
            .say(SayRequest {
                message: "hi".into(),
            })
            .await
            .unwrap();
        assert_eq!(reply.into_inner().server, "a");
    }
}

/// zero-contrib's catalog entry of instance `i` of `key` (the fields its registration
/// writes), as `ConsulAgent::catalog_services` takes it.
fn catalog_entry(key: &str, i: usize) -> String {
    let registration = GoZeroConsulFormat::registration(key, &synthetic_addr(i)).unwrap();
    json!({
        "ID": registration.id, "Service": registration.name, "Address": registration.address,
        "Port": registration.port, "Tags": registration.tags, "Meta": registration.meta,
    })
    .to_string()
}

/// Waits up to `within` until `rx` holds exactly `expect`.
async fn wait_for_set(rx: &mut SnapshotReceiver, expect: &BTreeSet<String>, within: Duration) {
    let started = Instant::now();
    let found = tokio::time::timeout(
        within,
        rx.wait_for(|s| addr_set(s).as_ref() == Some(expect)),
    );
    if found.await.is_err() {
        let state = rx.borrow().clone();
        let held = addr_set(&state).unwrap_or_default();
        panic!(
            "after {:?} the resolver holds {} endpoints ({} missing, {} extra; error {:?}), \
             consul {}",
            started.elapsed(),
            held.len(),
            expect.difference(&held).count(),
            held.difference(expect).count(),
            state.last_error,
            expect.len(),
        );
    }
}

/// Issue #12: a service with 10,000 instances is one blocking-query answer of about
/// 10 MB; it resolves whole, and a removal arrives as the next answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_instances_resolve_in_one_answer_and_a_removal_arrives() {
    const INSTANCES: usize = 10_000;
    let agent = ConsulAgent::start();
    let key = "big.rpc";
    let node = "many-instances";
    let entries: Vec<String> = (0..INSTANCES).map(|i| catalog_entry(key, i)).collect();
    agent.catalog_services(node, "set", &entries);
    let mut all: BTreeSet<String> = (0..INSTANCES).map(synthetic_addr).collect();

    let (tx, mut rx) = SnapshotSender::channel();
    let target = format!("consul://{}/{key}?wait=14s", agent.http_addr());
    GoZeroConsulResolver
        .resolve(&Target::parse(&target).unwrap(), tx)
        .unwrap();
    wait_for_set(&mut rx, &all, Duration::from_secs(10)).await;

    let gone = INSTANCES / 2;
    agent.catalog_services(node, "delete", &[catalog_entry(key, gone)]);
    all.remove(&synthetic_addr(gone));
    wait_for_set(&mut rx, &all, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn bad_targets_name_the_fix() {
    for (target, needle) in [
        ("consul://127.0.0.1:8500/k?healthy=maybe", "healthy `maybe`"),
        ("consul://127.0.0.1:8500/k?limit=x", "limit `x`"),
        ("consul://127.0.0.1:8500/k?wait=soon", "wait `soon`"),
        ("consul:///k", "no consul agent"),
    ] {
        let (tx, _rx) = SnapshotSender::channel();
        let err = GoZeroConsulResolver
            .resolve(&Target::parse(target).unwrap(), tx)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{target}: {err}");
    }
}
