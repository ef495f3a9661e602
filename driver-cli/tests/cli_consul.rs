//! `dtmdriver` with `dtm-driver-gozero` against a real, private consul agent.

mod common;

use common::Running;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use test_support::ConsulAgent;

fn get(agent: &ConsulAgent, path: &str) -> Value {
    let (code, body) = agent.api("GET", path, "");
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

const ID: &str = "trans.rpc-127.0.0.1-9000";

fn register(agent: &ConsulAgent) -> (Running, Instant) {
    let target = format!("consul://{}/trans.rpc", agent.http_addr());
    let running = Running::start(&[
        "--driver",
        "dtm-driver-gozero",
        "register",
        &target,
        "127.0.0.1:9000",
    ]);
    let (at, line) = running.next_line(Duration::from_secs(10));
    assert!(line.contains("registered"), "{line}");
    (running, at)
}

#[test]
fn register_shows_the_go_zero_consul_fields_and_sigint_deregisters() {
    let agent = ConsulAgent::start();
    let (running, _) = register(&agent);
    let services = get(&agent, "/v1/agent/services");
    let service = &services[ID];
    assert_eq!(service["ID"], ID);
    assert_eq!(service["Service"], "trans.rpc");
    assert_eq!(service["Address"], "127.0.0.1");
    assert_eq!(service["Port"], 9000);
    assert_eq!(service["Tags"], json!(["tag", "rpc"]));
    assert_eq!(service["Meta"], json!({"Protocol": "grpc"}));
    let check = &get(&agent, "/v1/agent/checks")[ID];
    assert_eq!(check["CheckID"], ID);
    assert_eq!(check["Type"], "ttl");
    assert_eq!(check["Status"], "passing");
    assert_eq!(check["ServiceID"], ID);

    assert!(running.signal("INT"), "dtmdriver did not exit 0 on SIGINT");
    assert!(
        get(&agent, "/v1/agent/services").get(ID).is_none(),
        "the service must be gone once dtmdriver exits"
    );
}

/// The registration's check has go-zero's 20 s TTL: a SIGKILLed registrar's instance
/// stays passing until then and turns critical right after.
#[test]
fn a_killed_registrar_turns_critical_after_the_20s_ttl() {
    let agent = ConsulAgent::start();
    let (running, registered) = register(&agent);
    assert!(!running.signal("KILL"));
    let status = || get(&agent, "/v1/agent/checks")[ID]["Status"].clone();
    std::thread::sleep(Duration::from_secs(15));
    assert_eq!(status(), "passing", "critical before the TTL ran out");
    let critical = loop {
        if status() == "critical" {
            break registered.elapsed();
        }
        assert!(
            registered.elapsed() < Duration::from_secs(30),
            "still not critical 30 s after registering"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("killed registrar: critical {critical:?} after registering");
    assert!(critical >= Duration::from_secs(19), "{critical:?}");
    let check = &get(&agent, "/v1/agent/checks")[ID];
    assert!(
        check["Output"]
            .as_str()
            .unwrap_or_default()
            .contains("TTL expired"),
        "{check}"
    );
}

#[test]
fn resolve_watch_follows_consul_changes() {
    let agent = ConsulAgent::start();
    let target = format!("consul://{}/w?wait=14s", agent.http_addr());
    let running = Running::start(&[
        "--driver",
        "dtm-driver-gozero",
        "resolve",
        &target,
        "--watch",
    ]);
    let (_, first) = running.next_line(Duration::from_secs(10));
    assert!(first.contains(r#""endpoints":[]"#), "{first}");
    let mut took = Vec::new();
    for i in 1..=10u16 {
        let port = 30000 + i;
        let body =
            json!({"ID": format!("w-{i}"), "Name": "w", "Address": "127.0.0.1", "Port": port});
        let start = Instant::now();
        let (code, text) = agent.api("PUT", "/v1/agent/service/register", &body.to_string());
        assert_eq!(code, 200, "{text}");
        let (at, line) = running.next_line(Duration::from_secs(2));
        assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
        took.push(at.duration_since(start));
    }
    let (code, text) = agent.api("PUT", "/v1/agent/service/deregister/w-1", "");
    assert_eq!(code, 200, "{text}");
    let (_, line) = running.next_line(Duration::from_secs(2));
    assert!(!line.contains("127.0.0.1:30001"), "{line}");
    took.sort();
    eprintln!(
        "consul register -> dtmdriver line: median {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert!(
        took[took.len() / 2] < Duration::from_millis(200),
        "{took:?}"
    );
    assert!(running.signal("INT"));
}

#[test]
fn register_without_the_acl_token_says_how_to_pass_it() {
    let token = "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a";
    let agent = ConsulAgent::start_with_acl(token);
    let target = format!("consul://{}/trans.rpc", agent.http_addr());
    let mut child = Command::new(env!("CARGO_BIN_EXE_dtmdriver"))
        .args([
            "--driver",
            "dtm-driver-gozero",
            "register",
            &target,
            "127.0.0.1:9000",
        ])
        .env_remove("CONSUL_HTTP_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dtmdriver");
    let until = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("dtmdriver kept running although consul refused the registration");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("refused")
            && stderr.contains("?token=")
            && stderr.contains("CONSUL_HTTP_TOKEN"),
        "{stderr}"
    );

    // With the token on the target it registers.
    let with_token = format!("{target}?token={token}");
    let running = Running::start(&[
        "--driver",
        "dtm-driver-gozero",
        "register",
        &with_token,
        "127.0.0.1:9000",
    ]);
    let (_, line) = running.next_line(Duration::from_secs(10));
    assert!(line.contains("registered"), "{line}");
    assert!(get(&agent, "/v1/agent/services").get(ID).is_some());
    assert!(running.signal("INT"));
    assert!(get(&agent, "/v1/agent/services").get(ID).is_none());
}
