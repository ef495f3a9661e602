//! Interop with real go-zero (v1.10.x) through a real etcd: the Go programs under
//! `interop/gozero/` are built by `bash interop/build.sh` into `interop/bin/`.

use std::time::{Duration, Instant};

use dtmdriver_core::{Channel, Driver};
use dtmdriver_gozero::GoZeroDriver;
use etcd_client::{Client, GetOptions};
use test_support::{
    EchoClient, EchoServer, EtcdServer, InteropProcess, SayRequest, free_port, run_interop,
};

/// Runs the go-zero client with `args` and returns the server names it printed.
fn go_zero_client(args: &[&str]) -> Vec<String> {
    run_interop("gozero-echo-client", args, Duration::from_secs(30))
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
    let _go = InteropProcess::start(
        "gozero-echo-server",
        &[
            "-etcd", &ep, "-key", "go.rpc", "-listen", &listen, "-name", "go1",
        ],
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

/// grpc-go servers, go-zero's among them, accept a client ping at most every 5
/// minutes by default and close a connection that pings more often (GOAWAY
/// `ENHANCE_YOUR_CALM` "too_many_pings" after the third). A channel with default
/// settings must not ping: its idle connection to go-zero lives on. A channel told to
/// ping idle connections every 2 s is cut off within the same wait, which shows the
/// test sees such a close (as a second connect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_channels_keep_idle_connections_to_go_zero_open() {
    let listen = format!("127.0.0.1:{}", free_port());
    let _go = InteropProcess::start("gozero-echo-server", &["-listen", &listen, "-name", "go1"]);
    let target = format!("direct:///{listen}");
    let quiet = Channel::builder(&target).connect().unwrap();
    let pinging = Channel::builder(&target)
        .keepalive(Duration::from_secs(2))
        .keepalive_while_idle(true)
        .connect()
        .unwrap();
    let say = |channel: &Channel| {
        let mut echo = EchoClient::new(channel.clone());
        async move {
            let call = echo.say(SayRequest {
                message: "hi".into(),
            });
            match tokio::time::timeout(Duration::from_secs(10), call).await {
                Ok(Ok(reply)) => Ok(reply.into_inner().server),
                Ok(Err(status)) => Err(status.to_string()),
                Err(_) => Err("call hung for 10 s".into()),
            }
        }
    };
    let connects = |channel: &Channel| channel.status().endpoints[0].connects;
    // The server takes a moment to listen: call until both channels get through.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        match (say(&quiet).await, say(&pinging).await) {
            (Ok(a), Ok(b)) => {
                assert_eq!((a.as_str(), b.as_str()), ("go1", "go1"));
                break;
            }
            (a, b) => assert!(
                Instant::now() < until,
                "go-zero server did not answer within 20 s: {a:?} {b:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(connects(&quiet), 1);
    // 45 s: long enough for a 10 s ping interval (this crate's old default) to earn
    // the third strike.
    tokio::time::sleep(Duration::from_secs(45)).await;
    let (quiet_connects, pinging_connects) = (connects(&quiet), connects(&pinging));
    assert_eq!(
        quiet_connects, 1,
        "the default channel's idle connection was closed and redialled"
    );
    assert!(
        pinging_connects >= 2,
        "go-zero did not close a connection pinging every 2 s (connects: {pinging_connects}); \
         the test cannot see a close"
    );
    assert_eq!(say(&quiet).await.as_deref(), Ok("go1"));
    assert_eq!(say(&pinging).await.as_deref(), Ok("go1"));
}
