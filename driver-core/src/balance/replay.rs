//! Transparent retry of requests a server refused without processing them.
//!
//! A server shutting down sends HTTP/2 GOAWAY; a request that crossed it on the wire
//! is refused (`REFUSED_STREAM`, or a stream above GOAWAY's last id) and, by the
//! protocol, was not processed, so gRPC retries it on another endpoint. hyper has
//! consumed the request by then, so before sending we keep what a retry needs: the
//! head, and the body if it is small and complete at once (a unary call's message is).
//! Streaming bodies are sent as they are and not retried.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::FutureExt;
use http_body::{Body, Frame};
use tonic::Status;

/// The largest body kept for a retry.
const REPLAY_LIMIT: usize = 64 * 1024;

/// A request's head and complete body, to send again.
pub(crate) struct Replay {
    parts: http::request::Parts,
    frames: Vec<Frame<Bytes>>,
}

impl Replay {
    /// Takes the body's frames that are ready now. Returns the request to send and,
    /// if the whole body was ready and small, a [`Replay`] of it.
    pub(crate) fn prepare(
        req: http::Request<tonic::body::Body>,
    ) -> (http::Request<tonic::body::Body>, Option<Replay>) {
        let (parts, mut body) = req.into_parts();
        let mut frames = Vec::new();
        let mut size = 0;
        loop {
            let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).now_or_never();
            match next {
                // Complete: send (and keep) the frames alone.
                Some(None) => {
                    let replay = Replay {
                        parts: clone_parts(&parts),
                        frames: frames.iter().map(clone_frame).collect(),
                    };
                    let body = tonic::body::Body::new(Frames(frames.into()));
                    return (http::Request::from_parts(parts, body), Some(replay));
                }
                Some(Some(Ok(frame))) => {
                    size += frame.data_ref().map_or(0, Bytes::len);
                    frames.push(frame);
                    if size > REPLAY_LIMIT {
                        break;
                    }
                }
                // An error, or not ready yet: hand it over to hyper as it is.
                Some(Some(Err(e))) => {
                    let body = tonic::body::Body::new(Prefixed {
                        prefix: frames.into(),
                        rest: Some(body),
                        error: Some(e),
                    });
                    return (http::Request::from_parts(parts, body), None);
                }
                None => break,
            }
        }
        let body = tonic::body::Body::new(Prefixed {
            prefix: frames.into(),
            rest: Some(body),
            error: None,
        });
        (http::Request::from_parts(parts, body), None)
    }

    /// The request again, for another endpoint.
    pub(crate) fn request(&self) -> http::Request<tonic::body::Body> {
        let frames: VecDeque<_> = self.frames.iter().map(clone_frame).collect();
        http::Request::from_parts(
            clone_parts(&self.parts),
            tonic::body::Body::new(Frames(frames)),
        )
    }
}

/// Why a server refused a stream unprocessed.
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

/// Frames already taken from a body, then the rest of it.
struct Prefixed {
    prefix: VecDeque<Frame<Bytes>>,
    rest: Option<tonic::body::Body>,
    error: Option<Status>,
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(frame) = this.prefix.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(e) = this.error.take() {
            this.rest = None;
            return Poll::Ready(Some(Err(e)));
        }
        match &mut this.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }
}
