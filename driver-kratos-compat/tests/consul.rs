//! dtm-driver-kratos over a real consul agent, against real kratos (v2.9.2, contrib
//! consul registry) programs from `interop/kratos/`.

mod common;

use std::time::{Duration, Instant};

use common::{GoProcess, SteadyTraffic, kratos_client, say_eventually, tls_interop_both_ways};
use dtmdriver_core::{Channel, Driver};
use dtmdriver_kratos::KratosDriver;
use serde_json::Value;
use test_support::{ConsulAgent, EchoServer, free_port};

fn get(agent: &ConsulAgent, path: &str) -> Value {
    let (code, body) = agent.api("GET", path, "");
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The agent's services named `name`, waiting (bounded) for `n` of them.
fn wait_services(agent: &ConsulAgent, name: &str, n: usize) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let services = get(agent, "/v1/agent/services");
        let found: Vec<Value> = services
            .as_object()
            .unwrap()
            .values()
            .filter(|s| s["Service"] == name)
            .cloned()
            .collect();
        if found.len() == n {
            return found;
        }
        assert!(
            Instant::now() < until,
            "{n} services `{name}` did not appear within 20 s: {services}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_has_kratos_fields_and_checks_and_deregistration_removes_it() {
    let agent = ConsulAgent::start();
    let addr = agent.http_addr();
    let echo = EchoServer::start("rust").await;
    let reg = KratosDriver::default()
        .version("v3")
        .register_service(
            &format!("consul://{addr}/busi?meta.zone=a"),
            &format!("grpc://{}", echo.addr()),
        )
        .await
        .unwrap();
    let services = wait_services(&agent, "busi", 1);
    let s = &services[0];
    let id = s["ID"].as_str().unwrap();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(s["Tags"], serde_json::json!(["version=v3"]));
    assert_eq!(s["Meta"], serde_json::json!({"zone": "a"}));
    let (host, port) = echo
        .addr()
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.parse::<u64>().unwrap()))
        .unwrap();
    assert_eq!(
        (s["Address"].as_str().unwrap(), s["Port"].as_u64().unwrap()),
        (host.as_str(), port)
    );
    assert_eq!(
        s["TaggedAddresses"]["grpc"],
        serde_json::json!({"Address": format!("grpc://{}", echo.addr()), "Port": port})
    );
    let checks = get(&agent, "/v1/agent/checks");
    let mine: Vec<&Value> = checks
        .as_object()
        .unwrap()
        .values()
        .filter(|c| c["ServiceID"] == id)
        .collect();
    assert_eq!(mine.len(), 2, "{checks}");
    let ttl = mine
        .iter()
        .find(|c| c["Type"] == "ttl")
        .expect("a TTL check");
    assert_eq!(ttl["CheckID"], format!("service:{id}"));
    let tcp = mine
        .iter()
        .find(|c| c["Type"] == "tcp")
        .expect("a TCP check");
    assert_eq!(tcp["Status"], "passing");
    assert_eq!(tcp["Interval"], "10s");
    assert_eq!(tcp["Timeout"], "5s");

    reg.deregister().await.unwrap();
    wait_services(&agent, "busi", 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kratos_go_client_calls_a_rust_service_registered_in_consul() {
    let agent = ConsulAgent::start();
    let addr = agent.http_addr();
    let echo = EchoServer::start("rust").await;
    let _reg = KratosDriver::default()
        .register_service(&format!("consul://{addr}/busi"), &echo.addr())
        .await
        .unwrap();
    let args: Vec<String> = ["-consul", &addr, "-service", "busi", "-n", "3"]
        .map(String::from)
        .into();
    let names = tokio::task::spawn_blocking(move || kratos_client(&args))
        .await
        .unwrap();
    assert_eq!(names, ["rust", "rust", "rust"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_kratos_both_ways_over_consul() {
    let agent = ConsulAgent::start();
    let addr = agent.http_addr();
    let driver = KratosDriver::default()
        .with_registry(&format!("consul://{addr}"))
        .unwrap();
    tls_interop_both_ways(["-consul", &addr], &driver, |name| {
        format!("discovery:///{name}")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_calls_a_kratos_server_registered_in_consul_by_kratos() {
    let agent = ConsulAgent::start();
    let addr = agent.http_addr();
    let listen = format!("127.0.0.1:{}", free_port());
    let _go = GoProcess::start(
        "kratos-echo-server",
        &[
            "-consul", &addr, "-service", "kbusi", "-listen", &listen, "-name", "go1",
        ],
    );
    // kratos' own registration: the facts the decoder relies on.
    let s = &wait_services(&agent, "kbusi", 1)[0];
    assert_eq!(s["Tags"], serde_json::json!(["version=v1"]));
    assert_eq!(
        s["TaggedAddresses"]["grpc"]["Address"],
        format!("grpc://{listen}")
    );
    // kratos' checks start critical; passing-only resolution sees the instance once
    // its first TTL heartbeat (1 s) and TCP probe (≤ 10 s) passed.
    let driver = KratosDriver::default()
        .with_registry(&format!("consul://{addr}"))
        .unwrap();
    for target in [
        "discovery:///kbusi".to_string(),
        format!("consul://{addr}/kbusi"),
    ] {
        let channel = Channel::builder(&target)
            .driver(&driver)
            .unwrap()
            .connect()
            .unwrap();
        assert_eq!(
            say_eventually(channel.clone(), Duration::from_secs(25)).await,
            "go1"
        );
        let status = channel.status();
        assert_eq!(status.endpoints[0].endpoint.addr, listen);
        assert_eq!(status.endpoints[0].endpoint.metadata["version"], "v1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_restart_under_steady_traffic_fails_no_call_and_registration_returns_within_5s() {
    let mut agent = ConsulAgent::start();
    let addr = agent.http_addr();
    let echo = EchoServer::start("steady").await;
    let driver = KratosDriver::default()
        .with_registry(&format!("consul://{addr}"))
        .unwrap();
    let _reg = driver
        .register_service("discovery:///steady", &echo.addr())
        .await
        .unwrap();
    let channel = Channel::builder("discovery:///steady")
        .driver(&driver)
        .unwrap()
        .connect()
        .unwrap();
    assert_eq!(
        say_eventually(channel.clone(), Duration::from_secs(10)).await,
        "steady"
    );
    let traffic = SteadyTraffic::start(channel.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| agent.kill());
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| agent.restart());
    let restarted = Instant::now();
    let until = restarted + Duration::from_secs(5);
    loop {
        let (code, body) = tokio::task::block_in_place(|| {
            agent.api("GET", "/v1/health/service/steady?passing=true", "")
        });
        if code == 200 && body.contains("steady") {
            break;
        }
        assert!(
            Instant::now() < until,
            "the registration was not back (passing) within 5 s of the restart: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "registration back {:?} after the restart",
        restarted.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (calls, failures) = traffic.stop().await;
    assert!(calls > 50, "too little traffic");
    assert_eq!(failures, 0);
    let args: Vec<String> = ["-consul", &addr, "-service", "steady", "-n", "2"]
        .map(String::from)
        .into();
    let names = tokio::task::spawn_blocking(move || kratos_client(&args))
        .await
        .unwrap();
    assert_eq!(names, ["steady", "steady"]);
}
