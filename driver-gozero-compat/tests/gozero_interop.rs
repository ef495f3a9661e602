//! Interop with real go-zero (v1.10.x) through a real etcd: the Go programs under
//! `interop/gozero/` are built by `bash interop/build.sh` into `interop/bin/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use driver_core::{Channel, Driver};
use driver_gozero_compat::GoZeroDriver;
use etcd_client::{Client, GetOptions};
use test_support::{EchoClient, EchoServer, EtcdServer, SayRequest, free_port};

fn interop_binary(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../interop/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing; build the go-zero interop programs with `bash interop/build.sh`",
        path.display()
    );
    path
}

/// Runs the go-zero client with `args` and returns the server names it printed.
fn go_zero_client(args: &[&str]) -> Vec<String> {
    let mut child = Command::new(interop_binary("gozero-echo-client"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gozero-echo-client");
    let until = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("gozero-echo-client {args:?} did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "gozero-echo-client {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

struct GoServer(Child);

impl Drop for GoServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_zero_client_calls_a_rust_service_in_both_target_forms() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let rust = EchoServer::start("rust").await;
    let _reg = GoZeroDriver
        .register_service(&format!("etcd://{ep}/echo.rpc"), &rust.addr())
        .await
        .unwrap();
    let old_form = format!("etcd://{ep}/echo.rpc");
    let new_form = format!("etcd:///{ep}?key=echo.rpc");
    for args in [
        vec!["-target", old_form.as_str(), "-n", "3"],
        vec!["-target", new_form.as_str(), "-n", "3"],
        vec!["-etcd", ep.as_str(), "-key", "echo.rpc", "-n", "3"],
    ] {
        let args: Vec<String> = args.into_iter().map(str::to_string).collect();
        let names = tokio::task::spawn_blocking(move || {
            go_zero_client(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .unwrap();
        assert_eq!(names, ["rust", "rust", "rust"]);
    }
    assert_eq!(rust.calls(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_calls_a_go_zero_server_registered_by_go_zero() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let listen = format!("127.0.0.1:{}", free_port());
    let _go = GoServer(
        Command::new(interop_binary("gozero-echo-server"))
            .args([
                "-etcd", &ep, "-key", "go.rpc", "-listen", &listen, "-name", "go1",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("run gozero-echo-server"),
    );
    // go-zero's own registration, as it lands in etcd.
    let mut client = Client::connect([ep.as_str()], None).await.unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    let (key, value, lease) = loop {
        let resp = client
            .get("go.rpc/", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        if let Some(kv) = resp.kvs().first() {
            break (
                kv.key_str().unwrap().to_string(),
                kv.value_str().unwrap().to_string(),
                kv.lease(),
            );
        }
        assert!(
            Instant::now() < until,
            "go-zero did not register within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(key, format!("go.rpc/{lease}"));
    assert_eq!(value, listen);
    let ttl = client.lease_time_to_live(lease, None).await.unwrap();
    assert_eq!(ttl.granted_ttl(), 10);

    for target in [
        format!("etcd://{ep}/go.rpc"),
        format!("etcd:///{ep}?key=go.rpc"),
    ] {
        let channel = Channel::builder(&target)
            .driver(&GoZeroDriver)
            .unwrap()
            .connect()
            .unwrap();
        let mut echo = EchoClient::new(channel);
        let call = echo.say(SayRequest {
            message: "hi".into(),
        });
        let reply = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("call hung")
            .expect("call failed");
        assert_eq!(reply.into_inner().server, "go1", "{target}");
    }
}
