//! Transparent retry of requests a server refused without processing them.
//!
//! A server shutting down sends HTTP/2 GOAWAY; a request that crossed it on the wire
//! is refused (`REFUSED_STREAM`, or a stream above GOAWAY's last id) and, by the
//! protocol, was not processed, so gRPC retries it on another endpoint (as grpc-go
//! does, whatever the GOAWAY's error code, `ENHANCE_YOUR_CALM` "too_many_pings"
//! included). The request head is kept by the call, and the body's frames by the pump
//! that sent them (reference-counted copies, nothing copied up front; see
//! `transport`). A request whose whole body was sent and is at most [`REPLAY_LIMIT`]
//! (any unary call's) can be sent again; a larger or unfinished (streaming) body is not
//! retried.

/// The largest body kept for a retry.
pub(crate) const REPLAY_LIMIT: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `REFUSED_STREAM`: this stream only; the connection stays usable.
    Stream,
    /// Graceful GOAWAY: the connection takes no new streams and will close.
    GoingAway,
}

/// Whether the stream's error says the server refused it unprocessed.
///
/// h2 hands a stream the peer's GOAWAY only when the stream's id is above the frame's
/// last-stream-id, which the peer thereby declares unprocessed (RFC 9113 §6.8),
/// whatever the GOAWAY's error code: a stream below it that the connection's end cut
/// off gets an I/O error instead, and is not retried.
pub(crate) fn refusal(error: &h2::Error) -> Option<Refusal> {
    if error.reason() == Some(h2::Reason::REFUSED_STREAM) {
        return Some(Refusal::Stream);
    }
    (error.is_go_away() && error.is_remote()).then_some(Refusal::GoingAway)
}
