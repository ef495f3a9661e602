//! The consul engine and the native driver against real, private consul agents.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dtmdriver_consul::ConsulDriver;
use dtmdriver_consul::native::NativeResolver;
use dtmdriver_core::resolve::{Resolver, SnapshotSender};
use dtmdriver_core::{Channel, Driver, Policy, Registration, RegistrationState, Target};
use serde_json::Value;
use test_support::{ConsulAgent, EchoServer, addrs, say, wait_for};

fn get(agent: &ConsulAgent, path: &str) -> Value {
    let (code, body) = agent.api("GET", path, "");
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

fn channel(target: &str, policy: Policy) -> Channel {
    Channel::builder(target)
        .driver(&ConsulDriver)
        .unwrap()
        .policy(policy)
        .connect()
        .unwrap()
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[((sorted.len() - 1) * p / 100).min(sorted.len() - 1)]
}

#[tokio::test]
async fn native_registration_has_the_documented_fields_and_deregister_removes_it() {
    let agent = ConsulAgent::start();
    let target = format!(
        "consul://{}/svc?weight=3&group=blue&tag=a&tag=b&meta.version=2&ttl=6",
        agent.http_addr()
    );
    let registration = ConsulDriver
        .register_service(&target, "127.0.0.1:9100")
        .await
        .unwrap();
    let id = "svc@127.0.0.1:9100";
    let service = &get(&agent, "/v1/agent/services")[id];
    assert_eq!(service["Service"], "svc");
    assert_eq!(service["Address"], "127.0.0.1");
    assert_eq!(service["Port"], 9100);
    assert_eq!(service["Tags"], serde_json::json!(["a", "b"]));
    assert_eq!(
        service["Meta"],
        serde_json::json!({"weight": "3", "group": "blue", "version": "2"})
    );
    assert_eq!(
        service["Weights"],
        serde_json::json!({"Passing": 3, "Warning": 1})
    );
    let check = &get(&agent, "/v1/agent/checks")[format!("service:{id}")];
    assert_eq!(check["Type"], "ttl");
    assert_eq!(check["Status"], "passing");
    assert_eq!(check["ServiceID"], id);

    registration.deregister().await.unwrap();
    assert!(get(&agent, "/v1/agent/services").get(id).is_none());
    assert!(
        get(&agent, "/v1/agent/checks")
            .get(format!("service:{id}"))
            .is_none()
    );
}

#[tokio::test]
async fn native_weights_and_groups_end_to_end() {
    let agent = ConsulAgent::start();
    let addr = agent.http_addr();
    let heavy = EchoServer::start("heavy").await;
    let light = EchoServer::start("light").await;
    let other = EchoServer::start("other").await;
    let _r1 = ConsulDriver
        .register_service(
            &format!("consul://{addr}/svc?weight=3&group=blue&meta.version=2"),
            &heavy.addr(),
        )
        .await
        .unwrap();
    let _r2 = ConsulDriver
        .register_service(&format!("consul://{addr}/svc?group=blue"), &light.addr())
        .await
        .unwrap();
    let _r3 = ConsulDriver
        .register_service(
            &format!("consul://{addr}/svc?group=green&tag=canary"),
            &other.addr(),
        )
        .await
        .unwrap();

    let ch = channel(
        &format!("consul://{addr}/svc?group=blue"),
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

    let canary = channel(
        &format!("consul://{addr}/svc?tag=canary"),
        Policy::RoundRobin,
    );
    assert_eq!(say(&canary).await.unwrap(), "other");
    assert_eq!(addrs(&canary), BTreeSet::from([other.addr()]));
    let all = channel(&format!("consul://{addr}/svc"), Policy::RoundRobin);
    wait_for("all three", Duration::from_secs(3), || async {
        addrs(&all).len() == 3
    })
    .await;
}

/// A check going critical removes the instance from the channel and passing brings it
/// back; reports how long the channel took to follow each change.
#[tokio::test]
async fn critical_instances_leave_the_channel_promptly() {
    let agent = ConsulAgent::start();
    let addr = agent.http_addr();
    let a = EchoServer::start("a").await;
    let b = EchoServer::start("b").await;
    // A long TTL keeps our own heartbeat (TTL/3) out of the measurement.
    let _ra = ConsulDriver
        .register_service(&format!("consul://{addr}/c?ttl=120"), &a.addr())
        .await
        .unwrap();
    let _rb = ConsulDriver
        .register_service(&format!("consul://{addr}/c?ttl=120"), &b.addr())
        .await
        .unwrap();
    let ch = channel(&format!("consul://{addr}/c"), Policy::RoundRobin);
    wait_for("both instances", Duration::from_secs(5), || async {
        addrs(&ch).len() == 2
    })
    .await;
    let check = format!("service:c@{}", b.addr());
    let mut took = Vec::new();
    for _ in 0..10 {
        let (code, body) = agent.api("PUT", &format!("/v1/agent/check/fail/{check}"), "");
        assert_eq!(code, 200, "{body}");
        let start = Instant::now();
        wait_for("b to leave", Duration::from_secs(5), || async {
            addrs(&ch) == BTreeSet::from([a.addr()])
        })
        .await;
        took.push(start.elapsed());
        assert_eq!(say(&ch).await.unwrap(), "a");
        let (code, body) = agent.api("PUT", &format!("/v1/agent/check/pass/{check}"), "");
        assert_eq!(code, 200, "{body}");
        let start = Instant::now();
        wait_for("b to return", Duration::from_secs(5), || async {
            addrs(&ch).len() == 2
        })
        .await;
        took.push(start.elapsed());
    }
    took.sort();
    eprintln!(
        "consul check change -> channel endpoint set: median {:?}, p99 {:?}, max {:?} ({} changes)",
        percentile(&took, 50),
        percentile(&took, 99),
        took[took.len() - 1],
        took.len()
    );
    assert!(
        percentile(&took, 50) < Duration::from_millis(500),
        "{took:?}"
    );
}

#[tokio::test]
async fn agent_restart_under_traffic_fails_no_call_and_registrations_reappear() {
    let mut agent = ConsulAgent::start();
    let addr = agent.http_addr();
    let a = EchoServer::start("a").await;
    let b = EchoServer::start("b").await;
    let _ra = ConsulDriver
        .register_service(&format!("consul://{addr}/r"), &a.addr())
        .await
        .unwrap();
    let _rb = ConsulDriver
        .register_service(&format!("consul://{addr}/r"), &b.addr())
        .await
        .unwrap();
    let ch = channel(&format!("consul://{addr}/r"), Policy::RoundRobin);
    wait_for("both instances", Duration::from_secs(5), || async {
        addrs(&ch).len() == 2
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let traffic = tokio::spawn({
        let (ch, stop, ok, failed) = (ch.clone(), stop.clone(), ok.clone(), failed.clone());
        async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match say(&ch).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        errors.push(e.to_string());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            errors
        }
    });

    tokio::time::sleep(Duration::from_millis(300)).await;
    agent.kill();
    let before_outage = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        ok.load(Ordering::Relaxed) > before_outage,
        "no call succeeded while consul was down"
    );
    assert!(
        ch.snapshots().borrow().last_error.is_some(),
        "the resolver did not report the outage"
    );
    agent.restart();
    let back = Instant::now();
    let ids = [format!("r@{}", a.addr()), format!("r@{}", b.addr())];
    loop {
        let services = get(&agent, "/v1/agent/services");
        if ids.iter().all(|id| services.get(id).is_some()) {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "registrations did not re-appear within 5 s: {services}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reappeared = back.elapsed();
    // The blocking queries resume: a new instance shows up in the channel.
    let c = EchoServer::start("c").await;
    let _rc = ConsulDriver
        .register_service(&format!("consul://{addr}/r"), &c.addr())
        .await
        .unwrap();
    let seen = wait_for("the new instance", Duration::from_secs(5), || async {
        addrs(&ch).contains(&c.addr())
    })
    .await;
    assert!(ch.snapshots().borrow().last_error.is_none());

    stop.store(true, Ordering::Relaxed);
    let errors = traffic.await.unwrap();
    eprintln!(
        "agent restart: registrations back {reappeared:?} after the agent; new instance seen in \
         {seen:?}; {} calls ok, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert!(
        errors.is_empty(),
        "{} failed calls: {errors:?}",
        errors.len()
    );
}

async fn wait_state(
    registration: &Registration,
    what: &str,
    within: Duration,
    want: impl Fn(&RegistrationState) -> bool,
) -> Duration {
    let mut rx = registration.watch_health();
    let start = Instant::now();
    tokio::time::timeout(within, rx.wait_for(|s| want(s)))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the registration was not {what} within {within:?}: {:?}",
                registration.health()
            )
        })
        .expect("state sender gone");
    start.elapsed()
}

#[tokio::test]
async fn the_registration_state_follows_the_agent() {
    let mut agent = ConsulAgent::start();
    let addr = agent.http_addr();
    let registration = ConsulDriver
        .register_service(&format!("consul://{addr}/st"), "127.0.0.1:9200")
        .await
        .unwrap();
    assert_eq!(registration.health(), RegistrationState::Live);

    agent.kill();
    let noticed = wait_state(&registration, "retrying", Duration::from_secs(3), |s| {
        matches!(s, RegistrationState::Retrying { .. })
    })
    .await;
    let RegistrationState::Retrying { error, .. } = registration.health() else {
        unreachable!()
    };
    assert!(error.contains("is the agent running"), "{error}");
    agent.restart();
    let live = wait_state(&registration, "live again", Duration::from_secs(3), |s| {
        s.is_live()
    })
    .await;
    assert!(
        get(&agent, "/v1/agent/services")
            .get("st@127.0.0.1:9200")
            .is_some()
    );

    // Deregistered behind our back: retrying, then registered again.
    let mut state = registration.watch_health();
    let (code, body) = agent.api("PUT", "/v1/agent/service/deregister/st@127.0.0.1:9200", "");
    assert_eq!(code, 200, "{body}");
    let state_ref = &state;
    wait_for(
        "the deregistration noticed",
        Duration::from_secs(3),
        || async move { state_ref.has_changed().unwrap_or(false) },
    )
    .await;
    wait_state(
        &registration,
        "live after the deregistration",
        Duration::from_secs(3),
        |s| s.is_live(),
    )
    .await;
    assert!(
        get(&agent, "/v1/agent/services")
            .get("st@127.0.0.1:9200")
            .is_some()
    );
    eprintln!(
        "consul agent restart: retrying after {noticed:?}; live {live:?} after the agent was back"
    );

    registration.deregister().await.unwrap();
    assert_eq!(*state.borrow_and_update(), RegistrationState::Stopped);
}

#[tokio::test]
async fn acl_token_from_the_target_and_clear_refusals() {
    let token = "6b0c1f9e-2d3a-4b5c-8d7e-9f0a1b2c3d4e";
    let agent = ConsulAgent::start_with_acl(token);
    let addr = agent.http_addr();
    let s = EchoServer::start("s").await;

    for target in [
        format!("consul://{addr}/acl"),
        format!("consul://{addr}/acl?token=00000000-0000-0000-0000-000000000001"),
    ] {
        let err = ConsulDriver
            .register_service(&target, &s.addr())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("refused") && err.contains("?token=") && err.contains("CONSUL_HTTP_TOKEN"),
            "{target}: {err}"
        );
    }

    let _r = ConsulDriver
        .register_service(&format!("consul://{addr}/acl?token={token}"), &s.addr())
        .await
        .unwrap();
    let services = get(&agent, "/v1/agent/services");
    assert!(
        services.get(format!("acl@{}", s.addr())).is_some(),
        "{services}"
    );

    // Resolving without a token: consul answers `200 []`; we say why instead.
    let (tx, rx) = SnapshotSender::channel();
    NativeResolver
        .resolve(&Target::parse(&format!("consul://{addr}/acl")).unwrap(), tx)
        .unwrap();
    let mut rx2 = rx.clone();
    tokio::time::timeout(
        Duration::from_secs(5),
        rx2.wait_for(|s| s.last_error.is_some()),
    )
    .await
    .expect("no error reported")
    .unwrap();
    let error = rx.borrow().last_error.clone().unwrap();
    assert!(
        error.contains("token") && error.contains("CONSUL_HTTP_TOKEN"),
        "{error}"
    );
    assert!(rx.borrow().endpoints.is_none());

    let ch = channel(
        &format!("consul://{addr}/acl?token={token}"),
        Policy::RoundRobin,
    );
    assert_eq!(say(&ch).await.unwrap(), "s");
}

/// After an agent restart an empty answer is held for the grace period (registrants
/// re-register meanwhile), then believed.
#[tokio::test]
async fn an_instance_nobody_reregisters_leaves_after_the_empty_grace() {
    let mut agent = ConsulAgent::start();
    let addr = agent.http_addr();
    let body = r#"{"ID":"g-1","Name":"g","Address":"127.0.0.1","Port":1}"#;
    let (code, text) = agent.api("PUT", "/v1/agent/service/register", body);
    assert_eq!(code, 200, "{text}");
    let ch = channel(&format!("consul://{addr}/g"), Policy::RoundRobin);
    wait_for("the instance", Duration::from_secs(5), || async {
        addrs(&ch).len() == 1
    })
    .await;
    agent.restart();
    let back = Instant::now();
    wait_for("the set to empty", Duration::from_secs(6), || async {
        ch.snapshots()
            .borrow()
            .endpoints
            .as_ref()
            .is_some_and(|e| e.is_empty())
    })
    .await;
    eprintln!(
        "empty answer believed {:?} after the agent came back",
        back.elapsed()
    );
    assert!(
        back.elapsed() >= dtmdriver_consul::watch::EMPTY_GRACE - Duration::from_millis(500),
        "the empty answer was published after {:?}",
        back.elapsed()
    );
}

/// More watched services than the agent takes connections from one client address
/// (`limits.http_max_conns_per_client`, 200 by default, here 8): each blocking query
/// holds a connection, and the agent refuses the rest with its own 429. The watchers
/// left out say so and how to raise the limit, instead of asking whether the agent runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_more_services_than_the_agent_takes_connections_names_its_limit() {
    let agent = ConsulAgent::start_with_hcl("limits { http_max_conns_per_client = 8 }");
    let services: Vec<String> = (0..12)
        .map(|i| {
            format!(
                r#"{{"ID":"lim{i}","Service":"lim{i}","Address":"127.0.0.1","Port":{}}}"#,
                20000 + i
            )
        })
        .collect();
    agent.catalog_services("elsewhere", "set", &services);
    let channels: Vec<Channel> = (0..12)
        .map(|i| {
            channel(
                &format!("consul://{}/lim{i}", agent.http_addr()),
                Policy::RoundRobin,
            )
        })
        .collect();
    let mut refused = None;
    wait_for(
        "a watcher refused a connection",
        Duration::from_secs(10),
        || {
            refused = channels.iter().find_map(|c| c.status().resolver_error);
            std::future::ready(refused.is_some())
        },
    )
    .await;
    let refused = refused.unwrap();
    eprintln!("{refused}");
    assert!(refused.contains("429"), "{refused}");
    assert!(refused.contains("http_max_conns_per_client"), "{refused}");
    assert!(!refused.contains("is the agent running"), "{refused}");
}
