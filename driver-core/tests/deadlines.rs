//! Deadlines and stream resets, as gRPC over HTTP/2 says a client reports them: a
//! deadline bounds the whole call, response stream included; a reset with `CANCEL` is
//! `CANCELLED`, or `DEADLINE_EXCEEDED` when the deadline has passed (a server resets
//! the stream when its copy of the deadline fires, often before our timer).
//!
//! The misbehaving servers here are raw HTTP/2 servers (the `h2` crate), so each does
//! exactly one thing a real server may do.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dtmdriver_core::Channel;
use test_support::{EchoServer, Note, ProduceRequest, SayRequest, StreamsClient};
use tokio::net::TcpListener;

/// What a raw server does with every call.
#[derive(Clone, Copy)]
enum Misbehaviour {
    /// Waits for the call's `grpc-timeout`, then resets the stream with `CANCEL`, as a
    /// server does when its copy of the deadline fires.
    ResetAtDeadline,
    /// Sends the response headers and one message, then resets with `CANCEL`.
    ResetMidStream,
}

/// A raw HTTP/2 server on a free loopback port; its address.
async fn raw_server(misbehaviour: Misbehaviour) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((request, respond))) = conn.accept().await {
                    tokio::spawn(answer(misbehaviour, request, respond));
                }
            });
        }
    });
    addr
}

async fn answer(
    misbehaviour: Misbehaviour,
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    match misbehaviour {
        Misbehaviour::ResetAtDeadline => {
            let timeout = request
                .headers()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_grpc_timeout)
                .expect("the call carries grpc-timeout");
            tokio::time::sleep(timeout).await;
            respond.send_reset(h2::Reason::CANCEL);
        }
        Misbehaviour::ResetMidStream => {
            let response = http::Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .body(())
                .unwrap();
            let Ok(mut send) = respond.send_response(response, false) else {
                return;
            };
            // One empty message: a gRPC frame of length 0.
            let _ = send.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), false);
            tokio::time::sleep(Duration::from_millis(50)).await;
            send.send_reset(h2::Reason::CANCEL);
        }
    }
    // Keep the request's stream until the answer is out.
    drop(request);
}

fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn channel(addr: &str) -> Channel {
    Channel::builder(&format!("direct:///{addr}"))
        .connect()
        .expect("connect")
}

/// The server's deadline fires as ours does, and its reset often arrives before our
/// timer: the call is DEADLINE_EXCEEDED every time, never UNAVAILABLE or CANCELLED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_at_the_deadline_is_deadline_exceeded_every_time() {
    let addr = raw_server(Misbehaviour::ResetAtDeadline).await;
    let channel = channel(&addr);
    let mut codes = Vec::new();
    for _ in 0..20 {
        let mut client = test_support::EchoClient::new(channel.clone());
        let mut request = tonic::Request::new(SayRequest {
            message: "late".into(),
        });
        request.set_timeout(Duration::from_millis(100));
        let status = tokio::time::timeout(Duration::from_secs(3), client.say(request))
            .await
            .expect("the call ended")
            .expect_err("the server never answers");
        codes.push((status.code(), status.message().to_string()));
    }
    assert!(
        codes
            .iter()
            .all(|(c, _)| *c == tonic::Code::DeadlineExceeded),
        "{codes:#?}"
    );
}

/// A server that resets a response stream with CANCEL in its middle: the stream ends
/// CANCELLED, not UNKNOWN "missing grpc-status".
#[tokio::test]
async fn a_cancel_in_the_middle_of_a_stream_is_cancelled() {
    let addr = raw_server(Misbehaviour::ResetMidStream).await;
    let mut client = StreamsClient::new(channel(&addr));
    let mut stream = tokio::time::timeout(
        Duration::from_secs(3),
        client.produce(ProduceRequest::default()),
    )
    .await
    .expect("headers in time")
    .expect("the response starts")
    .into_inner();
    let first = stream.message().await.expect("the first message");
    assert!(first.is_some());
    let status = tokio::time::timeout(Duration::from_secs(3), stream.message())
        .await
        .expect("the stream ended")
        .expect_err("the server reset the stream");
    assert_eq!(status.code(), tonic::Code::Cancelled, "{status:?}");
}

/// A 500 ms deadline bounds the whole call: a response stream the server keeps open
/// without sending ends DEADLINE_EXCEEDED within 600 ms, not when the server pleases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_bounds_a_response_stream_that_stalls() {
    let server = EchoServer::start("stall").await;
    let mut client = StreamsClient::new(channel(&server.addr()));
    // The request stream sends one note and then stays open: the server echoes that
    // note and waits for the next, which never comes.
    let (tx, rx) = tokio::sync::mpsc::channel::<Note>(1);
    tx.send(Note {
        body: b"one".to_vec(),
        server: String::new(),
    })
    .await
    .unwrap();
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request.set_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let mut stream = client
        .chat(request)
        .await
        .expect("the call starts")
        .into_inner();
    let echoed = stream.message().await.expect("the echo");
    assert!(echoed.is_some());
    let status = tokio::time::timeout(Duration::from_secs(3), stream.message())
        .await
        .expect("the deadline ended the stream")
        .expect_err("the stream must fail at the deadline");
    let took = started.elapsed();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(took < Duration::from_millis(600), "ended after {took:?}");
    drop(tx);
}
