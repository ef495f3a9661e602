//! The `dtmdriver` binary as a user runs it: commands, JSON shapes, exit codes.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use test_support::{EchoServer, EtcdServer, TestPki, free_port};

fn dtmdriver(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dtmdriver"))
        .args(args)
        .env_remove("DTM_DRIVER")
        .env("RUST_LOG", "error")
        .output()
        .expect("run dtmdriver")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim_end().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn drivers_lists_default_and_the_linked_drivers() {
    let out = dtmdriver(&["drivers"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert!(names.contains(&"default".to_string()), "{names:?}");
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "one name a line, sorted");
}

#[test]
fn parse_prints_server_and_method() {
    let out = dtmdriver(&["parse", "localhost:8080/pb.S/M"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        r#"{"server":"localhost:8080","method":"/pb.S/M"}"#
    );
}

#[test]
fn parse_with_a_scheme_under_the_default_driver_says_to_choose_a_driver() {
    let out = dtmdriver(&["parse", "etcd://h:2379/a/pkg.S/M"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--driver") && err.contains("use_driver"),
        "{err}"
    );
}

#[test]
fn unknown_driver_is_refused_with_the_registered_names() {
    let out = dtmdriver(&["--driver", "dtm-driver-nosuch", "parse", "a/b.C/D"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("dtm-driver-nosuch") && err.contains("default"),
        "{err}"
    );
}

#[test]
fn resolve_direct_prints_both_endpoints() {
    let out = dtmdriver(&["resolve", "direct:///127.0.0.1:1,127.0.0.1:2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        r#"{"target":"direct:///127.0.0.1:1,127.0.0.1:2","endpoints":[{"addr":"127.0.0.1:1","weight":1,"metadata":{}},{"addr":"127.0.0.1:2","weight":1,"metadata":{}}]}"#
    );
}

fn etcd_version() -> String {
    let out = Command::new(test_support::etcd_binary())
        .arg("--version")
        .output()
        .expect("etcd --version");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("etcd Version: "))
        .expect("etcd prints its version")
        .trim()
        .to_string()
}

/// etcd is itself a gRPC server: its Maintenance/Status reply carries its version.
#[test]
fn call_returns_etcd_status_bytes_as_hex() {
    let etcd = EtcdServer::start();
    let uri = format!(
        "direct:///{}/etcdserverpb.Maintenance/Status",
        etcd.endpoint()
    );
    let out = dtmdriver(&["call", &uri]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = hex_decode(&stdout(&out));
    let version = etcd_version();
    assert!(
        bytes
            .windows(version.len())
            .any(|w| w == version.as_bytes()),
        "reply {:?} does not carry etcd's version {version}",
        stdout(&out)
    );
}

#[test]
fn call_to_a_dead_port_fails_unavailable_within_5s() {
    let port = free_port();
    let uri = format!("direct:///127.0.0.1:{port}/etcdserverpb.Maintenance/Status");
    let start = Instant::now();
    let out = dtmdriver(&["call", &uri]);
    let took = start.elapsed();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("UNAVAILABLE"), "{}", stderr(&out));
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn call_fails_over_from_a_dead_endpoint_every_time() {
    let etcd = EtcdServer::start();
    let dead = free_port();
    let uri = format!(
        "direct:///127.0.0.1:{dead},{}/etcdserverpb.Maintenance/Status",
        etcd.endpoint()
    );
    for i in 0..20 {
        let out = dtmdriver(&["call", &uri]);
        assert!(out.status.success(), "call {i}: {}", stderr(&out));
        assert!(!stdout(&out).is_empty());
    }
    let dead2 = free_port();
    let only_dead =
        format!("direct:///127.0.0.1:{dead},127.0.0.1:{dead2}/etcdserverpb.Maintenance/Status");
    let start = Instant::now();
    let out = dtmdriver(&["call", &only_dead]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("UNAVAILABLE"), "{}", stderr(&out));
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn call_rejects_bad_input_with_a_usage_error() {
    let out = dtmdriver(&["call", "direct:///127.0.0.1:1/a.B/C", "--data-hex", "zz"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--data-hex"));
    let out = dtmdriver(&[
        "call",
        "direct:///127.0.0.1:1/a.B/C",
        "--metadata",
        "novalue",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("KEY=VALUE"));
}

/// `echo.SayRequest{message: "hi"}` and the reply of the echo server named "tls".
const SAY_HI: &str = "0a026869";
const TLS_SAYS_HI: &str = "0a0268691203746c73";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_over_tls_trusts_the_given_ca_only() {
    let pki = TestPki::new(&["localhost"]);
    let server = EchoServer::start_tls("tls", &pki).await;
    let uri = format!("direct:///{}/echo.Echo/Say", server.addr());
    let ca = pki.path("ca.pem").display().to_string();
    let other_ca = pki.write_other_ca("other.pem").display().to_string();
    let missing = pki.path("missing.pem").display().to_string();
    let run = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || {
            dtmdriver(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .unwrap()
    };
    let call = |extra: &[&str]| {
        let mut args: Vec<String> = ["call", &uri, "--data-hex", SAY_HI, "--timeout", "3"]
            .map(String::from)
            .into();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };

    let out = run(call(&["--tls-ca", &ca, "--tls-server-name", "localhost"])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), TLS_SAYS_HI);

    // The endpoint's host (127.0.0.1) is not in the certificate.
    let out = run(call(&["--tls-ca", &ca])).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("127.0.0.1"), "{}", stderr(&out));

    let out = run(call(&[
        "--tls-ca",
        &other_ca,
        "--tls-server-name",
        "localhost",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("UNAVAILABLE"), "{}", stderr(&out));
    assert!(stderr(&out).contains("TLS"), "{}", stderr(&out));

    // Plaintext to a TLS server fails too.
    let out = run(call(&[])).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    let out = run(call(&["--tls-ca", &missing])).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--tls-ca"), "{}", stderr(&out));
    assert_eq!(server.calls(), 1);
}

fn hex_decode(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2) && !s.is_empty(), "not hex: {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}
