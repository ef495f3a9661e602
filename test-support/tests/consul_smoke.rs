//! Smoke tests of the private consul agents, over plain HTTP/1.1 on loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use test_support::ConsulAgent;

/// One bounded HTTP/1.1 request; returns the status line and the body.
fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to consul");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let token = token.map_or(String::new(), |t| format!("X-Consul-Token: {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{token}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let code = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_string();
    (code, body)
}

#[test]
fn registrations_are_lost_on_restart_and_ports_kept() {
    let mut agent = ConsulAgent::start();
    let addr = agent.http_addr();
    let (code, _) = http(
        &addr,
        "PUT",
        "/v1/agent/service/register",
        None,
        r#"{"ID":"s-1","Name":"s","Address":"127.0.0.1","Port":1}"#,
    );
    assert_eq!(code, 200);
    let (_, services) = http(&addr, "GET", "/v1/agent/services", None, "");
    assert!(services.contains("\"s-1\""), "{services}");
    agent.kill();
    assert!(!agent.is_running());
    assert!(
        TcpStream::connect(&addr).is_err(),
        "a killed agent still answers"
    );
    agent.restart();
    assert_eq!(agent.http_addr(), addr);
    let (code, services) = http(&addr, "GET", "/v1/agent/services", None, "");
    assert_eq!(code, 200);
    assert!(!services.contains("\"s-1\""), "dev mode kept {services}");
}

#[test]
fn acl_agent_refuses_writes_without_the_token() {
    let token = "3f1e4c2a-9b7d-4e6f-8a5c-1d2e3f4a5b6c";
    let agent = ConsulAgent::start_with_acl(token);
    assert_eq!(agent.acl_token(), Some(token));
    let body = r#"{"ID":"s-1","Name":"s","Port":1}"#;
    let (code, text) = http(
        &agent.http_addr(),
        "PUT",
        "/v1/agent/service/register",
        None,
        body,
    );
    assert_eq!(code, 403, "{text}");
    let (code, text) = http(
        &agent.http_addr(),
        "PUT",
        "/v1/agent/service/register",
        Some(token),
        body,
    );
    assert_eq!(code, 200, "{text}");
}

/// Three servers and a client agent: a service registered with the client agent is in
/// the catalog; the leader killed, the two others elect a new one, and the restarted
/// server rejoins with its state.
#[test]
fn a_cluster_elects_a_new_leader_and_a_server_rejoins() {
    let mut cluster = test_support::ConsulCluster::start(3);
    let client = cluster.client().http_addr();
    let (code, _) = http(
        &client,
        "PUT",
        "/v1/agent/service/register",
        None,
        r#"{"ID":"c-1","Name":"c","Address":"127.0.0.1","Port":1}"#,
    );
    assert_eq!(code, 200);
    let leader = cluster.wait_for_leader();
    let started = std::time::Instant::now();
    cluster.kill_server(leader);
    let next = cluster.wait_for_leader();
    eprintln!(
        "server {leader} killed; server {next} leads after {:?}",
        started.elapsed()
    );
    assert_ne!(next, leader);
    let (code, body) = http(&client, "GET", "/v1/catalog/service/c", None, "");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"c-1\""), "{body}");
    cluster.restart_server(leader);
    let (code, members) = http(&client, "GET", "/v1/status/peers", None, "");
    assert_eq!(code, 200, "{members}");
    let port = cluster.server(leader).server_port();
    assert!(members.contains(&format!(":{port}")), "{members}");
}
