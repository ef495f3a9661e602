//! The gRPC status of a call that ended on an HTTP/2 error, as gRPC over HTTP/2 maps it.
//!
//! Contract ([`stream_status`]): a call whose deadline has passed when its stream
//! fails is `DEADLINE_EXCEEDED`, whichever side noticed first (a server resets a stream
//! with `CANCEL` when its copy of the deadline fires, often before our own timer);
//! otherwise a reset maps as the gRPC HTTP/2 protocol spec lists it (`CANCEL` →
//! `CANCELLED`, `REFUSED_STREAM` → `UNAVAILABLE`, `ENHANCE_YOUR_CALM` →
//! `RESOURCE_EXHAUSTED`, `INADEQUATE_SECURITY` → `PERMISSION_DENIED`, the other codes
//! → `INTERNAL`), and a lost connection or a `GOAWAY` is `UNAVAILABLE`.
//!
//! A response whose content-type is not gRPC's ([`non_grpc_response`]: a proxy's error
//! page, a plain HTTP server) is not read as gRPC: its status is mapped from the HTTP
//! status as http-grpc-status-mapping.md lists it (400 → `INTERNAL`, 401 →
//! `UNAUTHENTICATED`, 403 → `PERMISSION_DENIED`, 404 → `UNIMPLEMENTED`, 429, 502,
//! 503, 504 → `UNAVAILABLE`, any other, 200 included, → `UNKNOWN`), as grpc-go does.
//! A gRPC response that ends without trailers never said how the call went:
//! `INTERNAL` ([`missing_trailers`]), as grpc-go says.
//!
//! A `grpc-status-details-bin` that is not base64 is dropped, said once at WARN
//! ([`drop_undecodable_details`]): tonic's `Status::from_header_map` panics on one
//! ("Invalid status header, expected base64 encoded value", tonic 0.14), inside the
//! caller's call, so a buggy or hostile server could crash the caller's task. The code
//! and message still arrive.
//!
//! Why it matters: callers and dtm retry `UNAVAILABLE` as "nothing happened"; a call
//! that timed out, or that a server cancelled, must not be reported that way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use tonic::Status;

/// How far before our deadline a failure still counts as the deadline's: the server's
/// copy is our remaining time as `grpc-timeout` carries it, and our timers fire late.
const DEADLINE_SLACK: Duration = Duration::from_millis(1);

/// True once `deadline` has passed (within [`DEADLINE_SLACK`]).
pub(crate) fn deadline_passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() + DEADLINE_SLACK >= d)
}

/// The status of a call to `what` (target and address, for the message) that failed
/// with `error` after its request may have reached the server; see the [module
/// docs](self).
pub(crate) fn stream_status(error: &h2::Error, deadline: Option<Instant>, what: &str) -> Status {
    if deadline_passed(deadline) {
        return Status::deadline_exceeded(format!("{what}: deadline exceeded ({error})"));
    }
    let message = format!("{what}: {error}");
    if error.is_go_away() || error.is_io() || error.reason().is_none() {
        return Status::unavailable(message);
    }
    match error.reason() {
        Some(h2::Reason::CANCEL) => Status::cancelled(message),
        Some(h2::Reason::REFUSED_STREAM) => Status::unavailable(message),
        Some(h2::Reason::ENHANCE_YOUR_CALM) => Status::resource_exhausted(message),
        Some(h2::Reason::INADEQUATE_SECURITY) => Status::permission_denied(message),
        _ => Status::internal(message),
    }
}

/// The status of a response that is not gRPC (see the [module docs](self)), or `None`
/// when its content-type is `application/grpc`, alone or with a `+subtype` or
/// `;parameters` (grpc-go's rule).
/// `what` names the call for the message; it is built only for a failure.
pub(crate) fn non_grpc_response(
    head: &http::response::Parts,
    what: impl FnOnce() -> String,
) -> Option<Status> {
    let content_type = head.headers.get(http::header::CONTENT_TYPE);
    if content_type.is_some_and(|v| is_grpc_content_type(v.as_bytes())) {
        return None;
    }
    let code = match head.status.as_u16() {
        400 => tonic::Code::Internal,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::Unimplemented,
        429 | 502 | 503 | 504 => tonic::Code::Unavailable,
        _ => tonic::Code::Unknown,
    };
    let content = match content_type {
        Some(v) => format!(
            "unexpected content-type {:?}",
            String::from_utf8_lossy(v.as_bytes())
        ),
        None => "no content-type".to_string(),
    };
    Some(Status::new(
        code,
        format!(
            "{}: not a gRPC response: HTTP status {} with {content}",
            what(),
            head.status
        ),
    ))
}

fn is_grpc_content_type(v: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    v.strip_prefix(GRPC)
        .is_some_and(|rest| matches!(rest.first(), None | Some(b'+' | b';')))
}

/// The status of a gRPC response whose body ended without trailers (and whose headers
/// carried no status).
pub(crate) fn missing_trailers(what: &str) -> Status {
    Status::internal(format!(
        "{what}: the server closed the stream without sending trailers (no grpc-status)"
    ))
}

/// What tonic decodes `grpc-status-details-bin` with: the standard alphabet, padding
/// optional.
const DETAILS_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Whether an undecodable `grpc-status-details-bin` was reported at WARN already.
static UNDECODABLE_SAID: AtomicBool = AtomicBool::new(false);

/// Removes `grpc-status-details-bin` from the status headers (trailers, or the headers
/// of a trailers-only response) of a call to `what` when tonic could not decode it;
/// see the [module docs](self).
pub(crate) fn drop_undecodable_details(
    headers: &mut http::HeaderMap,
    what: impl FnOnce() -> String,
) {
    const DETAILS: &str = "grpc-status-details-bin";
    let Some(details) = headers.get(DETAILS) else {
        return;
    };
    if DETAILS_BASE64.decode(details.as_bytes()).is_ok() {
        return;
    }
    headers.remove(DETAILS);
    let what = what();
    if UNDECODABLE_SAID.swap(true, Ordering::Relaxed) {
        tracing::debug!(call = %what, "dropped grpc-status-details-bin: not base64");
    } else {
        tracing::warn!(call = %what, "the server sent a grpc-status-details-bin that is not base64; \
            dropped (the status code and message are kept); said once, then at DEBUG");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn grpc_content_types() {
        for (v, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc;charset=utf-8", true),
            ("application/grpcx", false),
            ("application/json", false),
            ("text/html", false),
            ("application/grp", false),
        ] {
            assert_eq!(super::is_grpc_content_type(v.as_bytes()), grpc, "{v}");
        }
    }

    use super::*;

    #[test]
    fn resets_map_as_the_grpc_http2_spec_says() {
        let reset = |r| h2::Error::from(r);
        for (reason, code) in [
            (h2::Reason::CANCEL, tonic::Code::Cancelled),
            (h2::Reason::NO_ERROR, tonic::Code::Internal),
            (h2::Reason::PROTOCOL_ERROR, tonic::Code::Internal),
            (h2::Reason::INTERNAL_ERROR, tonic::Code::Internal),
            (h2::Reason::FLOW_CONTROL_ERROR, tonic::Code::Internal),
            (h2::Reason::REFUSED_STREAM, tonic::Code::Unavailable),
            (
                h2::Reason::ENHANCE_YOUR_CALM,
                tonic::Code::ResourceExhausted,
            ),
            (
                h2::Reason::INADEQUATE_SECURITY,
                tonic::Code::PermissionDenied,
            ),
        ] {
            assert_eq!(
                stream_status(&reset(reason), None, "t").code(),
                code,
                "{reason:?}"
            );
        }
        // Whatever the reset, past the deadline it is the deadline's.
        let past = Some(Instant::now() - Duration::from_millis(5));
        let soon = Some(Instant::now() + Duration::from_secs(5));
        assert_eq!(
            stream_status(&reset(h2::Reason::CANCEL), past, "t").code(),
            tonic::Code::DeadlineExceeded
        );
        assert_eq!(
            stream_status(&reset(h2::Reason::CANCEL), soon, "t").code(),
            tonic::Code::Cancelled
        );
    }
}
