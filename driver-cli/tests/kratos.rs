//! `dtmdriver` with `dtm-driver-kratos` against a real, private etcd and the real kratos
//! client from `interop/kratos/` (built by `bash interop/build.sh`).

mod common;

use common::{Running, run_bounded, run_ok};

use std::process::Command;
use std::time::Duration;

use etcd_client::{Client, GetOptions};
use serde_json::Value;
use test_support::{ConsulAgent, EchoServer, EtcdServer, TestPki, run_interop};

fn kratos_client(etcd: &str, service: &str) -> Vec<String> {
    kratos_client_on("-etcd", etcd, service)
}

/// Runs the kratos Go client against `registry` (`-etcd HOSTS` or `-consul ADDR`).
fn kratos_client_on(flag: &str, registry: &str, service: &str) -> Vec<String> {
    let args = [flag, registry, "-service", service, "-n", "2"];
    run_interop("kratos-echo-client", &args, Duration::from_secs(40))
}

async fn list(client: &mut Client, prefix: &str) -> Vec<(String, Value, i64)> {
    let resp = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    resp.kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_string(),
                serde_json::from_slice(kv.value()).unwrap(),
                kv.lease(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_writes_a_kratos_instance_a_kratos_client_calls_and_sigint_removes_it() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let mut client = Client::connect([ep.as_str()], None).await.unwrap();
    let echo = EchoServer::start("cli-registered").await;
    let target = format!("etcd://{ep}/busi");
    let endpoint = format!("grpc://{}", echo.addr());
    let running = Running::start(&[
        "--driver",
        "dtm-driver-kratos",
        "register",
        &target,
        &endpoint,
    ]);
    let (_, line) = running.next_line(Duration::from_secs(10));
    assert!(line.contains("registered"), "{line}");
    let kvs = list(&mut client, "/microservices/busi/").await;
    assert_eq!(kvs.len(), 1, "{kvs:?}");
    let (key, value, lease) = &kvs[0];
    let id = value["id"].as_str().unwrap();
    assert_eq!(key, &format!("/microservices/busi/{id}"));
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(value["name"], "busi");
    assert_eq!(value["endpoints"], serde_json::json!([endpoint]));
    let ttl = client.lease_time_to_live(*lease, None).await.unwrap();
    assert_eq!(ttl.granted_ttl(), 15);

    let ep2 = ep.clone();
    let names = tokio::task::spawn_blocking(move || kratos_client(&ep2, "busi"))
        .await
        .unwrap();
    assert_eq!(names, ["cli-registered", "cli-registered"]);

    // The registry of discovery:/// comes from DTM_KRATOS_REGISTRY.
    let mut resolve = Command::new(env!("CARGO_BIN_EXE_dtmdriver"));
    resolve
        .args([
            "--driver",
            "dtm-driver-kratos",
            "resolve",
            "discovery:///busi",
        ])
        .env_remove("DTM_DRIVER")
        .env("DTM_KRATOS_REGISTRY", format!("etcd://{ep}"));
    let out = run_ok(resolve, "dtmdriver resolve").await;
    let resolved: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(resolved["endpoints"][0]["addr"], echo.addr());
    assert_eq!(resolved["endpoints"][0]["metadata"]["id"], id);

    running.interrupt();
    assert!(
        list(&mut client, "/microservices/busi/").await.is_empty(),
        "the key must be gone once dtmdriver exits"
    );
}

#[test]
fn resolve_discovery_without_a_registry_says_how_to_name_one() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dtmdriver"));
    command
        .args([
            "--driver",
            "dtm-driver-kratos",
            "resolve",
            "discovery:///busi",
        ])
        .env_remove("DTM_DRIVER")
        .env_remove("DTM_KRATOS_REGISTRY");
    let out = run_bounded(command, "dtmdriver resolve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("or set KratosDriver::with_registry or DTM_KRATOS_REGISTRY to one")
            && err.contains("?registry=etcd://HOST:2379"),
        "{err}"
    );
}

/// The same over consul: the CLI registers a kratos instance in the agent, the kratos
/// Go client (kratos' own consul registry) calls it, and SIGINT deregisters it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_in_consul_a_kratos_client_calls_and_sigint_deregisters() {
    let agent = ConsulAgent::start();
    let echo = EchoServer::start("cli-consul-registered").await;
    let target = format!("consul://{}/busi", agent.http_addr());
    let endpoint = format!("grpc://{}", echo.addr());
    let running = Running::start(&[
        "--driver",
        "dtm-driver-kratos",
        "register",
        &target,
        &endpoint,
    ]);
    let (_, line) = running.next_line(Duration::from_secs(10));
    assert!(line.contains("registered"), "{line}");

    let (status, body) = agent.api("GET", "/v1/agent/services", "");
    assert_eq!(status, 200, "{body}");
    let services: Value = serde_json::from_str(&body).unwrap();
    let instances: Vec<&Value> = services
        .as_object()
        .unwrap()
        .values()
        .filter(|s| s["Service"] == "busi")
        .collect();
    assert_eq!(instances.len(), 1, "{body}");
    assert_eq!(
        instances[0]["TaggedAddresses"]["grpc"]["Address"],
        endpoint.as_str(),
        "{body}"
    );

    let addr = agent.http_addr();
    let names = tokio::task::spawn_blocking(move || kratos_client_on("-consul", &addr, "busi"))
        .await
        .unwrap();
    assert_eq!(names, ["cli-consul-registered", "cli-consul-registered"]);

    running.interrupt();
    let (_, body) = agent.api("GET", "/v1/agent/services", "");
    let services: Value = serde_json::from_str(&body).unwrap();
    assert!(
        !services
            .as_object()
            .unwrap()
            .values()
            .any(|s| s["Service"] == "busi"),
        "the service must be gone once dtmdriver exits: {body}"
    );
}

/// The echo reply bytes of server `name` to `SayRequest{message: "hi"}`, in hex.
fn reply_hex(name: &str) -> String {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    format!("0a02686912{:02x}{hex}", name.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_with_tls_ca_takes_the_grpcs_endpoints_and_checks_the_service_name() {
    use dtmdriver_core::Driver;
    let server = EtcdServer::start();
    let ep = server.endpoint();
    // kratos' Go client checks the certificate against the service name; so do we.
    let pki = TestPki::new(&["secure"]);
    let tls = EchoServer::start_tls("tls", &pki).await;
    let plain = EchoServer::start("plain").await;
    let driver = dtmdriver_kratos::KratosDriver::default()
        .with_registry(&format!("etcd://{ep}"))
        .unwrap();
    let _tls_reg = driver
        .register_service("discovery:///secure", &format!("grpcs://{}", tls.addr()))
        .await
        .unwrap();
    let _plain_reg = driver
        .register_service("discovery:///secure", &format!("grpc://{}", plain.addr()))
        .await
        .unwrap();
    let ca = pki.path("ca.pem").display().to_string();
    let call = move |tls_args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dtmdriver"));
        command
            .args(["--driver", "dtm-driver-kratos", "call"])
            .args([
                "discovery:///secure/echo.Echo/Say",
                "--data-hex",
                "0a026869",
            ])
            .args(tls_args)
            .env_remove("DTM_DRIVER")
            .env("DTM_KRATOS_REGISTRY", format!("etcd://{ep}"));
        command
    };
    for (command, expected) in [
        (call(&["--tls-ca", &ca]), reply_hex("tls")),
        (call(&[]), reply_hex("plain")),
    ] {
        let out = run_ok(command, "dtmdriver call").await;
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);
    }
    assert_eq!((tls.calls(), plain.calls()), (1, 1));
}
