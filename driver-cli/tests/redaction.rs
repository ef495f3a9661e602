//! No password or token given to `dtmdriver` shows up in anything it prints: stdout,
//! errors, or logs at every level (`RUST_LOG=trace`), whether the command succeeds or
//! fails, for every way a target can carry a credential.

use std::process::{Command, Output};

use test_support::{ConsulAgent, EtcdServer, free_port};

const SECRET: &str = "s3cr3tPW";

/// Runs `dtmdriver ARGS` with every log level on; its stdout and stderr together.
fn run(args: &[&str]) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dtmdriver"))
        .args(args)
        .env_remove("DTM_DRIVER")
        .env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("DTM_KRATOS_REGISTRY")
        .env("RUST_LOG", "trace")
        .output()
        .expect("run dtmdriver");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

fn assert_hidden(args: &[&str], secret: &str) -> Output {
    let (out, text) = run(args);
    assert!(
        !text.contains(secret),
        "`dtmdriver {}` printed the secret:\n{text}",
        args.join(" ")
    );
    assert!(!text.contains("panicked"), "{text}");
    out
}

#[test]
fn failing_commands_never_print_credentials() {
    let dead = free_port();
    let encoded = format!("etcd%3A%2F%2Froot%3A{SECRET}%40127.0.0.1%3A{dead}");
    let cases: Vec<Vec<String>> = vec![
        // userinfo, plain and with characters that should have been escaped
        vec![
            "--driver".into(),
            "dtm-driver-gozero".into(),
            "resolve".into(),
            format!("etcd://root:{SECRET}@127.0.0.1:{dead}/svc"),
            "--timeout".into(),
            "1".into(),
        ],
        vec![
            "--driver".into(),
            "dtm-driver-gozero".into(),
            "resolve".into(),
            format!("etcd://root:{SECRET}/x@127.0.0.1:{dead}/svc"),
            "--timeout".into(),
            "1".into(),
        ],
        // query parameters
        vec![
            "--driver".into(),
            "dtm-driver-gozero".into(),
            "resolve".into(),
            format!("etcd:///127.0.0.1:{dead}?key=svc&user=root&password={SECRET}"),
            "--timeout".into(),
            "1".into(),
        ],
        vec![
            "--driver".into(),
            "dtm-driver-consul".into(),
            "resolve".into(),
            format!("consul://127.0.0.1:{dead}/svc?token={SECRET}"),
            "--timeout".into(),
            "1".into(),
        ],
        // nested in kratos' registry=, plain and percent-encoded
        vec![
            "--driver".into(),
            "dtm-driver-kratos".into(),
            "resolve".into(),
            format!("discovery:///svc?registry=etcd://root:{SECRET}@127.0.0.1:{dead}"),
            "--timeout".into(),
            "1".into(),
        ],
        vec![
            "--driver".into(),
            "dtm-driver-kratos".into(),
            "resolve".into(),
            format!("discovery:///svc?registry={encoded}"),
            "--timeout".into(),
            "1".into(),
        ],
        // a call: the channel's status message
        vec![
            "--driver".into(),
            "dtm-driver-gozero".into(),
            "call".into(),
            format!("etcd://root:{SECRET}@127.0.0.1:{dead}/svc/pb.S/M"),
            "--timeout".into(),
            "1".into(),
        ],
        // bad input: parse and registration errors
        vec![
            "--driver".into(),
            "dtm-driver-gozero".into(),
            "parse".into(),
            format!("etcd://root:{SECRET}@h:2379"),
        ],
        vec![
            "--driver".into(),
            "dtm-driver-gozero".into(),
            "register".into(),
            format!("etcd://root:{SECRET}@127.0.0.1:{dead}/svc"),
            "not an endpoint".into(),
        ],
    ];
    for args in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = assert_hidden(&args, SECRET);
        assert!(!out.status.success(), "{args:?} should fail");
    }
}

#[test]
fn parse_shows_the_server_without_its_password() {
    let out = assert_hidden(
        &[
            "--driver",
            "dtm-driver-gozero",
            "parse",
            &format!("etcd://root:{SECRET}@127.0.0.1:2379/trans/pb.S/M"),
        ],
        SECRET,
    );
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"server":"etcd://root:***@127.0.0.1:2379/trans","method":"/pb.S/M"}"#
    );
}

#[test]
fn a_consul_acl_token_is_used_but_never_shown() {
    let token = "0e4c2a18-7b3d-4f6e-9a1c-5d2b8e7f3a90";
    let agent = ConsulAgent::start_with_acl(token);
    let target = format!("consul://{}/redacted-svc?token={token}", agent.http_addr());
    let out = assert_hidden(
        &[
            "--driver",
            "dtm-driver-gozero",
            "resolve",
            &target,
            "--timeout",
            "5",
        ],
        token,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("token=***"), "{stdout}");
}

#[test]
fn etcd_credentials_on_a_live_etcd_are_never_shown() {
    // etcd without auth accepts the connection; the credentials must still stay hidden
    // in the resolved output and every log line.
    let server = EtcdServer::start();
    let target = format!(
        "etcd:///{}?key=svc&user=root&password={SECRET}",
        server.endpoint()
    );
    let (_, text) = run(&[
        "--driver",
        "dtm-driver-gozero",
        "resolve",
        &target,
        "--timeout",
        "3",
    ]);
    assert!(!text.contains(SECRET), "{text}");
}
