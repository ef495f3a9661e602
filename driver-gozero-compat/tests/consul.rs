//! dtm-driver-gozero over consul against a real, private consul agent.

use std::collections::BTreeSet;
use std::time::Duration;

use dtmdriver_core::resolve::{Resolver, SnapshotSender};
use dtmdriver_core::{Channel, Driver, Policy, Target};
use dtmdriver_gozero::{GoZeroConsulResolver, GoZeroDriver};
use serde_json::{Value, json};
use test_support::{ConsulAgent, EchoClient, EchoServer, SayRequest};

fn get(agent: &ConsulAgent, path: &str) -> Value {
    let (code, body) = agent.api("GET", path, "");
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// The endpoint set `target` resolves to once it has resolved and matches `expect`
/// (waits at most 5 s for it).
async fn resolves_to(target: &str, expect: &BTreeSet<String>) {
    let (tx, mut rx) = SnapshotSender::channel();
    GoZeroConsulResolver
        .resolve(&Target::parse(target).unwrap(), tx)
        .unwrap();
    let wait = rx.wait_for(|s| {
        s.endpoints
            .as_ref()
            .is_some_and(|e| e.iter().map(|e| e.addr.clone()).collect::<BTreeSet<_>>() == *expect)
    });
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
        rx.wait_for(|s| s.endpoints.is_some()),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    assert_eq!(state.endpoints.unwrap().len(), 1);

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
