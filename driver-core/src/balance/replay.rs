//! Transparent retry of requests a server refused without processing them.
//!
//! A server shutting down sends HTTP/2 GOAWAY; a request that crossed it on the wire
//! is refused (`REFUSED_STREAM`, or a stream above GOAWAY's last id) and, by the
//! protocol, was not processed, so gRPC retries it on another endpoint. hyper has
//! consumed the request by then, so before sending we keep a copy of the head, and the
//! body records its frames as hyper sends them (a reference-counted copy of each data
//! frame, nothing polled or copied up front). A request whose whole body was sent and
//! is at most 64 KiB (any unary call's) can be sent again; a larger or unfinished
//! (streaming) body is not retried.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use tonic::Status;

/// The largest body kept for a retry.
const REPLAY_LIMIT: usize = 64 * 1024;

/// What a [`Recording`] body saw while hyper sent it.
#[derive(Default)]
struct Recorded {
    frames: Vec<Frame<Bytes>>,
    size: usize,
    /// The whole body went out and fit under [`REPLAY_LIMIT`].
    complete: bool,
    /// Too large (or failed): not replayable.
    given_up: bool,
}

/// A request's head and, once sent, its body: what sending it again needs.
pub(crate) struct Replay {
    parts: http::request::Parts,
    recorded: Arc<Mutex<Recorded>>,
}

impl Replay {
    /// Keeps a copy of the head and wraps the body so that it records its frames as
    /// hyper sends them (no copy up front, nothing polled in the caller's task).
    pub(crate) fn prepare(
        req: http::Request<tonic::body::Body>,
    ) -> (http::Request<tonic::body::Body>, Option<Replay>) {
        let (parts, body) = req.into_parts();
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let replay = Replay {
            parts: clone_parts(&parts),
            recorded: recorded.clone(),
        };
        let body = tonic::body::Body::new(Recording {
            inner: body,
            recorded,
        });
        (http::Request::from_parts(parts, body), Some(replay))
    }

    /// The request again, if its whole (small) body was sent and recorded.
    pub(crate) fn request(&self) -> Option<http::Request<tonic::body::Body>> {
        let recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        if !recorded.complete {
            return None;
        }
        let frames: VecDeque<_> = recorded.frames.iter().map(clone_frame).collect();
        Some(http::Request::from_parts(
            clone_parts(&self.parts),
            tonic::body::Body::new(Frames(frames)),
        ))
    }
}

/// Passes a body through, recording its frames for a [`Replay`].
struct Recording {
    inner: tonic::body::Body,
    recorded: Arc<Mutex<Recorded>>,
}

impl Body for Recording {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let mut r = this.recorded.lock().unwrap_or_else(|e| e.into_inner());
        match &polled {
            Poll::Ready(Some(Ok(frame))) if !r.given_up => {
                r.size += frame.data_ref().map_or(0, Bytes::len);
                if r.size > REPLAY_LIMIT {
                    r.given_up = true;
                    r.frames = Vec::new();
                } else {
                    r.frames.push(clone_frame(frame));
                    // hyper stops polling once the body says it has ended.
                    r.complete = this.inner.is_end_stream();
                }
            }
            Poll::Ready(Some(Err(_))) => r.given_up = true,
            Poll::Ready(None) => r.complete = !r.given_up,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `REFUSED_STREAM`: this stream only; the connection stays usable.
    Stream,
    /// Graceful GOAWAY: the connection takes no new streams and will close.
    GoingAway,
}

/// Whether hyper's error says the server refused the stream unprocessed.
pub(crate) fn refusal(error: &hyper::Error) -> Option<Refusal> {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Some(Refusal::Stream);
            }
            let graceful = h2.reason() == Some(h2::Reason::NO_ERROR);
            return (h2.is_go_away() && h2.is_remote() && graceful).then_some(Refusal::GoingAway);
        }
        source = e.source();
    }
    None
}

fn clone_parts(parts: &http::request::Parts) -> http::request::Parts {
    let mut req = http::Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req.into_parts().0
}

fn clone_frame(frame: &Frame<Bytes>) -> Frame<Bytes> {
    match (frame.data_ref(), frame.trailers_ref()) {
        (Some(data), _) => Frame::data(data.clone()),
        (None, Some(trailers)) => Frame::trailers(trailers.clone()),
        (None, None) => Frame::data(Bytes::new()),
    }
}

/// A body of frames held in memory.
struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}
