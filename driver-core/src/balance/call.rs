//! One call end to end: pick an endpoint, open a stream, pump the request, hand the
//! response back; account the call's load; read the gRPC headers that matter.
//!
//! Contract: a request that was never sent (the connection refused the stream, went
//! down since the pick) or that the server refused unprocessed goes to another
//! endpoint, at most once per endpoint plus a few races; a request that may have
//! reached a server is never sent again; a call's `grpc-timeout` bounds the whole call
//! (waiting for an endpoint, connecting, sending, the headers and the whole response
//! body or stream): when it passes the stream is reset with `CANCEL` and the call ends
//! `DEADLINE_EXCEEDED`, whichever side noticed first; a stream that fails otherwise
//! gets the status gRPC over HTTP/2 maps its error to (`status`), and so does a
//! response that is not gRPC or ends without trailers; a caller that drops the call's
//! future or its response cancels the call: the stream is reset with `CANCEL`, a
//! request stream still being sent included. The user-agent the application set is
//! kept, ours added after it. Each call counts as pending on its connection until its
//! response body ends (or is dropped), and under [`Policy::PeakEwma`] its latency and outcome feed the estimate: a
//! grpc-status saying the endpoint is unwell (`DEADLINE_EXCEEDED`, `UNIMPLEMENTED`,
//! `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS`) counts as a failure, one about the request
//! does not.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Scheme;
use http_body::Frame;
use tonic::Status;

use super::BoxError;
use super::channel::{Channel, ChannelInner};
use super::policy::Policy;
use super::status::{drop_undecodable_details, missing_trailers, non_grpc_response, stream_status};
use super::table::Slot;
use super::transport::connection::{Connection, OpenError};
use super::transport::exchange::{
    self as transport, Exchange, Pump, PumpHandle, RecvBody, ReqBody,
};
use super::transport::replay;

impl ChannelInner {
    async fn dispatch(
        self: Arc<Self>,
        req: http::Request<tonic::body::Body>,
        deadline: Option<Instant>,
    ) -> Result<http::Response<tonic::body::Body>, Status> {
        let (mut head, body) = req.into_parts();
        transport::strip_connection_headers(&mut head.headers);
        let mut body = ReqBody::Caller(body);
        // Each failed attempt ejects one endpoint until it redials, so the attempts
        // are bounded by the endpoints plus a few for races with redialling.
        let mut max_attempts = usize::MAX;
        let mut last_error = String::new();
        let mut attempt = 0;
        while attempt < max_attempts {
            if attempt == 1 {
                // Only a retry pays for reading the set size.
                max_attempts = self.table().slots.len() + 3;
            }
            attempt += 1;
            let slot = self.pick(deadline).await?;
            set_origin(&mut head.uri, &self.authority_scheme, &slot)?;
            let (mut response, stream) = match slot.conn.open(&head).await {
                Ok(opened) => opened,
                // It went down since the pick: pick again.
                Err(OpenError::NotReady) => continue,
                Err(OpenError::Refused(e)) => {
                    // Never sent: safe to try another endpoint.
                    let error = e.to_string();
                    tracing::debug!(addr = %slot.endpoint.addr, error = %error, "connection refused the request, trying another endpoint");
                    slot.conn.retire(&error);
                    last_error = format!("{}: {error}", slot.endpoint.addr);
                    continue;
                }
                Err(OpenError::Rejected(e)) => {
                    return Err(Status::internal(format!(
                        "target `{}`: HTTP/2 cannot carry this request: {e}",
                        self.target
                    )));
                }
            };
            let guard = CallGuard::new(slot.conn.clone(), self.policy == Policy::PeakEwma);
            let mut pump = Pump::new(body, stream);
            match transport::exchange(&mut response, &mut pump).await {
                Ok(resp) => {
                    slot.conn.activity.note_progress();
                    let (mut parts, stream) = resp.into_parts();
                    let what =
                        || format!("target `{}`: call to {}", self.target, slot.endpoint.addr);
                    drop_undecodable_details(&mut parts.headers, what);
                    if let Some(status) = non_grpc_response(&parts, what) {
                        // Dropping the stream and the pump resets the stream.
                        guard.finish(true);
                        return Err(status);
                    }
                    let pump = (!pump.is_done()).then(|| pump.spawn_rest(deadline));
                    // One lookup: a trailers-only response (status in the headers) has no
                    // trailers to come; a non-200 one without a status is mapped by tonic
                    // from its HTTP status.
                    let status = parts.headers.get(&GRPC_STATUS);
                    let failed = status.is_some_and(failure_code);
                    let awaits_trailers = status.is_none() && parts.status == http::StatusCode::OK;
                    let body = ObservedBody {
                        inner: Some(RecvBody::new(stream)),
                        guard: Some(guard),
                        failed,
                        awaits_trailers,
                        _pump: pump,
                        deadline,
                        timer: deadline.map(|d| Box::pin(tokio::time::sleep_until(d.into()))),
                        channel: self.clone(),
                        slot: slot.clone(),
                    };
                    return Ok(http::Response::from_parts(
                        parts,
                        tonic::body::Body::new(body),
                    ));
                }
                Err(Exchange::BodyFailed(status)) => {
                    guard.finish(false);
                    return Err(status);
                }
                Err(Exchange::Stream(e)) => {
                    let error = e.to_string();
                    match (replay::refusal(&e), pump.replayable()) {
                        (Some(refusal), Some(again)) => {
                            // Refused unprocessed: safe to send again elsewhere.
                            tracing::debug!(addr = %slot.endpoint.addr, error = %error, "request refused, retrying on another endpoint");
                            if refusal == replay::Refusal::GoingAway {
                                slot.conn.retire(&error);
                            }
                            guard.finish(false);
                            last_error = format!("{}: {error}", slot.endpoint.addr);
                            body = again;
                        }
                        _ => {
                            guard.finish(true);
                            let what =
                                format!("target `{}`: call to {}", self.target, slot.endpoint.addr);
                            return Err(stream_status(&e, deadline, &what));
                        }
                    }
                }
            }
        }
        Err(Status::unavailable(format!(
            "target `{}`: no endpoint took the request after {max_attempts} attempts; last error: {last_error}",
            self.target
        )))
    }
}

fn set_origin(uri: &mut http::Uri, scheme: &Scheme, slot: &Slot) -> Result<(), Status> {
    let Some(authority) = slot.authority.clone() else {
        return Err(Status::internal(format!(
            "endpoint address `{}` is not a valid host:port authority; fix the registry entry",
            slot.endpoint.addr
        )));
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.scheme = Some(scheme.clone());
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *uri = http::Uri::from_parts(parts)
        .map_err(|e| Status::internal(format!("cannot build request URI: {e}")))?;
    Ok(())
}

/// Ours, in the `grpc-<language>-<transport>/<version>` shape gRPC recommends.
const USER_AGENT: &str = concat!("grpc-rust-dtmdriver/", env!("CARGO_PKG_VERSION"));

/// Keeps the application's user-agent and adds ours after it (gRPC's convention);
/// ours alone when it set none.
fn add_user_agent(headers: &mut http::HeaderMap) {
    let value = match headers.get(http::header::USER_AGENT) {
        None => http::HeaderValue::from_static(USER_AGENT),
        Some(app) => {
            let mut joined = app.as_bytes().to_vec();
            joined.push(b' ');
            joined.extend_from_slice(USER_AGENT.as_bytes());
            http::HeaderValue::from_bytes(&joined)
                .unwrap_or_else(|_| http::HeaderValue::from_static(USER_AGENT))
        }
    };
    headers.insert(http::header::USER_AGENT, value);
}

// Header names as constants: a lookup by `&str` parses the name on every call.
static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
static GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// True if headers (or trailers) carry a grpc-status that speaks of the endpoint's
/// health rather than the request: DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
/// UNAVAILABLE, DATA_LOSS (go-zero's choice). A NOT_FOUND is the caller's business
/// and must not steer traffic away.
fn grpc_failed(headers: &http::HeaderMap) -> bool {
    headers.get(&GRPC_STATUS).is_some_and(failure_code)
}

fn failure_code(status: &http::HeaderValue) -> bool {
    matches!(status.as_bytes(), b"4" | b"12" | b"13" | b"14" | b"15")
}

/// Parses gRPC's `grpc-timeout` header: up to 8 digits and a unit (H M S m u n).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get(&GRPC_TIMEOUT)?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Counts a call as pending on its connection and records its outcome when it ends
/// (for peak-EWMA, its latency too).
struct CallGuard {
    conn: Arc<Connection>,
    /// When the call started, if its latency is recorded.
    start: Option<Instant>,
    done: bool,
}

impl CallGuard {
    fn new(conn: Arc<Connection>, timed: bool) -> Self {
        conn.activity.call_started();
        Self {
            conn,
            start: timed.then(Instant::now),
            done: false,
        }
    }

    fn finish(mut self, failed: bool) {
        self.record(failed);
    }

    fn record(&mut self, failed: bool) {
        if !self.done {
            self.done = true;
            self.conn.activity.call_ended();
            match self.start {
                Some(start) => self.conn.load.record(start.elapsed(), failed),
                None => self.conn.load.record_outcome(failed),
            }
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.record(false);
    }
}

/// The response body, watched for the end of the call and its grpc-status, and held
/// to the call's deadline: when it passes before the body ends, the stream is reset and
/// the call ends `DEADLINE_EXCEEDED` (tonic reads the status from the body's error).
struct ObservedBody {
    /// `None` once the deadline ended the call (dropping it resets the stream).
    inner: Option<RecvBody>,
    guard: Option<CallGuard>,
    failed: bool,
    /// The call's status is yet to come in trailers: a body that ends without them
    /// ends the call `INTERNAL`.
    awaits_trailers: bool,
    /// The request body still being sent, cancelled when this body is dropped.
    _pump: Option<PumpHandle>,
    deadline: Option<Instant>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// For the messages of failed calls.
    channel: Arc<ChannelInner>,
    slot: Arc<Slot>,
}

impl ObservedBody {
    fn what(&self) -> String {
        format!(
            "target `{}`: call to {}",
            self.channel.target, self.slot.endpoint.addr
        )
    }

    fn finish(&mut self) {
        if let Some(g) = self.guard.take() {
            g.finish(self.failed);
        }
    }
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(timer) = this.timer.as_mut()
            && timer.as_mut().poll(cx).is_ready()
        {
            // Dropping the stream resets it (CANCEL); the request pump, if still
            // running, resets at the same deadline.
            this.inner = None;
            this.failed = true;
            this.finish();
            return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                "{}: deadline exceeded while reading the response",
                this.what()
            )))));
        }
        let polled = match inner.poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(mut frame))) => {
                if let Some(g) = &this.guard {
                    g.conn.activity.note_progress();
                }
                if let Some(trailers) = frame.trailers_mut() {
                    this.failed |= grpc_failed(trailers);
                    this.awaits_trailers = false;
                    drop_undecodable_details(trailers, || this.what());
                }
                Some(Ok(frame))
            }
            Poll::Ready(Some(Err(e))) => {
                this.failed = true;
                Some(Err(stream_status(&e, this.deadline, &this.what())))
            }
            Poll::Ready(None) if this.awaits_trailers => {
                this.failed = true;
                this.awaits_trailers = false;
                Some(Err(missing_trailers(&this.what())))
            }
            Poll::Ready(None) => None,
        };
        let ended = matches!(polled, None | Some(Err(_)))
            || this.inner.as_ref().is_some_and(RecvBody::is_end_stream);
        if ended {
            this.finish();
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        // Missing trailers are still to be reported.
        !self.awaits_trailers && self.inner.as_ref().is_none_or(RecvBody::is_end_stream)
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is decided per call, after the pick; a channel always accepts.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            add_user_agent(req.headers_mut());
            let timeout = grpc_timeout(req.headers());
            let deadline = timeout.map(|t| crate::duration::deadline_after(Instant::now(), t));
            let result = match deadline {
                None => inner.dispatch(req, None).await,
                Some(d) => {
                    let target = inner.target.clone();
                    match tokio::time::timeout_at(d.into(), inner.dispatch(req, deadline)).await {
                        Ok(r) => r,
                        Err(_) => Err(Status::deadline_exceeded(format!(
                            "target `{target}`: deadline of {} ms exceeded",
                            timeout.unwrap_or_default().as_millis()
                        ))),
                    }
                }
            };
            result.map_err(|s| Box::new(s) as BoxError)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_health_codes_count_as_failures() {
        let mut h = http::HeaderMap::new();
        assert!(!grpc_failed(&h));
        for (code, failed) in [
            ("0", false),
            ("5", false),
            ("3", false),
            ("13", true),
            ("14", true),
            ("4", true),
        ] {
            h.insert("grpc-status", code.parse().unwrap());
            assert_eq!(grpc_failed(&h), failed, "{code}");
        }
    }

    #[test]
    fn the_applications_user_agent_comes_first() {
        let mut h = http::HeaderMap::new();
        add_user_agent(&mut h);
        assert_eq!(h[http::header::USER_AGENT], USER_AGENT);
        assert!(USER_AGENT.starts_with("grpc-rust-dtmdriver/"));
        let mut h = http::HeaderMap::new();
        h.insert(http::header::USER_AGENT, "myapp/1.2".parse().unwrap());
        add_user_agent(&mut h);
        assert_eq!(
            h[http::header::USER_AGENT],
            format!("myapp/1.2 {USER_AGENT}").as_str()
        );
    }

    #[test]
    fn grpc_timeout_units() {
        let mut h = http::HeaderMap::new();
        for (v, d) in [
            ("5S", Duration::from_secs(5)),
            ("100m", Duration::from_millis(100)),
            ("2M", Duration::from_secs(120)),
            ("1H", Duration::from_secs(3600)),
            ("7u", Duration::from_micros(7)),
            ("9n", Duration::from_nanos(9)),
        ] {
            h.insert("grpc-timeout", v.parse().unwrap());
            assert_eq!(grpc_timeout(&h), Some(d), "{v}");
        }
        for bad in ["S", "5", "123456789S", "5x"] {
            h.insert("grpc-timeout", bad.parse().unwrap());
            assert_eq!(grpc_timeout(&h), None, "{bad}");
        }
    }
}
