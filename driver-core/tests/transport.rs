//! The channel's HTTP/2 transport: messages larger than the flow-control windows,
//! every streaming shape, forbidden headers, keepalive against a peer that stops
//! answering. In-process echo servers on loopback, reached through `direct:///`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dtmdriver_core::Channel;
use test_support::{
    EchoClient, EchoServer, Note, ProduceRequest, SayRequest, StreamsClient, free_port,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt;
use tonic::Code;

/// Fails the test instead of hanging the suite.
async fn bounded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for 30 s"))
}

fn direct(servers: &[&EchoServer]) -> String {
    let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    format!("direct:///{}", addrs.join(","))
}

fn streams(channel: &Channel) -> StreamsClient<Channel> {
    StreamsClient::new(channel.clone())
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_larger_than_every_window_go_both_ways() {
    let (s1, s2) = (
        EchoServer::start("big-1").await,
        EchoServer::start("big-2").await,
    );
    let channel = Channel::builder(&direct(&[&s1, &s2])).connect().unwrap();
    let mut client = EchoClient::new(channel)
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20);
    // 6 MiB: past the server's receive windows and our 2 MiB stream / 5 MiB
    // connection windows, so both directions wait for window updates.
    let message: String = (0..6 << 20)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    for _ in 0..4 {
        let reply = bounded(
            "a 6 MiB call",
            client.say(SayRequest {
                message: message.clone(),
            }),
        )
        .await
        .expect("6 MiB call")
        .into_inner();
        assert_eq!(reply.message.len(), message.len());
        assert!(
            reply.message == message,
            "the reply differs from the request"
        );
    }
    assert_eq!(s1.calls() + s2.calls(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_server_stream_arrives_whole() {
    let server = EchoServer::start("produce").await;
    let channel = Channel::builder(&direct(&[&server])).connect().unwrap();
    // 200 × 64 KiB = 12.5 MiB, read at the pace of this loop.
    let mut notes = bounded(
        "opening a server stream",
        streams(&channel).produce(ProduceRequest {
            count: 200,
            size: 64 << 10,
        }),
    )
    .await
    .expect("produce")
    .into_inner();
    let mut count = 0u64;
    while let Some(note) = bounded("the next note", notes.next()).await {
        let note = note.expect("note");
        assert_eq!(note.body.len(), 64 << 10);
        assert!(note.body.iter().all(|b| *b == (count % 251) as u8));
        count += 1;
    }
    assert_eq!(count, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stream_is_sent_whole_before_the_answer() {
    let server = EchoServer::start("collect").await;
    let channel = Channel::builder(&direct(&[&server])).connect().unwrap();
    // 100 × 32 KiB, produced slowly enough that the call waits on the body.
    let notes = tokio_stream::iter(0..100u8)
        .map(|i| Note {
            body: vec![i; 32 << 10],
            server: String::new(),
        })
        .throttle(Duration::from_millis(2));
    let summary = bounded("a client stream", streams(&channel).collect(notes))
        .await
        .expect("collect")
        .into_inner();
    assert_eq!(summary.count, 100);
    assert_eq!(summary.bytes, 100 * (32 << 10));
    assert_eq!(summary.server, "collect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bidirectional_stream_keeps_sending_after_the_answer_starts() {
    let server = EchoServer::start("chat").await;
    let channel = Channel::builder(&direct(&[&server])).connect().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Note>(1);
    tx.send(Note {
        body: b"0".to_vec(),
        server: String::new(),
    })
    .await
    .unwrap();
    let mut replies = bounded(
        "opening a chat",
        streams(&channel).chat(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await
    .expect("chat")
    .into_inner();
    // Each note goes out only after the reply to the one before: the request body is
    // still streaming long after the response began.
    for i in 0..20u32 {
        let reply = bounded("a chat reply", replies.next())
            .await
            .expect("a reply")
            .expect("reply");
        assert_eq!(reply.body, i.to_string().into_bytes());
        assert_eq!(reply.server, "chat");
        if i < 19 {
            tx.send(Note {
                body: (i + 1).to_string().into_bytes(),
                server: String::new(),
            })
            .await
            .unwrap();
        }
    }
    drop(tx);
    assert!(
        bounded("the end of the chat", replies.next())
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_specific_headers_are_dropped_not_fatal() {
    let server = EchoServer::start("headers").await;
    let channel = Channel::builder(&direct(&[&server])).connect().unwrap();
    let mut req = tonic::Request::new(SayRequest {
        message: "hi".into(),
    });
    // HTTP/2 forbids these (RFC 9113 §8.2.2); a proxy-minded caller may still set them.
    for (k, v) in [
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("upgrade", "h2c"),
        ("x-kept", "yes"),
    ] {
        req.metadata_mut().insert(k, v.parse().unwrap());
    }
    let reply = bounded(
        "a call with forbidden headers",
        EchoClient::new(channel.clone()).say(req),
    )
    .await
    .expect("call with forbidden headers");
    assert_eq!(reply.into_inner().server, "headers");
    let seen = server.last_metadata();
    assert!(
        seen.iter().any(|(k, v)| k == "x-kept" && v == "yes"),
        "{seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|(k, _)| k == "connection" || k == "upgrade" || k == "keep-alive"),
        "{seen:?}"
    );
    // The connection was not harmed: more calls go through on it.
    for _ in 0..3 {
        let reply = EchoClient::new(channel.clone())
            .say(SayRequest {
                message: "again".into(),
            })
            .await
            .expect("a call after it");
        assert_eq!(reply.into_inner().server, "headers");
    }
    assert_eq!(channel.status().endpoints[0].connects, 1);
}

/// A TCP proxy whose connections can be frozen: a frozen connection stays open but
/// carries nothing more, like a peer whose host vanished from the network.
struct FreezingProxy {
    addr: String,
    /// Connections accepted so far; those numbered up to `frozen_upto` are frozen.
    accepted: Arc<AtomicU64>,
    frozen_upto: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezingProxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", free_port())).await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicU64::new(0));
        let frozen_upto = Arc::new(AtomicU64::new(0));
        let (acc, frozen) = (accepted.clone(), frozen_upto.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let number = acc.fetch_add(1, Ordering::SeqCst) + 1;
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let stop = Arc::new(AtomicBool::new(false));
                for (r, w) in [(cr, sw), (sr, cw)] {
                    tokio::spawn(pipe(r, w, number, frozen.clone(), stop.clone()));
                }
            }
        });
        Self {
            addr,
            accepted,
            frozen_upto,
            task,
        }
    }

    /// Freezes every connection accepted so far.
    fn freeze(&self) {
        self.frozen_upto
            .store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies one direction until the connection is frozen; then holds both halves open
/// without reading or writing (bounded: the test ends long before).
async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    number: u64,
    frozen_upto: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if number <= frozen_upto.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        }
        let n = tokio::select! {
            r = r.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = tokio::time::sleep(Duration::from_millis(20)) => continue,
        };
        if number <= frozen_upto.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_replaces_a_connection_whose_peer_stopped_answering() {
    let server = EchoServer::start("frozen").await;
    let proxy = FreezingProxy::start(server.addr()).await;
    let target = format!("direct:///{}", proxy.addr);
    // Without keepalive (the default) a frozen connection is not noticed: the call
    // runs into its deadline. This shows the proxy really freezes.
    let plain = Channel::builder(&target).connect().unwrap();
    // Pings only while calls are in flight (grpc-go's default behaviour when enabled).
    let in_flight = Channel::builder(&target)
        .keepalive(Duration::from_millis(200))
        .connect()
        .unwrap();
    // Pings idle connections too.
    let idle = Channel::builder(&target)
        .keepalive(Duration::from_millis(200))
        .keepalive_while_idle(true)
        .connect()
        .unwrap();
    for channel in [&plain, &in_flight, &idle] {
        let reply = bounded(
            "a call through the proxy",
            EchoClient::new(channel.clone()).say(SayRequest {
                message: "hi".into(),
            }),
        )
        .await
        .expect("a call through the proxy");
        assert_eq!(reply.into_inner().server, "frozen");
    }
    proxy.freeze();

    // Idle pinging: the connection is found dead and replaced with no call made.
    let until = Instant::now() + Duration::from_secs(5);
    while idle.status().endpoints[0].connects < 2 {
        assert!(
            Instant::now() < until,
            "an idle pinging channel did not replace its frozen connection within 5 s: {:?}",
            idle.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = bounded(
        "a call on the new connection",
        EchoClient::new(idle.clone()).say(SayRequest {
            message: "hi".into(),
        }),
    )
    .await
    .expect("a call on the new connection");
    assert_eq!(reply.into_inner().server, "frozen");

    // In-flight pinging: a call stuck on the frozen connection fails UNAVAILABLE
    // well before its 5 s deadline, and the connection is replaced.
    let mut req = tonic::Request::new(SayRequest {
        message: "hi".into(),
    });
    req.set_timeout(Duration::from_secs(5));
    let started = Instant::now();
    let err = bounded(
        "a call on a frozen connection",
        EchoClient::new(in_flight.clone()).say(req),
    )
    .await
    .expect_err("a call on a frozen connection cannot succeed");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the dead connection took {:?} to notice",
        started.elapsed()
    );
    let reply = bounded(
        "a call after the replacement",
        EchoClient::new(in_flight.clone()).say(SayRequest {
            message: "hi".into(),
        }),
    )
    .await
    .expect("a call after the replacement");
    assert_eq!(reply.into_inner().server, "frozen");
    assert!(in_flight.status().endpoints[0].connects >= 2);

    // No keepalive: the frozen connection is still in use; the call hits its deadline.
    let mut req = tonic::Request::new(SayRequest {
        message: "hi".into(),
    });
    req.set_timeout(Duration::from_millis(500));
    let err = bounded(
        "a call without keepalive",
        EchoClient::new(plain.clone()).say(req),
    )
    .await
    .expect_err("a call on a frozen connection cannot succeed");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert_eq!(plain.status().endpoints[0].connects, 1);
}
