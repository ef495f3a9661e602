//! dtm-driver-kratos over a real etcd, against real kratos (v2.9.2, contrib etcd
//! registry) programs from `interop/kratos/`.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{
    GoProcess, SteadyTraffic, kratos_client, median_p99, start_tls_echo, tls_interop_both_ways,
};
use dtmdriver_core::resolve::{Resolver, SnapshotSender};
use dtmdriver_core::{Channel, Driver, Target, TlsConnector};
use dtmdriver_kratos::{KratosDriver, Security};
use etcd_client::{Client, GetOptions, PutOptions};
use serde_json::Value;
use test_support::{EchoServer, EtcdServer, free_port, say};

async fn etcd(endpoint: &str) -> Client {
    Client::connect([endpoint], None).await.unwrap()
}

/// Every key under `prefix` with its JSON value and lease, waiting (bounded) for `n`.
async fn wait_keys(client: &mut Client, prefix: &str, n: usize) -> Vec<(String, Value, i64)> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let resp = client
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        if resp.kvs().len() == n {
            return resp
                .kvs()
                .iter()
                .map(|kv| {
                    (
                        kv.key_str().unwrap().to_string(),
                        serde_json::from_slice(kv.value()).unwrap(),
                        kv.lease(),
                    )
                })
                .collect();
        }
        assert!(
            Instant::now() < until,
            "{n} keys under {prefix} did not appear within 20 s (have {})",
            resp.kvs().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn driver_for(ep: &str) -> KratosDriver {
    KratosDriver::default()
        .with_registry(&format!("etcd://{ep}"))
        .unwrap()
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_writes_kratos_key_json_and_15s_lease_and_deregistration_removes_it() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let mut client = etcd(&ep).await;
    let driver = KratosDriver::default().version("v1").metadata("zone", "a");
    let reg = driver
        .register_service(
            &format!("etcd://{ep}/busi?version=v2&meta.tier=gold"),
            "127.0.0.1:9000",
        )
        .await
        .unwrap();
    let keys = wait_keys(&mut client, "/microservices/busi/", 1).await;
    let (key, value, lease) = &keys[0];
    let id = value["id"].as_str().unwrap();
    assert!(is_uuid(id), "{id}");
    assert_eq!(key, &format!("/microservices/busi/{id}"));
    assert_eq!(
        value,
        &serde_json::json!({"id": id, "name": "busi", "version": "v2",
            "metadata": {"tier": "gold", "zone": "a"}, "endpoints": ["grpc://127.0.0.1:9000"]})
    );
    let ttl = client.lease_time_to_live(*lease, None).await.unwrap();
    assert_eq!(ttl.granted_ttl(), 15);
    // `?ttl=` is the lease's, as on every engine.
    let longer = driver
        .register_service(&format!("etcd://{ep}/longer?ttl=40s"), "127.0.0.1:9002")
        .await
        .unwrap();
    let (_, _, lease) = &wait_keys(&mut client, "/microservices/longer/", 1).await[0];
    let ttl = client.lease_time_to_live(*lease, None).await.unwrap();
    assert_eq!(ttl.granted_ttl(), 40);
    longer.deregister().await.unwrap();

    // `discovery://hosts/name` registers in etcd at those hosts too, with a new id,
    // and without configuration metadata is null.
    let plain = KratosDriver::default()
        .register_service(
            &format!("discovery://{ep}/busi"),
            "grpcs://127.0.0.1:9443,grpc://127.0.0.1:9001",
        )
        .await
        .unwrap();
    let keys = wait_keys(&mut client, "/microservices/busi/", 2).await;
    let second = keys.iter().find(|(k, _, _)| k != key).unwrap();
    assert_ne!(second.1["id"], value["id"]);
    assert_eq!(second.1["metadata"], Value::Null);
    assert_eq!(
        second.1["endpoints"],
        serde_json::json!(["grpcs://127.0.0.1:9443", "grpc://127.0.0.1:9001"])
    );

    reg.deregister().await.unwrap();
    plain.deregister().await.unwrap();
    let left = client
        .get(
            "/microservices/busi/",
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert_eq!(
        left.kvs().len(),
        0,
        "deregistering must remove the keys at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kratos_go_client_calls_a_rust_service_registered_by_the_driver() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let rust = EchoServer::start("rust").await;
    let _reg = KratosDriver::default()
        .register_service(
            &format!("discovery:///busi?registry=etcd://{ep}"),
            &format!("grpc://{}", rust.addr()),
        )
        .await
        .unwrap();
    let args: Vec<String> = ["-etcd", &ep, "-service", "busi", "-n", "3"]
        .map(String::from)
        .into();
    let names = tokio::task::spawn_blocking(move || kratos_client(&args))
        .await
        .unwrap();
    assert_eq!(names, ["rust", "rust", "rust"]);
    assert_eq!(rust.calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_on_discovery_target_calls_a_kratos_server_registered_by_kratos() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let mut client = etcd(&ep).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let mut go = GoProcess::start(
        "kratos-echo-server",
        &[
            "-etcd", &ep, "-service", "kbusi", "-listen", &listen, "-name", "go1", "-weight", "5",
        ],
    );
    // kratos' own registration, as it lands in etcd: the facts this driver relies on.
    let keys = wait_keys(&mut client, "/microservices/kbusi/", 1).await;
    let (key, value, lease) = &keys[0];
    let id = value["id"].as_str().unwrap();
    assert!(is_uuid(id), "{id}");
    assert_eq!(key, &format!("/microservices/kbusi/{id}"));
    assert_eq!(value["name"], "kbusi");
    assert_eq!(value["version"], "v1");
    assert_eq!(
        value["endpoints"],
        serde_json::json!([format!("grpc://{listen}")])
    );
    assert_eq!(value["metadata"]["weight"], "5");
    assert_eq!(
        client
            .lease_time_to_live(*lease, None)
            .await
            .unwrap()
            .granted_ttl(),
        15
    );

    let driver = driver_for(&ep);
    let channel = Channel::builder("discovery:///kbusi")
        .driver(&driver)
        .unwrap()
        .connect()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(say(&channel).await.unwrap(), "go1");
    }
    let status = channel.status();
    let endpoint = &status.endpoints[0];
    assert_eq!(endpoint.endpoint.addr, listen);
    assert_eq!(endpoint.endpoint.weight, 5);
    assert_eq!(endpoint.endpoint.metadata["version"], "v1");
    assert_eq!(endpoint.endpoint.metadata["id"], id);
    // The direct etcd form finds the same instance.
    let direct = Channel::builder(&format!("etcd://{ep}/kbusi"))
        .driver(&driver)
        .unwrap()
        .connect()
        .unwrap();
    assert_eq!(say(&direct).await.unwrap(), "go1");

    // kratos deregisters on SIGINT; the channel learns the set is empty and fails fast.
    go.interrupt();
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match say(&channel).await {
            Err(e) if e.code() == tonic::Code::Unavailable && e.message().contains("kbusi") => {
                break;
            }
            other => assert!(
                Instant::now() < until,
                "the kratos deregistration did not reach the channel within 5 s: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcs_endpoints_go_only_to_tls_clients() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let plain = EchoServer::start("plain").await;
    let (tls_echo, ca_pem) = start_tls_echo().await;
    let tls_addr = tls_echo.addr();
    let tls_port = tls_addr.rsplit_once(':').unwrap().1;
    let driver = driver_for(&ep);
    // One instance serving both (kratos ≥ 2.3 style), one TLS-only in the kratos 2.2
    // style, one plaintext-only.
    let _both = driver
        .register_service(
            "discovery:///sec",
            &format!("grpcs://localhost:{tls_port},grpc://{}", plain.addr()),
        )
        .await
        .unwrap();
    let _legacy = driver
        .register_service(
            "discovery:///sec",
            &format!("grpc://localhost:{tls_port}?isSecure=true"),
        )
        .await
        .unwrap();

    let plaintext = Channel::builder("discovery:///sec")
        .driver(&driver)
        .unwrap()
        .connect()
        .unwrap();
    for _ in 0..4 {
        assert_eq!(say(&plaintext).await.unwrap(), "plain");
    }
    let addrs: Vec<String> = plaintext
        .status()
        .endpoints
        .iter()
        .map(|e| e.endpoint.addr.clone())
        .collect();
    assert_eq!(addrs, [plain.addr()]);

    let tls = TlsConnector::from_ca_pem(ca_pem.as_bytes())
        .unwrap()
        .with_server_name("localhost");
    let secure = driver
        .tls_channel("discovery:///sec", tls)
        .unwrap()
        .connect()
        .unwrap();
    for _ in 0..4 {
        assert_eq!(say(&secure).await.unwrap(), "tls");
    }
    let addrs: Vec<String> = secure
        .status()
        .endpoints
        .iter()
        .map(|e| e.endpoint.addr.clone())
        .collect();
    assert_eq!(addrs, [format!("localhost:{tls_port}")]);

    // The kratos Go client (plaintext, kratos 2.9) also takes only the grpc:// endpoint.
    let args: Vec<String> = ["-etcd", &ep, "-service", "sec", "-n", "3"]
        .map(String::from)
        .into();
    let names = tokio::task::spawn_blocking(move || kratos_client(&args))
        .await
        .unwrap();
    assert_eq!(names, ["plain", "plain", "plain"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_kratos_both_ways_over_etcd() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    tls_interop_both_ways(["-etcd", &ep], &driver_for(&ep), |name| {
        format!("discovery:///{name}")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_other_services_under_the_prefix_are_skipped() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let mut client = etcd(&ep).await;
    let rust = EchoServer::start("good").await;
    let _reg = driver_for(&ep)
        .register_service("discovery:///gar", &rust.addr())
        .await
        .unwrap();
    client
        .put("/microservices/gar/garbage", "127.0.0.1:1", None)
        .await
        .unwrap();
    client
        .put(
            "/microservices/garage/x",
            r#"{"id":"x","name":"garage","endpoints":["grpc://127.0.0.1:2"]}"#,
            None,
        )
        .await
        .unwrap();
    let (tx, mut rx) = SnapshotSender::channel();
    driver_for(&ep)
        .resolver(Security::Plaintext)
        .resolve(&Target::parse("discovery:///gar").unwrap(), tx)
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    let endpoints = loop {
        let state = rx.borrow_and_update().clone();
        if let Some(endpoints) = state.endpoints {
            break endpoints;
        }
        assert!(
            Instant::now() < until,
            "no resolution within 10 s: {state:?}"
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
    };
    let addrs: Vec<&str> = endpoints.iter().map(|e| e.addr.as_str()).collect();
    assert_eq!(addrs, [rust.addr()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restart_under_steady_traffic_fails_no_call_and_registration_returns_within_5s() {
    let mut server = EtcdServer::start();
    let ep = server.endpoint();
    let rust = EchoServer::start("steady").await;
    let driver = driver_for(&ep);
    let _reg = driver
        .register_service("discovery:///steady", &rust.addr())
        .await
        .unwrap();
    let channel = Channel::builder("discovery:///steady")
        .driver(&driver)
        .unwrap()
        .connect()
        .unwrap();
    assert_eq!(say(&channel).await.unwrap(), "steady");

    let traffic = SteadyTraffic::start(channel.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart();
    let restarted = Instant::now();
    // The registration is (still or again) there and its lease is being renewed.
    let mut client = etcd(&ep).await;
    let until = restarted + Duration::from_secs(5);
    loop {
        let resp = client
            .get(
                "/microservices/steady/",
                Some(GetOptions::new().with_prefix()),
            )
            .await;
        if let Ok(resp) = resp
            && resp.kvs().len() == 1
        {
            break;
        }
        assert!(
            Instant::now() < until,
            "the registration was not back within 5 s of the restart"
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
    // The kratos Go client finds it after the restart.
    let args: Vec<String> = ["-etcd", &ep, "-service", "steady", "-n", "2"]
        .map(String::from)
        .into();
    let names = tokio::task::spawn_blocking(move || kratos_client(&args))
        .await
        .unwrap();
    assert_eq!(names, ["steady", "steady"]);
}

/// How long a put of a new instance takes to reach (a) a `discovery:///` resolver of
/// this driver and (b) the kratos Go client's etcd watcher, on the same etcd; and the
/// same for its deletion (beside a steady instance). Prints median and p99 of both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_propagation_of_discovery_over_etcd_beside_the_kratos_go_client() {
    const ROUNDS: usize = 40;
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let mut client = etcd(&ep).await;
    let go = GoProcess::start(
        "kratos-echo-client",
        &["-etcd", &ep, "-service", "prop", "-watch", "-for", "120s"],
    );
    // The Go watcher prints the (empty) initial set first.
    let (_, first) = go
        .lines
        .recv_timeout(Duration::from_secs(20))
        .expect("kratos watcher printed nothing within 20 s");
    assert!(first.contains("\"endpoints\":[]"), "{first}");

    let (tx, mut rx) = SnapshotSender::channel();
    driver_for(&ep)
        .resolver(Security::Plaintext)
        .resolve(&Target::parse("discovery:///prop").unwrap(), tx)
        .unwrap();

    let lease = client.lease_grant(60, None).await.unwrap().id();
    // A steady instance beside the measured ones: a change that empties the set is held
    // for dtmdriver_etcd::EMPTY_GRACE on purpose, and is not what this measures.
    client
        .put(
            "/microservices/prop/steady",
            r#"{"id":"steady","name":"prop","version":"","metadata":null,"endpoints":["grpc://127.0.0.1:19999"]}"#,
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .unwrap();
    let mut rust = Vec::new();
    let mut kratos = Vec::new();
    for round in 0..ROUNDS {
        let port = 20000 + round;
        let addr = format!("127.0.0.1:{port}");
        let key = format!("/microservices/prop/{round}");
        let value = format!(
            r#"{{"id":"{round}","name":"prop","version":"","metadata":null,"endpoints":["grpc://{addr}"]}}"#
        );
        for put in [true, false] {
            rx.borrow_and_update();
            let start_wall = SystemTime::now();
            let start = Instant::now();
            if put {
                client
                    .put(
                        key.as_str(),
                        value.as_str(),
                        Some(PutOptions::new().with_lease(lease)),
                    )
                    .await
                    .unwrap();
            } else {
                client.delete(key.as_str(), None).await.unwrap();
            }
            let want_present = put;
            // Rust resolver.
            loop {
                let present = rx
                    .borrow()
                    .endpoints
                    .as_ref()
                    .is_some_and(|e| e.iter().any(|e| e.addr == addr));
                if present == want_present {
                    break;
                }
                tokio::time::timeout(Duration::from_secs(5), rx.changed())
                    .await
                    .expect("the Rust resolver missed a change for 5 s")
                    .unwrap();
            }
            rust.push(start.elapsed());
            // kratos Go watcher.
            loop {
                let (_, line) = go
                    .lines
                    .recv_timeout(Duration::from_secs(5))
                    .expect("the kratos watcher missed a change for 5 s");
                if line.contains(&addr) == want_present {
                    let v: Value = serde_json::from_str(&line).unwrap();
                    let printed = std::time::UNIX_EPOCH
                        + Duration::from_nanos(v["unix_nanos"].as_u64().unwrap());
                    kratos.push(printed.duration_since(start_wall).unwrap_or_default());
                    break;
                }
            }
        }
    }
    let (rust_median, rust_p99) = median_p99(&mut rust);
    let (go_median, go_p99) = median_p99(&mut kratos);
    eprintln!(
        "change propagation over etcd, {} changes: dtm-driver-kratos discovery:/// median {rust_median:?} p99 {rust_p99:?}; kratos Go watcher median {go_median:?} p99 {go_p99:?}",
        rust.len()
    );
    assert!(rust_p99 < Duration::from_secs(1), "p99 {rust_p99:?}");
    assert!(
        rust_median < Duration::from_millis(200),
        "median {rust_median:?}"
    );
}
