//! The native format against the seed article's hand-written Go registry and gRPC
//! resolver (shared/seeds/003), rebuilt in `interop/seedregistry/` and built by
//! `bash interop/build.sh` into `interop/bin/`, through a private real etcd: Go-written
//! instances are resolved and called by our channel, ours by Go's `registry://` client.

use std::collections::{BTreeSet, HashMap};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dtmdriver_core::{Channel, Driver, Policy};
use dtmdriver_etcd::EtcdDriver;
use etcd_client::{Client, GetOptions};
use test_support::{
    EchoServer, EtcdServer, InteropProcess, addrs, free_port, interop_binary, run_interop, say,
    wait_for, wait_status,
};

async fn etcd(endpoint: &str) -> Client {
    tokio::time::timeout(Duration::from_secs(5), Client::connect([endpoint], None))
        .await
        .expect("connect timed out")
        .expect("connect")
}

fn channel(target: &str, policy: Policy) -> Channel {
    Channel::builder(target)
        .driver(&EtcdDriver)
        .unwrap()
        .policy(policy)
        .connect()
        .unwrap()
}

/// Waits (at most 20 s) for a stdout line of a Go program that starts with `prefix`.
fn wait_line(lines: &mpsc::Receiver<(Instant, String)>, prefix: &str) -> String {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok((_, line)) if line.starts_with(prefix) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line starting with `{prefix}` within 20 s: {e}"),
        }
    }
}

/// Starts the seed's echo server registered as `service` with `weight` and `group`,
/// answering as `name`; returns once its key is written.
fn go_server(
    ep: &str,
    service: &str,
    name: &str,
    weight: i32,
    group: &str,
) -> (InteropProcess, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let weight = weight.to_string();
    let (process, lines) = InteropProcess::start_lines(
        "seed-echo-server",
        &[
            "-etcd", ep, "-service", service, "-listen", &listen, "-weight", &weight, "-group",
            group, "-name", name,
        ],
    );
    assert_eq!(
        wait_line(&lines, "registered"),
        format!("registered {listen}")
    );
    (process, listen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_registered_instances_are_called_with_their_weights_and_groups() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let (_heavy, heavy_addr) = go_server(&ep, "seed", "heavy", 3, "blue");
    let (_light, light_addr) = go_server(&ep, "seed", "light", 1, "blue");
    let (_other, other_addr) = go_server(&ep, "seed", "other", 1, "green");
    let (_unweighted, unweighted_addr) = go_server(&ep, "seed", "unweighted", 0, "");

    // What the seed's registry writes: Go field names, under a session lease.
    let mut client = etcd(&ep).await;
    let resp = client
        .get(format!("/micro/seed/{heavy_addr}"), None)
        .await
        .unwrap();
    let kv = &resp.kvs()[0];
    assert_eq!(
        kv.value_str().unwrap(),
        format!(r#"{{"Name":"seed","Address":"{heavy_addr}","Weight":3,"Group":"blue"}}"#)
    );
    assert!(kv.lease() > 0);

    let blue = channel(
        &format!("etcd://{ep}/seed?group=blue"),
        Policy::WeightedRoundRobin,
    );
    // Both connected first, so the weights alone pick.
    blue.warm_up();
    wait_status(&blue, "both blue instances ready", |s| {
        s.endpoints.len() == 2 && s.endpoints.iter().all(|e| e.state == "ready")
    })
    .await;
    assert_eq!(
        addrs(&blue),
        BTreeSet::from([heavy_addr.clone(), light_addr])
    );
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..40 {
        *counts.entry(say(&blue).await.unwrap()).or_default() += 1;
    }
    assert_eq!((counts["heavy"], counts["light"]), (30, 10), "{counts:?}");
    assert_eq!(counts.len(), 2, "{counts:?}");
    let status = blue.status();
    let heavy = status
        .endpoints
        .iter()
        .find(|e| e.endpoint.addr == heavy_addr)
        .unwrap();
    assert_eq!(heavy.endpoint.weight, 3);
    assert_eq!(heavy.endpoint.metadata["group"], "blue");

    let green = channel(&format!("etcd://{ep}/seed?group=green"), Policy::RoundRobin);
    assert_eq!(say(&green).await.unwrap(), "other");
    assert_eq!(addrs(&green), BTreeSet::from([other_addr]));

    // Weight 0 (the seed's default) counts as 1.
    let all = channel(&format!("etcd://{ep}/seed"), Policy::WeightedRoundRobin);
    wait_status(&all, "all four instances", |s| s.endpoints.len() == 4).await;
    let status = all.status();
    let unweighted = status
        .endpoints
        .iter()
        .find(|e| e.endpoint.addr == unweighted_addr)
        .unwrap();
    assert_eq!(unweighted.endpoint.weight, 1);
    assert!(!unweighted.endpoint.metadata.contains_key("group"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_calls_our_instances_until_they_deregister() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let a = EchoServer::start("rust-a").await;
    let b = EchoServer::start("rust-b").await;
    let reg_a = EtcdDriver
        .register_service(
            &format!("etcd://{ep}/rseed?weight=2&group=blue&meta.v=1"),
            &a.addr(),
        )
        .await
        .unwrap();
    let _reg_b = EtcdDriver
        .register_service(&format!("etcd://{ep}/rseed"), &b.addr())
        .await
        .unwrap();

    let target = "registry://rseed".to_string();
    let args = ["-etcd", ep.as_str(), "-target", target.as_str(), "-n", "4"].map(str::to_string);
    let names = tokio::task::spawn_blocking(move || {
        run_interop(
            "seed-echo-client",
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            Duration::from_secs(30),
        )
    })
    .await
    .unwrap();
    let seen: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(seen, BTreeSet::from(["rust-a", "rust-b"]), "{names:?}");

    // A client that keeps calling sees `a` go when it deregisters, while `a` still serves.
    let (_client, lines) = InteropProcess::start_lines(
        "seed-echo-client",
        &[
            "-etcd", &ep, "-target", &target, "-n", "0", "-every", "20ms",
        ],
    );
    wait_line(&lines, "rust-a");
    wait_line(&lines, "rust-b");
    let gone_at = Instant::now();
    reg_a.deregister().await.unwrap();
    // Answers from `a` may still arrive until the watch event reaches Go; after that,
    // twenty answers in a row come from `b` and none from `a`.
    let until = gone_at + Duration::from_secs(10);
    let mut last_a = None;
    let mut run_of_b = 0;
    while run_of_b < 20 {
        let left = until.saturating_duration_since(Instant::now());
        let (at, line) = lines.recv_timeout(left).unwrap_or_else(|e| {
            panic!("the Go client stopped answering or never dropped rust-a: {e}")
        });
        match line.as_str() {
            "rust-a" => {
                last_a = Some(at);
                run_of_b = 0;
            }
            "rust-b" => run_of_b += 1,
            other => panic!("unexpected line from the Go client: {other}"),
        }
    }
    let lag = last_a.map_or(Duration::ZERO, |t| t.saturating_duration_since(gone_at));
    eprintln!("the Go client's last call to the deregistered instance came {lag:?} after");
    assert!(lag < Duration::from_secs(5), "{lag:?}");
    // The Go client no longer calls `a`, which is still up: it left the client's
    // resolution, not the network.
    let calls_after = a.calls();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.calls(), calls_after, "the Go client still calls rust-a");
    let direct = channel(&format!("direct:///{}", a.addr()), Policy::RoundRobin);
    assert_eq!(say(&direct).await.unwrap(), "rust-a");
}

/// Runs `interop/bin/seed-echo-client ARGS` to its end (at most 30 s): whether it
/// succeeded, its stdout and its stderr.
fn seed_client(args: &[&str]) -> (bool, String, String) {
    let mut child = Command::new(interop_binary("seed-echo-client"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run seed-echo-client");
    let until = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("seed-echo-client {args:?} did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collect its output");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// The article's resolver as written reads `target.Endpoint()`, empty for
/// `registry://NAME` in today's grpc-go, and grpc then sends an empty `:authority`,
/// which our (h2) servers refuse; `registry:///NAME` works with it. The interop client
/// names service and authority after the host instead, so both forms work there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_articles_client_as_written_needs_three_slashes() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let a = EchoServer::start("rust-a").await;
    let _reg = EtcdDriver
        .register_service(&format!("etcd://{ep}/rseed"), &a.addr())
        .await
        .unwrap();
    let run = move |target: &'static str, as_written: bool| {
        let ep = ep.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["-etcd", ep.as_str(), "-target", target, "-n", "2"];
            if as_written {
                args.push("-as-written");
            }
            seed_client(&args)
        })
    };
    let (ok, stdout, stderr) = run("registry:///rseed", true).await.unwrap();
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "rust-a\nrust-a\n");
    let (ok, _, stderr) = run("registry://rseed", true).await.unwrap();
    assert!(!ok);
    assert!(stderr.contains("PROTOCOL_ERROR"), "{stderr}");
    for target in ["registry://rseed", "registry:///rseed"] {
        let (ok, stdout, stderr) = run(target, false).await.unwrap();
        assert!(ok, "{target}: {stderr}");
        assert_eq!(stdout, "rust-a\nrust-a\n", "{target}");
    }
}

#[tokio::test]
async fn the_mixed_case_value_of_the_issue_resolves_next_to_ours() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let mut client = etcd(&ep).await;
    let go = EchoServer::start("go-written").await;
    let ours = EchoServer::start("ours").await;
    client
        .put(
            format!("/micro/seed/{}", go.addr()),
            format!(
                r#"{{"Name":"seed","Address":"{}","Weight":5,"Group":"blue"}}"#,
                go.addr()
            ),
            None,
        )
        .await
        .unwrap();
    let _reg = EtcdDriver
        .register_service(&format!("etcd://{ep}/seed"), &ours.addr())
        .await
        .unwrap();
    let listed = client
        .get("/micro/seed/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(listed.kvs().len(), 2);

    let ch = channel(&format!("etcd://{ep}/seed"), Policy::RoundRobin);
    wait_for("both instances", Duration::from_secs(5), || async {
        addrs(&ch).len() == 2
    })
    .await;
    let mut names = BTreeSet::new();
    for _ in 0..4 {
        names.insert(say(&ch).await.unwrap());
    }
    assert_eq!(
        names,
        BTreeSet::from(["go-written".to_string(), "ours".to_string()])
    );
    let status = ch.status();
    let g = status
        .endpoints
        .iter()
        .find(|e| e.endpoint.addr == go.addr())
        .unwrap();
    assert_eq!(
        (g.endpoint.weight, g.endpoint.metadata["group"].as_str()),
        (5, "blue")
    );
}

/// The seed's registry skips a `Weight` beyond int32 (Go refuses to unmarshal it), so
/// the registrar refuses to write one; nothing is dialled for that.
#[tokio::test]
async fn weights_beyond_int32_are_refused_at_registration() {
    let err = EtcdDriver
        .register_service("etcd://127.0.0.1:1/s?weight=2147483648", "127.0.0.1:2")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("weight `2147483648`"), "{err}");
    assert!(err.contains("0 to 2147483647"), "{err}");
}

/// The seed's own target form: `registry://NAME` with the etcd hosts in `?registry=` (or
/// in the authority, `registry://HOST/NAME`), resolving Go's instances and registering
/// ours where Go's client finds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_targets_resolve_and_register_in_the_seed_form() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let (_blue, blue_addr) = go_server(&ep, "seed", "go-blue", 2, "blue");
    let (_green, green_addr) = go_server(&ep, "seed", "go-green", 1, "green");
    for (target, want) in [
        (
            format!("registry://seed?registry=etcd://{ep}&group=blue"),
            vec![blue_addr.clone()],
        ),
        (
            format!("registry:///seed?registry=etcd://{ep}"),
            vec![blue_addr.clone(), green_addr.clone()],
        ),
        (
            format!("registry://{ep}/seed?group=green"),
            vec![green_addr.clone()],
        ),
    ] {
        let ch = channel(&target, Policy::RoundRobin);
        let want: BTreeSet<String> = want.into_iter().collect();
        wait_for(&target, Duration::from_secs(5), || async {
            addrs(&ch) == want
        })
        .await;
        let name = say(&ch).await.unwrap();
        assert!(name.starts_with("go-"), "{target}: {name}");
    }

    let ours = EchoServer::start("ours").await;
    let _reg = EtcdDriver
        .register_service(
            &format!("registry://mine?registry=etcd://{ep}"),
            &ours.addr(),
        )
        .await
        .unwrap();
    let args = [
        "-etcd",
        ep.as_str(),
        "-target",
        "registry://mine",
        "-n",
        "2",
    ]
    .map(str::to_string);
    let names = tokio::task::spawn_blocking(move || {
        run_interop(
            "seed-echo-client",
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            Duration::from_secs(30),
        )
    })
    .await
    .unwrap();
    assert_eq!(names, ["ours", "ours"]);
}
