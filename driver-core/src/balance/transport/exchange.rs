//! One call on an HTTP/2 connection, driven by the caller's own task.
//!
//! A call opens a stream with [`h2`], then its future pumps the request body into the
//! stream while it waits for the response headers; the response body reads the
//! stream. No dispatcher task sits between the caller and the connection (hyper's
//! client spawns one task per request to deliver its response), so a call costs one
//! task hop less. A body still streaming when the response arrives (bidirectional
//! streaming) is pumped on by a task of its own.
//!
//! The pump also keeps what it sent while that fits [`REPLAY_LIMIT`], so a request
//! the server refused unprocessed can go to another endpoint (see `replay`); that
//! includes a request whose stream a GOAWAY closed before its body went out, when the
//! body has ended (a unary call's always has): its frames are kept as if sent.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use http_body::{Body, Frame};
use tonic::Status;

use super::replay::REPLAY_LIMIT;

/// A request body: the caller's, or the recorded frames of one sent before.
pub(crate) enum ReqBody {
    Caller(tonic::body::Body),
    Replay(VecDeque<Frame<Bytes>>),
}

impl ReqBody {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        match self {
            ReqBody::Caller(body) => Pin::new(body).poll_frame(cx),
            ReqBody::Replay(frames) => Poll::Ready(frames.pop_front().map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Caller(body) => body.is_end_stream(),
            ReqBody::Replay(frames) => frames.is_empty(),
        }
    }
}

/// How a [`Pump`] ended.
pub(crate) enum PumpEnd {
    /// The whole body went out.
    Sent,
    /// The caller's body failed; the stream was reset.
    BodyFailed(Status),
    /// The stream cannot take more (reset by the server, connection gone); the
    /// response, or its error, says why.
    StreamClosed,
    /// As [`StreamClosed`](Self::StreamClosed), but the whole body had been read and
    /// kept: a stream the server then turns out to have refused unprocessed (a GOAWAY
    /// that crossed the request) can still be sent again elsewhere.
    ClosedWhole,
}

/// Moves a request body into its stream, with HTTP/2 flow control.
pub(crate) struct Pump {
    body: ReqBody,
    stream: SendStream<Bytes>,
    /// The frames sent so far, while they fit [`REPLAY_LIMIT`].
    recorded: Option<Vec<Frame<Bytes>>>,
    sent: usize,
    done: bool,
}

impl Pump {
    pub(crate) fn new(body: ReqBody, stream: SendStream<Bytes>) -> Self {
        Self {
            body,
            stream,
            recorded: Some(Vec::new()),
            sent: 0,
            done: false,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// The body again, if it was sent whole and is small enough to have been kept.
    pub(crate) fn replayable(&self) -> Option<ReqBody> {
        let recorded = self.recorded.as_ref().filter(|_| self.done)?;
        Some(ReqBody::Replay(recorded.iter().map(clone_frame).collect()))
    }

    pub(crate) fn poll_pump(&mut self, cx: &mut Context<'_>) -> Poll<PumpEnd> {
        let end = ready!(self.poll_inner(cx));
        self.done = true;
        if !matches!(end, PumpEnd::Sent | PumpEnd::ClosedWhole) {
            self.recorded = None;
        }
        Poll::Ready(end)
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<PumpEnd> {
        loop {
            // Up to REPLAY_LIMIT goes out without waiting for the peer's window (h2
            // buffers it); past that, each frame waits until the last ones left, so a
            // long stream is paced by the peer.
            if self.sent > REPLAY_LIMIT {
                self.stream.reserve_capacity(1);
                while self.stream.capacity() == 0 {
                    if self.stream.poll_reset(cx).is_ready() {
                        return Poll::Ready(PumpEnd::StreamClosed);
                    }
                    match ready!(self.stream.poll_capacity(cx)) {
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return Poll::Ready(PumpEnd::StreamClosed),
                    }
                }
            }
            let frame = match ready!(self.body.poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(status)) => {
                    self.stream.send_reset(h2::Reason::CANCEL);
                    return Poll::Ready(PumpEnd::BodyFailed(status));
                }
                None => {
                    return Poll::Ready(match self.stream.send_data(Bytes::new(), true) {
                        Ok(()) => PumpEnd::Sent,
                        Err(_) => PumpEnd::ClosedWhole,
                    });
                }
            };
            self.record(&frame);
            let frame = match frame.into_data() {
                Ok(data) => {
                    self.sent += data.len();
                    let end = self.body.is_end_stream();
                    if self.stream.send_data(data, end).is_err() {
                        return Poll::Ready(self.keep_rest(cx, end));
                    }
                    if end {
                        return Poll::Ready(PumpEnd::Sent);
                    }
                    continue;
                }
                Err(frame) => frame,
            };
            if let Ok(trailers) = frame.into_trailers() {
                return Poll::Ready(match self.stream.send_trailers(trailers) {
                    Ok(()) => PumpEnd::Sent,
                    Err(_) => PumpEnd::ClosedWhole,
                });
            }
        }
    }

    /// The end of a pump whose stream closed under it: [`PumpEnd::ClosedWhole`] if the
    /// body had ended (`ended`) or ends in the frames it has ready now, which are kept
    /// as if sent (a unary body's end follows its message at once); else
    /// [`PumpEnd::StreamClosed`]. It never waits for the body.
    fn keep_rest(&mut self, cx: &mut Context<'_>, mut ended: bool) -> PumpEnd {
        while !ended && self.recorded.is_some() {
            match self.body.poll_frame(cx) {
                Poll::Ready(None) => ended = true,
                Poll::Ready(Some(Ok(frame))) => {
                    self.record(&frame);
                    self.sent += frame.data_ref().map_or(0, Bytes::len);
                    ended = self.body.is_end_stream();
                }
                Poll::Ready(Some(Err(_))) | Poll::Pending => break,
            }
        }
        if ended && self.recorded.is_some() {
            PumpEnd::ClosedWhole
        } else {
            PumpEnd::StreamClosed
        }
    }

    fn record(&mut self, frame: &Frame<Bytes>) {
        let size = self.sent + frame.data_ref().map_or(0, Bytes::len);
        match &mut self.recorded {
            Some(frames) if size <= REPLAY_LIMIT => frames.push(clone_frame(frame)),
            _ => self.recorded = None,
        }
    }

    /// Pumps the rest of the body on a task of its own (a body still streaming when
    /// the response arrived). The stream is reset with `CANCEL` at `deadline`, or when
    /// the returned handle is dropped (the caller dropped the response: the call is
    /// cancelled, as grpc-go cancels a stream whose context ends, instead of being left
    /// open at the server until the caller's request stream ends).
    pub(crate) fn spawn_rest(mut self, deadline: Option<std::time::Instant>) -> PumpHandle {
        let (handle, dropped) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let pumped = poll_fn(|cx| self.poll_pump(cx));
            let deadline = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = pumped => {}
                () = deadline => self.stream.send_reset(h2::Reason::CANCEL),
                _ = dropped => self.stream.send_reset(h2::Reason::CANCEL),
            }
        });
        PumpHandle {
            _reset_on_drop: handle,
        }
    }
}

/// Keeps a spawned [`Pump`] going; dropping it resets the stream (see
/// [`Pump::spawn_rest`]).
pub(crate) struct PumpHandle {
    _reset_on_drop: tokio::sync::oneshot::Sender<()>,
}

fn clone_frame(frame: &Frame<Bytes>) -> Frame<Bytes> {
    match (frame.data_ref(), frame.trailers_ref()) {
        (Some(data), _) => Frame::data(data.clone()),
        (None, Some(trailers)) => Frame::trailers(trailers.clone()),
        (None, None) => Frame::data(Bytes::new()),
    }
}

/// Waits for the response headers while pumping the request body.
pub(crate) async fn exchange(
    response: &mut h2::client::ResponseFuture,
    pump: &mut Pump,
) -> Result<http::Response<RecvStream>, Exchange> {
    poll_fn(|cx| {
        if !pump.is_done()
            && let Poll::Ready(PumpEnd::BodyFailed(status)) = pump.poll_pump(cx)
        {
            return Poll::Ready(Err(Exchange::BodyFailed(status)));
        }
        Pin::new(&mut *response).poll(cx).map_err(Exchange::Stream)
    })
    .await
}

/// Why [`exchange`] got no response.
pub(crate) enum Exchange {
    /// The caller's request body failed.
    BodyFailed(Status),
    /// The stream or the connection failed.
    Stream(h2::Error),
}

/// Connection-specific headers HTTP/2 forbids (RFC 9113 §8.2.2); h2 rejects a
/// request carrying one, so they are dropped as hyper drops them.
pub(crate) fn strip_connection_headers(headers: &mut http::HeaderMap) {
    use http::header::{CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};
    if headers.is_empty() {
        return;
    }
    for name in [CONNECTION, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection"] {
        headers.remove(name);
    }
    if headers.get(TE).is_some_and(|v| v != "trailers") {
        headers.remove(TE);
    }
}

/// A copy of a request head to open a stream with.
pub(crate) fn head(parts: &http::request::Parts) -> http::Request<()> {
    let mut req = http::Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

/// Reads a response body off its stream, giving flow-control credit back as it goes.
pub(crate) struct RecvBody {
    stream: RecvStream,
    data_done: bool,
}

impl RecvBody {
    pub(crate) fn new(stream: RecvStream) -> Self {
        Self {
            stream,
            data_done: false,
        }
    }

    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        match ready!(self.stream.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of one message that, like a unary gRPC body, says it has ended only once
    /// polled past its message.
    struct OneMessage(Option<Bytes>);

    impl Body for OneMessage {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            Poll::Ready(self.0.take().map(|m| Ok(Frame::data(m))))
        }
    }

    /// A stream opened just before the server's GOAWAY (last stream id 0: refused
    /// unprocessed) arrived, its body not yet pumped: the pump finds the stream closed
    /// and keeps the whole body, so the call can send it to another endpoint.
    async fn refused_before_the_body(body: ReqBody) -> (bool, Option<ReqBody>) {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let (client, server) = tokio::join!(
            h2::client::handshake(client_io),
            h2::server::handshake(server_io)
        );
        let (send, connection) = client.expect("client handshake");
        tokio::spawn(connection);
        let mut server = server.expect("server handshake");
        let mut send = send.ready().await.expect("ready");
        let request = http::Request::post("http://test/echo.Echo/Say")
            .body(())
            .unwrap();
        let (response, stream) = send.send_request(request, false).expect("opened");
        // The server has read nothing yet: its GOAWAY names no stream processed.
        server.abrupt_shutdown(h2::Reason::NO_ERROR);
        tokio::spawn(async move { while server.accept().await.is_some() {} });
        let refused = match tokio::time::timeout(std::time::Duration::from_secs(5), response)
            .await
            .expect("the GOAWAY arrives within 5 s")
        {
            Err(e) => super::super::replay::refusal(&e).is_some(),
            Ok(_) => false,
        };
        let mut pump = Pump::new(body, stream);
        let end = poll_fn(|cx| pump.poll_pump(cx)).await;
        (
            refused && matches!(end, PumpEnd::ClosedWhole),
            pump.replayable(),
        )
    }

    #[tokio::test]
    async fn a_body_whose_stream_was_refused_before_it_went_out_is_kept_whole() {
        let message = Bytes::from_static(b"\0\0\0\0\x03abc");
        let body = ReqBody::Caller(tonic::body::Body::new(OneMessage(Some(message.clone()))));
        let (closed_whole, again) = refused_before_the_body(body).await;
        assert!(
            closed_whole,
            "the pump did not end ClosedWhole on a refused stream"
        );
        let Some(ReqBody::Replay(frames)) = again else {
            panic!("the refused request's body was not kept for another endpoint");
        };
        let kept: Vec<Bytes> = frames
            .iter()
            .filter_map(|f| f.data_ref().cloned())
            .collect();
        assert_eq!(kept, [message]);

        let replayed = ReqBody::Replay([Frame::data(Bytes::from_static(b"x"))].into());
        let (closed_whole, again) = refused_before_the_body(replayed).await;
        assert!(
            closed_whole && again.is_some(),
            "a replayed body refused again is not kept"
        );
    }
}
