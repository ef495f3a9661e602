//! Timeouts meaning "forever" (`Duration::MAX`) given to a channel: calls wait as told
//! and end by their own deadline, nothing panics adding to an `Instant` (issue #11
//! item 2).

use std::time::Duration;

use test_support::{EchoClient, EchoServer, SayRequest, manual_channel, say};

/// A call bounded by its own deadline (`grpc-timeout`).
async fn say_within(channel: &dtmdriver_core::Channel, within: Duration) -> tonic::Status {
    let mut request = tonic::Request::new(SayRequest {
        message: "hi".into(),
    });
    request.set_timeout(within);
    EchoClient::new(channel.clone())
        .say(request)
        .await
        .expect_err("nothing can answer")
}

#[tokio::test]
async fn max_resolve_timeout_waits_for_the_calls_deadline() {
    let (channel, _resolver) = manual_channel("far-resolve", |b| b.resolve_timeout(Duration::MAX));
    let status = say_within(&channel, Duration::from_millis(200)).await;
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
}

#[tokio::test]
async fn max_connect_timeout_waits_for_the_calls_deadline() {
    let (channel, resolver) = manual_channel("far-connect", |b| {
        b.connect_timeout(Duration::MAX)
            .backoff_max(Duration::MAX)
            .keepalive(Duration::MAX)
    });
    // Takes the TCP connection (the backlog) but never speaks HTTP/2: the dial lasts
    // until the connect timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    resolver.push(&[&silent.local_addr().unwrap().to_string()]);
    let status = say_within(&channel, Duration::from_millis(300)).await;
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");

    // The same channel still serves once an endpoint answers.
    let live = EchoServer::start("far-live").await;
    resolver.push(&[&live.addr()]);
    assert_eq!(say(&channel).await.unwrap(), "far-live");
}
