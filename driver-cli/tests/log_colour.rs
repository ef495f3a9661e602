//! `dtmdriver`'s log lines carry ANSI colour only on a terminal, and never with
//! `NO_COLOR` set: `dtmdriver … 2>log` leaves no escape sequences in `log`.
//!
//! The log line comes from a real etcd holding a value that is not an instance (the
//! resolver warns and skips it). The terminal is a pseudo-terminal from util-linux
//! `script`.

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::Client;
use test_support::EtcdServer;

const ESC: char = '\u{1b}';
const WARNING: &str = "skipping an etcd entry that is not a valid instance";

/// A private etcd with one invalid entry under `/micro/svc/`, and the resolve target.
async fn etcd_with_an_invalid_entry() -> (EtcdServer, String) {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let mut client = tokio::time::timeout(Duration::from_secs(5), Client::connect([&ep], None))
        .await
        .expect("connect timed out")
        .expect("connect");
    client.put("/micro/svc/x", "not json", None).await.unwrap();
    (server, format!("etcd://{ep}/svc"))
}

fn args(target: &str) -> [&str; 6] {
    [
        "--driver",
        "dtm-driver-etcd",
        "resolve",
        target,
        "--timeout",
        "5",
    ]
}

/// Waits for `child`, at most 20 s.
fn wait(mut child: std::process::Child, what: &str) {
    let until = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("{what} did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_to_a_file_has_no_escape_sequences() {
    let (_etcd, target) = etcd_with_an_invalid_entry().await;
    let dir = std::env::temp_dir().join(format!("dtmdriver-colour-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("log");
    let child = Command::new(env!("CARGO_BIN_EXE_dtmdriver"))
        .args(args(&target))
        .env_remove("DTM_DRIVER")
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("run dtmdriver");
    wait(child, "dtmdriver resolve");
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(text.contains(WARNING), "{text}");
    assert!(!text.contains(ESC), "escape sequences in a file: {text:?}");
}

/// Runs `dtmdriver ARGS` on a pseudo-terminal with `NO_COLOR` as given; what the
/// terminal showed.
fn on_a_terminal(target: &str, no_color: Option<&str>) -> String {
    let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_dtmdriver"))
        .chain(args(target))
        .map(|a| format!("'{a}'"))
        .collect();
    let mut script = Command::new("script");
    script
        .args(["-qec", &quoted.join(" "), "/dev/null"])
        .env_remove("DTM_DRIVER")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match no_color {
        Some(v) => script.env("NO_COLOR", v),
        None => script.env_remove("NO_COLOR"),
    };
    let child = script.spawn().unwrap_or_else(|e| {
        panic!("cannot run `script` ({e}); install it with `apt-get install bsdutils`")
    });
    let pid = child.id();
    let out = std::thread::scope(|s| {
        let h = s.spawn(|| child.wait_with_output());
        let until = Instant::now() + Duration::from_secs(20);
        while !h.is_finished() {
            if Instant::now() > until {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                panic!("dtmdriver on a terminal did not finish within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        h.join().unwrap().unwrap()
    });
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_gets_colour_unless_no_color_is_set() {
    let (_etcd, target) = etcd_with_an_invalid_entry().await;
    let t = target.clone();
    let plain = tokio::task::spawn_blocking(move || on_a_terminal(&t, None))
        .await
        .unwrap();
    assert!(plain.contains(WARNING), "{plain}");
    assert!(plain.contains(ESC), "no colour on a terminal: {plain:?}");
    // NO_COLOR set to an empty string counts as unset (no-color.org).
    let t = target.clone();
    let empty = tokio::task::spawn_blocking(move || on_a_terminal(&t, Some("")))
        .await
        .unwrap();
    assert!(
        empty.contains(ESC),
        "no colour with NO_COLOR empty: {empty:?}"
    );
    let t = target.clone();
    let off = tokio::task::spawn_blocking(move || on_a_terminal(&t, Some("1")))
        .await
        .unwrap();
    assert!(off.contains(WARNING), "{off}");
    assert!(!off.contains(ESC), "colour despite NO_COLOR=1: {off:?}");
}
