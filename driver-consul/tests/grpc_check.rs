//! The native driver's agent-run gRPC health check (`?check=grpc`) against a real
//! consul agent and a tonic-health server on the echo server's port.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use dtmdriver_consul::ConsulDriver;
use dtmdriver_core::{Channel, Driver};
use serde_json::Value;
use test_support::{ConsulAgent, EchoServer, addrs, say};

/// The check interval the test registers.
const INTERVAL: Duration = Duration::from_secs(1);
/// What the change may take beyond one interval: the agent's blocking query answering,
/// the resolver's snapshot, a loaded machine.
const SLACK: Duration = Duration::from_millis(2500);

/// Waits (at most `within`) until the channel's endpoint set is `expect`; returns how
/// long that took.
async fn wait_for_set(channel: &Channel, expect: &BTreeSet<String>, within: Duration) -> Duration {
    let start = Instant::now();
    let mut updates = channel.updates();
    loop {
        if addrs(channel) == *expect {
            return start.elapsed();
        }
        let left = within.saturating_sub(start.elapsed());
        assert!(
            !left.is_zero(),
            "the channel did not change to {expect:?} within {within:?}: {:?}",
            channel.status()
        );
        let _ = tokio::time::timeout(left, updates.changed()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_not_serving_takes_the_instance_out_and_serving_brings_it_back() {
    let agent = ConsulAgent::start();
    let addr = agent.http_addr();
    let checked = EchoServer::start_with_health("checked").await;
    let plain = EchoServer::start("plain").await;
    let _r1 = ConsulDriver
        .register_service(
            &format!("consul://{addr}/svc?check=grpc&interval=1s"),
            &checked.addr(),
        )
        .await
        .unwrap();
    let _r2 = ConsulDriver
        .register_service(&format!("consul://{addr}/svc"), &plain.addr())
        .await
        .unwrap();

    // The agent runs a gRPC check on the checked instance, beside its TTL check.
    let (code, body) = agent.api("GET", "/v1/agent/checks", "");
    assert_eq!(code, 200, "{body}");
    let checks: Value = serde_json::from_str(&body).unwrap();
    let id = format!("svc@{}", checked.addr());
    let of_checked: Vec<&Value> = checks
        .as_object()
        .unwrap()
        .values()
        .filter(|c| c["ServiceID"] == id.as_str())
        .collect();
    let types: BTreeSet<&str> = of_checked
        .iter()
        .map(|c| c["Type"].as_str().unwrap())
        .collect();
    assert_eq!(types, BTreeSet::from(["grpc", "ttl"]), "{body}");
    let grpc = of_checked.iter().find(|c| c["Type"] == "grpc").unwrap();
    assert_eq!(grpc["Interval"], "1s", "{body}");
    let plain_id = format!("svc@{}", plain.addr());
    let plain_types: Vec<&Value> = checks
        .as_object()
        .unwrap()
        .values()
        .filter(|c| c["ServiceID"] == plain_id.as_str())
        .map(|c| &c["Type"])
        .collect();
    assert_eq!(plain_types, [&Value::from("ttl")], "{body}");

    let channel = Channel::builder(&format!("consul://{addr}/svc"))
        .driver(&ConsulDriver)
        .unwrap()
        .connect()
        .unwrap();
    let both = BTreeSet::from([checked.addr(), plain.addr()]);
    wait_for_set(&channel, &both, Duration::from_secs(10)).await;
    // Let the agent run the check once for real (the registration starts it passing).
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = agent.api("GET", &format!("/v1/agent/health/service/id/{id}"), "");
        if body.contains("gRPC check") && body.contains(": success") {
            break;
        }
        assert!(
            Instant::now() < until,
            "the agent did not run the gRPC check: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    checked.set_serving(false).await;
    let took = wait_for_set(&channel, &BTreeSet::from([plain.addr()]), INTERVAL + SLACK).await;
    tracing::info!(?took, "NOT_SERVING instance left the set");
    for _ in 0..4 {
        assert_eq!(say(&channel).await.unwrap(), "plain");
    }

    checked.set_serving(true).await;
    wait_for_set(&channel, &both, INTERVAL + SLACK).await;
    let mut served = BTreeSet::new();
    for _ in 0..6 {
        served.insert(say(&channel).await.unwrap());
    }
    assert_eq!(served, BTreeSet::from(["checked".into(), "plain".into()]));
}

#[tokio::test]
async fn bad_check_options_name_the_fix() {
    for (query, needle) in [
        ("check=http", "check `http`"),
        ("check=grpc&interval=soon", "interval `soon`"),
        ("interval=1s", "add check=grpc"),
    ] {
        let err = ConsulDriver
            .register_service(&format!("consul://127.0.0.1:1/svc?{query}"), "127.0.0.1:9")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{query}: {err}");
    }
}
