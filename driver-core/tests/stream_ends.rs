//! Every way a call's stream can end, and the status the caller gets, as gRPC over
//! HTTP/2 (grpc/doc/PROTOCOL-HTTP2.md, statuscodes.md, http-grpc-status-mapping.md) and
//! grpc-go map them: RST_STREAM codes before and after the response headers, missing
//! or malformed trailers, trailers-only responses, non-200 HTTP statuses without a
//! grpc-status, a content-type that is not gRPC, GOAWAY and a lost connection.
//!
//! Also the line of transparent retry: a request the server refused unprocessed
//! (REFUSED_STREAM, GOAWAY with a last-stream-id below it) goes to another endpoint; a
//! request the server may have processed (a reset after the headers, RST_STREAM
//! NO_ERROR or INTERNAL_ERROR, GOAWAY with a last-stream-id at or above it, a closed
//! connection) is never replayed. Each side is checked by counting the arrivals at
//! both servers.
//!
//! The misbehaving servers are raw HTTP/2 servers (the `h2` crate, or raw frames where
//! h2 cannot be made to misbehave that way), each doing one thing a real server or
//! proxy may do.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dtmdriver_core::Channel;
use test_support::{EchoClient, EchoServer, SayRequest, manual_channel, say};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic::Code;

/// What a raw h2 server does with every request.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// RST_STREAM with this code before any response headers.
    ResetBeforeHeaders(h2::Reason),
    /// Response headers (200, application/grpc), one message, then RST_STREAM.
    ResetAfterHeaders(h2::Reason),
    /// Headers with this HTTP status and content-type (if any) and no grpc-status,
    /// then this body and END_STREAM, no trailers.
    Http(u16, Option<&'static str>, &'static [u8]),
    /// 200 application/grpc, one message, END_STREAM on the data: no trailers.
    NoTrailers,
    /// A complete response whose trailers carry this grpc-status value.
    Trailers(&'static str),
    /// Trailers-only: grpc-status and grpc-message in the headers, END_STREAM.
    TrailersOnly(&'static str, &'static str),
    /// INTERNAL "boom" with this `grpc-status-details-bin`, in the trailers of a full
    /// response, or in the headers of a trailers-only one (`true`).
    Details(&'static str, bool),
    /// A complete OK response, then RST_STREAM(NO_ERROR): the server needs no more
    /// of the request (allowed by RFC 9113 §8.1).
    OkThenResetNoError,
    /// GOAWAY with this code naming this stream as processed, then the connection
    /// closes unanswered.
    GoAwayThenClose(h2::Reason),
}

/// One empty gRPC message (a frame of length 0), which decodes as any default reply.
const EMPTY_MESSAGE: &[u8] = &[0, 0, 0, 0, 0];

/// A raw h2 server answering every request with `answer`: its address and how many
/// requests reached it.
async fn h2_server(answer: Answer) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let arrivals = Arc::new(AtomicUsize::new(0));
    let count = arrivals.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((request, respond))) = conn.accept().await {
                    count.fetch_add(1, Ordering::SeqCst);
                    if let Answer::GoAwayThenClose(reason) = answer {
                        conn.abrupt_shutdown(reason);
                        while conn.accept().await.is_some() {}
                        drop((request, respond));
                        return;
                    }
                    tokio::spawn(respond_with(answer, request, respond));
                }
            });
        }
    });
    (addr, arrivals)
}

fn grpc_head(status: u16) -> http::response::Builder {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/grpc")
}

fn trailers(status: &str) -> http::HeaderMap {
    let mut t = http::HeaderMap::new();
    t.insert("grpc-status", status.parse().unwrap());
    t
}

async fn respond_with(
    answer: Answer,
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let message = Bytes::from_static(EMPTY_MESSAGE);
    match answer {
        Answer::ResetBeforeHeaders(reason) => respond.send_reset(reason),
        Answer::ResetAfterHeaders(reason) => {
            let head = grpc_head(200).body(()).unwrap();
            let Ok(mut send) = respond.send_response(head, false) else {
                return;
            };
            let _ = send.send_data(message, false);
            tokio::time::sleep(Duration::from_millis(50)).await;
            send.send_reset(reason);
        }
        Answer::Http(status, content_type, body) => {
            let mut head = http::Response::builder().status(status);
            if let Some(ct) = content_type {
                head = head.header("content-type", ct);
            }
            let end = body.is_empty();
            let Ok(mut send) = respond.send_response(head.body(()).unwrap(), end) else {
                return;
            };
            if !end {
                let _ = send.send_data(Bytes::from_static(body), true);
            }
        }
        Answer::NoTrailers => {
            let head = grpc_head(200).body(()).unwrap();
            if let Ok(mut send) = respond.send_response(head, false) {
                let _ = send.send_data(message, true);
            }
        }
        Answer::Trailers(status) => {
            let head = grpc_head(200).body(()).unwrap();
            if let Ok(mut send) = respond.send_response(head, false) {
                let _ = send.send_data(message, false);
                let _ = send.send_trailers(trailers(status));
            }
        }
        Answer::TrailersOnly(status, message) => {
            let head = grpc_head(200)
                .header("grpc-status", status)
                .header("grpc-message", message)
                .body(())
                .unwrap();
            let _ = respond.send_response(head, true);
        }
        Answer::Details(details, trailers_only) => {
            let mut status = trailers("13");
            status.insert("grpc-message", "boom".parse().unwrap());
            status.insert("grpc-status-details-bin", details.parse().unwrap());
            let mut head = grpc_head(200).body(()).unwrap();
            if trailers_only {
                head.headers_mut().extend(status);
                let _ = respond.send_response(head, true);
            } else if let Ok(mut send) = respond.send_response(head, false) {
                let _ = send.send_data(message, false);
                let _ = send.send_trailers(status);
            }
        }
        Answer::OkThenResetNoError => {
            let head = grpc_head(200).body(()).unwrap();
            if let Ok(mut send) = respond.send_response(head, false) {
                let _ = send.send_data(message, false);
                let _ = send.send_trailers(trailers("0"));
                tokio::time::sleep(Duration::from_millis(20)).await;
                send.send_reset(h2::Reason::NO_ERROR);
            }
        }
        Answer::GoAwayThenClose(_) => unreachable!("answered by the connection"),
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(request);
}

/// When [`goaway_server`] sends its GOAWAY.
#[derive(Clone, Copy, Debug, PartialEq)]
enum GoAwayAt {
    /// In answer to each request's HEADERS, with last-stream-id one below the request's
    /// stream (nothing processed); then it closes the connection. Counts requests.
    EachRequest,
    /// Once the connection is up (100 ms after answering the client's first PING),
    /// with last-stream-id 0, before any request; the connection stays open. Counts
    /// the connections told so.
    Start,
}

/// A server that speaks raw HTTP/2 frames and sends GOAWAY with `reason` as `at` says
/// (h2's server cannot name a last-stream-id of our choosing). Its address and its
/// count (see [`GoAwayAt`]).
async fn goaway_server(reason: h2::Reason, at: GoAwayAt) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let arrivals = Arc::new(AtomicUsize::new(0));
    let count = arrivals.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut preface = [0u8; 24];
                if socket.read_exact(&mut preface).await.is_err() {
                    return;
                }
                // Our SETTINGS (none), as the connection preface requires.
                let _ = socket.write_all(&frame(4, 0, 0, &[])).await;
                let mut told = false;
                loop {
                    let mut head = [0u8; 9];
                    if socket.read_exact(&mut head).await.is_err() {
                        return;
                    }
                    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                    let (kind, flags) = (head[3], head[4]);
                    let stream =
                        u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & !(1 << 31);
                    let mut payload = vec![0u8; len];
                    if socket.read_exact(&mut payload).await.is_err() {
                        return;
                    }
                    match kind {
                        // SETTINGS without ACK: acknowledge.
                        4 if flags & 1 == 0 => {
                            let _ = socket.write_all(&frame(4, 1, 0, &[])).await;
                        }
                        // PING: answer (the client waits for it before its first call).
                        6 if flags & 1 == 0 => {
                            let _ = socket.write_all(&frame(6, 1, 0, &payload)).await;
                            if at == GoAwayAt::Start && !told {
                                told = true;
                                // The connection is up (ready) by now; then it is told.
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                count.fetch_add(1, Ordering::SeqCst);
                                let _ = socket.write_all(&goaway(0, reason)).await;
                            }
                        }
                        // HEADERS: a request arrived.
                        1 => {
                            if at == GoAwayAt::EachRequest {
                                count.fetch_add(1, Ordering::SeqCst);
                            }
                            let _ = socket
                                .write_all(&goaway(stream.saturating_sub(2), reason))
                                .await;
                            let _ = socket.flush().await;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            return;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (addr, arrivals)
}

/// A GOAWAY frame.
fn goaway(last_stream_id: u32, reason: h2::Reason) -> Vec<u8> {
    let mut payload = last_stream_id.to_be_bytes().to_vec();
    payload.extend_from_slice(&u32::from(reason).to_be_bytes());
    frame(7, 0, 0, &payload)
}

/// An HTTP/2 frame: type, flags, stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn channel(addr: &str) -> Channel {
    Channel::builder(&format!("direct:///{addr}"))
        .connect()
        .expect("connect")
}

/// One unary echo call to `addr`: its status (OK as `Code::Ok`) and message.
async fn unary(addr: &str) -> (Code, String) {
    let mut client = EchoClient::new(channel(addr));
    let call = client.say(SayRequest {
        message: "hi".into(),
    });
    match tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the call ended")
    {
        Ok(_) => (Code::Ok, String::new()),
        Err(s) => (s.code(), s.message().to_string()),
    }
}

async fn expect(answer: Answer, code: Code) {
    let (addr, _) = h2_server(answer).await;
    let (got, message) = unary(&addr).await;
    assert_eq!(got, code, "{answer:?}: {message}");
}

#[tokio::test]
async fn a_reset_before_the_headers_maps_as_the_spec_says() {
    use h2::Reason;
    for (reason, code) in [
        (Reason::NO_ERROR, Code::Internal),
        (Reason::PROTOCOL_ERROR, Code::Internal),
        (Reason::INTERNAL_ERROR, Code::Internal),
        (Reason::FLOW_CONTROL_ERROR, Code::Internal),
        (Reason::STREAM_CLOSED, Code::Internal),
        (Reason::FRAME_SIZE_ERROR, Code::Internal),
        (Reason::CANCEL, Code::Cancelled),
        (Reason::COMPRESSION_ERROR, Code::Internal),
        (Reason::CONNECT_ERROR, Code::Internal),
        (Reason::ENHANCE_YOUR_CALM, Code::ResourceExhausted),
        (Reason::INADEQUATE_SECURITY, Code::PermissionDenied),
        (Reason::HTTP_1_1_REQUIRED, Code::Internal),
        // The only endpoint refuses every time: retried, then UNAVAILABLE.
        (Reason::REFUSED_STREAM, Code::Unavailable),
    ] {
        expect(Answer::ResetBeforeHeaders(reason), code).await;
    }
}

#[tokio::test]
async fn a_reset_after_the_headers_maps_as_the_spec_says() {
    use h2::Reason;
    for (reason, code) in [
        (Reason::NO_ERROR, Code::Internal),
        (Reason::INTERNAL_ERROR, Code::Internal),
        (Reason::CANCEL, Code::Cancelled),
        (Reason::ENHANCE_YOUR_CALM, Code::ResourceExhausted),
        (Reason::REFUSED_STREAM, Code::Unavailable),
    ] {
        expect(Answer::ResetAfterHeaders(reason), code).await;
    }
}

#[tokio::test]
async fn a_reset_no_error_after_a_complete_response_is_ok() {
    expect(Answer::OkThenResetNoError, Code::Ok).await;
}

/// http-grpc-status-mapping.md, for a proxy's error page (no grpc-status).
#[tokio::test]
async fn an_http_status_without_grpc_status_maps_as_the_spec_says() {
    for (status, code) in [
        (400, Code::Internal),
        (401, Code::Unauthenticated),
        (403, Code::PermissionDenied),
        (404, Code::Unimplemented),
        (429, Code::Unavailable),
        (502, Code::Unavailable),
        (503, Code::Unavailable),
        (504, Code::Unavailable),
        (500, Code::Unknown),
        (418, Code::Unknown),
    ] {
        // A proxy's page, a body with its own content-type, and a gRPC head
        // without a grpc-status all map the same.
        expect(
            Answer::Http(status, Some("text/html"), b"<html>no</html>"),
            code,
        )
        .await;
        expect(Answer::Http(status, Some("text/plain"), b""), code).await;
        expect(Answer::Http(status, Some("application/grpc"), b""), code).await;
    }
}

/// A 200 whose content-type is not gRPC (or missing) is not a gRPC response: UNKNOWN,
/// as grpc-go reports it, never a message parsed out of an HTML page.
#[tokio::test]
async fn a_content_type_that_is_not_grpc_is_unknown() {
    for (content_type, body) in [
        (Some("text/html"), &b"<html>hello</html>"[..]),
        (Some("application/json"), b"{}"),
        (Some("application/grpcx"), EMPTY_MESSAGE),
        (None, EMPTY_MESSAGE),
    ] {
        let (addr, _) = h2_server(Answer::Http(200, content_type, body)).await;
        let (code, message) = unary(&addr).await;
        assert_eq!(code, Code::Unknown, "{content_type:?}: {message}");
        assert!(message.contains("content-type"), "{message}");
    }
    // The gRPC content-types with a subtype or parameters are gRPC.
    for content_type in ["application/grpc+proto", "application/grpc;charset=utf-8"] {
        let (addr, _) = h2_server(Answer::Http(200, Some(content_type), b"")).await;
        let (code, message) = unary(&addr).await;
        assert_ne!(code, Code::Unknown, "{content_type}: {message}");
    }
}

/// A response that ends without trailers (END_STREAM on its data) never carried a
/// status: INTERNAL, as grpc-go ("server closed the stream without sending trailers").
#[tokio::test]
async fn missing_trailers_are_internal() {
    expect(Answer::NoTrailers, Code::Internal).await;
}

#[tokio::test]
async fn a_malformed_grpc_status_is_unknown() {
    for bad in ["abc", "-1", "99", "1.0"] {
        expect(Answer::Trailers(bad), Code::Unknown).await;
    }
    expect(Answer::Trailers("0"), Code::Ok).await;
    expect(Answer::Trailers("5"), Code::NotFound).await;
}

#[tokio::test]
async fn a_trailers_only_response_carries_its_status() {
    let (addr, _) = h2_server(Answer::TrailersOnly("5", "no%20such%20thing")).await;
    let (code, message) = unary(&addr).await;
    assert_eq!((code, message.as_str()), (Code::NotFound, "no such thing"));
}

/// tonic panics on a `grpc-status-details-bin` that is not base64 ("Invalid status
/// header, expected base64 encoded value"), inside the caller's call: a buggy or
/// hostile server could crash the caller's task. The channel drops such details; the
/// code and message arrive, and valid details still do.
#[tokio::test]
async fn status_details_that_are_not_base64_are_dropped_not_a_panic() {
    for trailers_only in [false, true] {
        for bad in ["!!not base64!!", "A", "AA=A"] {
            let (addr, _) = h2_server(Answer::Details(bad, trailers_only)).await;
            let (code, message) = unary(&addr).await;
            assert_eq!((code, message.as_str()), (Code::Internal, "boom"), "{bad}");
        }
        // Valid details (padded or not, as tonic accepts them) arrive whole.
        for good in ["AAEC", "AAE=", "AAE"] {
            let (addr, _) = h2_server(Answer::Details(good, trailers_only)).await;
            let mut client = EchoClient::new(channel(&addr));
            let status = client.say(SayRequest::default()).await.unwrap_err();
            assert_eq!(status.code(), Code::Internal, "{good}");
            assert!(!status.details().is_empty(), "{good}: {status:?}");
        }
    }
}

/// Two endpoints: `bad` (raw, counting `arrivals`) and a real echo server. Calls go
/// round robin (connections dial on demand, so which goes first is not fixed): calls
/// until one has reached `bad`, then two more, at most 10. Returns the statuses of the
/// calls and the calls the echo server served (and the server, alive until the caller
/// is done).
async fn against(test: &str, bad: &str, arrivals: &AtomicUsize) -> (Vec<Code>, u64, EchoServer) {
    let good = EchoServer::start("good").await;
    let (channel, resolver) = manual_channel(test, |b| b);
    resolver.push(&[bad, &good.addr()]);
    let mut codes = Vec::new();
    let mut after = 0;
    while codes.len() < 10 && after < 2 {
        if arrivals.load(Ordering::SeqCst) > 0 {
            after += 1;
        }
        codes.push(match say(&channel).await {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        });
    }
    assert!(
        arrivals.load(Ordering::SeqCst) >= 1,
        "{test}: no call reached the bad server in {codes:?}"
    );
    let served = good.calls();
    (codes, served, good)
}

/// Retried: the server refused the stream unprocessed (REFUSED_STREAM).
#[tokio::test]
async fn a_refused_stream_is_retried_on_another_endpoint() {
    let (bad, arrivals) = h2_server(Answer::ResetBeforeHeaders(h2::Reason::REFUSED_STREAM)).await;
    let (codes, served, _good) = against("refused", &bad, &arrivals).await;
    assert!(codes.iter().all(|c| *c == Code::Ok), "{codes:?}");
    assert_eq!(
        served as usize,
        codes.len(),
        "each call served exactly once"
    );
}

/// Retried: GOAWAY with a last-stream-id below ours, whatever its error code (the
/// stream was not processed, RFC 9113 §6.8; grpc-go retries it too).
#[tokio::test]
async fn a_goaway_below_our_stream_is_retried_on_another_endpoint() {
    for reason in [h2::Reason::NO_ERROR, h2::Reason::ENHANCE_YOUR_CALM] {
        let (bad, arrivals) = goaway_server(reason, GoAwayAt::EachRequest).await;
        let (codes, served, _good) = against("goaway-below", &bad, &arrivals).await;
        assert!(
            codes.iter().all(|c| *c == Code::Ok),
            "{reason:?}: {codes:?}"
        );
        assert_eq!(
            served as usize,
            codes.len(),
            "{reason:?}: each call served exactly once"
        );
    }
}

/// A connection told GOAWAY (last-stream-id 0) soon after it came up, before or while
/// calls start on it: they go to another endpoint, each served once; with no other
/// endpoint the call is UNAVAILABLE.
#[tokio::test]
async fn a_goaway_before_the_stream_started_sends_the_call_elsewhere() {
    let (bad, told) = goaway_server(h2::Reason::NO_ERROR, GoAwayAt::Start).await;
    let (codes, served, _good) = against("goaway-start", &bad, &told).await;
    assert!(codes.iter().all(|c| *c == Code::Ok), "{codes:?}");
    assert_eq!(
        served as usize,
        codes.len(),
        "each call served exactly once"
    );

    let (bad, _) = goaway_server(h2::Reason::NO_ERROR, GoAwayAt::Start).await;
    let (code, message) = unary(&bad).await;
    assert_eq!(code, Code::Unavailable, "{message}");
}

/// Never replayed: the server may have processed the request. Each call that reached
/// `bad` fails with `code`, and the echo server serves only the others.
async fn never_replayed(test: &str, bad: &str, arrivals: &AtomicUsize, code: Code) {
    let (codes, served, _good) = against(test, bad, arrivals).await;
    let reached = arrivals.load(Ordering::SeqCst);
    let failed = codes.iter().filter(|c| **c != Code::Ok).count();
    assert_eq!(failed, reached, "{test}: {codes:?}");
    assert!(
        codes.iter().all(|c| *c == Code::Ok || *c == code),
        "{test}: {codes:?}"
    );
    assert_eq!(
        served as usize,
        codes.len() - reached,
        "{test}: a call was replayed"
    );
}

#[tokio::test]
async fn a_stream_the_server_may_have_processed_is_never_replayed() {
    for reason in [h2::Reason::NO_ERROR, h2::Reason::ENHANCE_YOUR_CALM] {
        let (bad, arrivals) = h2_server(Answer::GoAwayThenClose(reason)).await;
        never_replayed("goaway-at", &bad, &arrivals, Code::Unavailable).await;
    }
    let (bad, arrivals) = h2_server(Answer::ResetAfterHeaders(h2::Reason::REFUSED_STREAM)).await;
    never_replayed("reset-after-headers", &bad, &arrivals, Code::Unavailable).await;
    let (bad, arrivals) = h2_server(Answer::ResetBeforeHeaders(h2::Reason::NO_ERROR)).await;
    never_replayed("reset-no-error", &bad, &arrivals, Code::Internal).await;
    let (bad, arrivals) = h2_server(Answer::ResetBeforeHeaders(h2::Reason::INTERNAL_ERROR)).await;
    never_replayed("reset-internal", &bad, &arrivals, Code::Internal).await;
}

/// A raw h2 server that answers a call's headers and one message, then reads the
/// request stream to its end: its address, and how each request stream ended there
/// (`end` when the client closed it, else the reset's code).
async fn watching_server() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let head = grpc_head(200).body(()).unwrap();
                        let Ok(mut send) = respond.send_response(head, false) else {
                            return;
                        };
                        let _ = send.send_data(Bytes::from_static(EMPTY_MESSAGE), false);
                        let mut body = request.into_body();
                        let ended = loop {
                            match body.data().await {
                                Some(Ok(data)) => {
                                    let _ = body.flow_control().release_capacity(data.len());
                                }
                                Some(Err(e)) => break format!("{:?}", e.reason()),
                                None => break "end".to_string(),
                            }
                        };
                        let _ = tx.send(ended);
                        drop(send);
                    });
                }
            });
        }
    });
    (addr, rx)
}

/// A caller that drops the response of a bidirectional call while its request stream is
/// still open has cancelled the call: the server sees the stream reset with CANCEL
/// (grpc-go's client cancels the stream the same way), instead of a call left open
/// until the caller's request stream ends.
#[tokio::test]
async fn dropping_a_streaming_response_cancels_the_call_at_the_server() {
    use test_support::{Note, StreamsClient};
    let (addr, mut ended) = watching_server().await;
    let mut client = StreamsClient::new(channel(&addr));
    let (tx, rx) = tokio::sync::mpsc::channel::<Note>(1);
    tx.send(Note::default()).await.unwrap();
    let mut stream = tokio::time::timeout(
        Duration::from_secs(3),
        client.chat(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await
    .expect("headers in time")
    .expect("the call starts")
    .into_inner();
    assert!(stream.message().await.expect("a message").is_some());
    drop(stream);
    let how = tokio::time::timeout(Duration::from_secs(3), ended.recv())
        .await
        .expect("the server saw the request stream end within 3 s")
        .unwrap();
    assert_eq!(how, "Some(CANCEL)");
    // The caller's sender is still open: the cancel did not wait for it.
    drop(tx);
}
