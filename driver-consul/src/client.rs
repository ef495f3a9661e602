//! Where a consul target points, and the HTTP client every registration and watch
//! shares.
//!
//! A consul target names one agent's HTTP API and a service:
//!
//! ```text
//! consul://[user:password@]host[:8500]/SERVICE[?token=T][&dc=DC][&...]
//! ```
//!
//! * the port defaults to 8500;
//! * the ACL token comes from `?token=`, else from the `CONSUL_HTTP_TOKEN` environment
//!   variable (as consul's own tools do), and is sent as the `X-Consul-Token` header;
//! * `?dc=` picks the datacenter of health queries;
//! * `user:password@` is sent as HTTP basic auth (for an agent behind a proxy).
//!
//! All agents are reached through one pooled HTTP/1.1 client (hyper), so a process
//! holds a handful of connections per agent however many services it registers and
//! watches.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use driver_core::{Error, Result, Target};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

/// The port of a consul agent's HTTP API when the target names none.
pub const DEFAULT_PORT: u16 = 8500;

/// The environment variable consul's tools read the ACL token from.
pub const TOKEN_ENV: &str = "CONSUL_HTTP_TOKEN";

/// How long a plain (non-blocking) request may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Characters escaped in a path segment or query value.
const ESCAPE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'/')
    .add(b'=')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// Percent-encodes a path segment or a query value.
pub(crate) fn escape(s: &str) -> String {
    utf8_percent_encode(s, ESCAPE).to_string()
}

/// Which agent to talk to, and as whom. Equal configs share watches.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ConsulConfig {
    addr: String,
    token: Option<String>,
    basic_auth: Option<(String, String)>,
}

impl fmt::Debug for ConsulConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulConfig")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("user", &self.basic_auth.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl ConsulConfig {
    /// The agent at `addr` (`host:port`), without a token.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            token: None,
            basic_auth: None,
        }
    }

    /// Sends `token` as `X-Consul-Token` on every request.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sends HTTP basic auth on every request.
    pub fn with_basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.basic_auth = Some((user.into(), password.into()));
        self
    }

    /// The agent's `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether an ACL token is sent.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }
}

/// A consul target split into the agent, the service and the datacenter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsulTarget {
    /// The agent and credentials.
    pub config: ConsulConfig,
    /// The service name.
    pub service: String,
    /// The datacenter from `?dc=`, if any.
    pub dc: Option<String>,
}

impl ConsulTarget {
    /// Splits a target of the shape in the [module docs](self). The token falls back to
    /// `CONSUL_HTTP_TOKEN`.
    ///
    /// ```
    /// use driver_core::Target;
    /// use driver_consul::ConsulTarget;
    /// let t = ConsulTarget::from_target(&Target::parse("consul://127.0.0.1/trans?dc=dc2&token=abc").unwrap()).unwrap();
    /// assert_eq!(t.config.addr(), "127.0.0.1:8500");
    /// assert_eq!(t.service, "trans");
    /// assert_eq!(t.dc.as_deref(), Some("dc2"));
    /// assert!(t.config.has_token());
    /// ```
    pub fn from_target(target: &Target) -> Result<Self> {
        Self::from_target_with_env(target, std::env::var(TOKEN_ENV).ok())
    }

    fn from_target_with_env(target: &Target, env_token: Option<String>) -> Result<Self> {
        let bad = |reason: String| Error::BadTarget {
            target: target.to_string(),
            reason,
        };
        let host = match target.hosts() {
            [one] => one.clone(),
            [] => {
                return Err(bad(format!(
                    "no consul agent address; write {}://host:8500/SERVICE",
                    target.scheme()
                )));
            }
            many => {
                return Err(bad(format!(
                    "a consul target names one agent, not {}; point it at the local agent \
                     (consul agents forward to the servers)",
                    many.join(",")
                )));
            }
        };
        let has_port = match host.strip_prefix('[') {
            Some(v6) => v6.contains("]:"),
            None => host.contains(':'),
        };
        let addr = if has_port {
            host
        } else {
            format!("{host}:{DEFAULT_PORT}")
        };
        let service = target.endpoint().to_string();
        if service.is_empty() || service.contains('/') {
            return Err(bad(format!(
                "the service name after the host must be one non-empty path segment; write \
                 {}://{addr}/SERVICE",
                target.scheme()
            )));
        }
        let mut config = ConsulConfig::new(addr);
        let token = target
            .query("token")
            .map(str::to_string)
            .or(env_token)
            .filter(|t| !t.is_empty());
        if let Some(token) = token {
            config = config.with_token(token);
        }
        if let Some(user) = target.user() {
            config = config.with_basic_auth(user, target.password().unwrap_or_default());
        }
        let dc = target
            .query("dc")
            .filter(|d| !d.is_empty())
            .map(str::to_string);
        Ok(Self {
            config,
            service,
            dc,
        })
    }
}

/// Parses a duration as consul and go-zero targets write it: `14s`, `500ms`, `2m`,
/// `1h`, or a bare number of seconds.
///
/// ```
/// use std::time::Duration;
/// use driver_consul::parse_duration;
/// assert_eq!(parse_duration("14s"), Some(Duration::from_secs(14)));
/// assert_eq!(parse_duration("1500ms"), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
/// assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
/// assert_eq!(parse_duration("soon"), None);
/// ```
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// Splits `host:port` (`[v6]:port` too) into the host (without brackets) and the port.
///
/// ```
/// use driver_consul::split_host_port;
/// assert_eq!(split_host_port("10.0.0.5:8080").unwrap(), ("10.0.0.5".to_string(), 8080));
/// assert_eq!(split_host_port("[::1]:80").unwrap(), ("::1".to_string(), 80));
/// assert!(split_host_port("10.0.0.5").is_err());
/// ```
pub fn split_host_port(endpoint: &str) -> Result<(String, u16)> {
    let bad = |reason: &str| Error::BadEndpoint {
        endpoint: endpoint.to_string(),
        reason: reason.to_string(),
    };
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return Err(bad("write it as host:port"));
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains('/') {
        return Err(bad("the host is empty or not a host name; write host:port"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host.to_string(), p)),
        _ => Err(bad("the port must be a number from 1 to 65535")),
    }
}

/// Why a request to consul failed. Every message names the agent and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsulError {
    /// No connection: the agent is down or the address is wrong.
    #[error(
        "cannot reach the consul agent at {addr} ({what}): {reason}; is the agent running there?"
    )]
    Unreachable {
        /// The agent.
        addr: String,
        /// The operation.
        what: String,
        /// The transport error.
        reason: String,
    },
    /// No answer in time.
    #[error("the consul agent at {addr} did not answer {what} within {after:?}")]
    Timeout {
        /// The agent.
        addr: String,
        /// The operation.
        what: String,
        /// The bound.
        after: Duration,
    },
    /// HTTP 403: the ACL token is missing, unknown or lacks a permission.
    #[error(
        "the consul agent at {addr} refused {what}: {message}; the ACL token was {token}: pass a \
         token with the needed permission as ?token=... on the target or set CONSUL_HTTP_TOKEN"
    )]
    Refused {
        /// The agent.
        addr: String,
        /// The operation.
        what: String,
        /// consul's message.
        message: String,
        /// "missing" or "refused".
        token: &'static str,
    },
    /// Any other non-success status.
    #[error("the consul agent at {addr} answered {what} with HTTP {code}: {message}")]
    Status {
        /// The agent.
        addr: String,
        /// The operation.
        what: String,
        /// The HTTP status code.
        code: u16,
        /// consul's message.
        message: String,
    },
    /// A success status with a body we cannot read.
    #[error(
        "the consul agent at {addr} answered {what} with a body that is not what consul sends: {reason}"
    )]
    Decode {
        /// The agent.
        addr: String,
        /// The operation.
        what: String,
        /// The parse error.
        reason: String,
    },
}

impl ConsulError {
    /// True for HTTP 404, and for the 500 "unknown check / service" answers of older
    /// agents: the thing addressed does not exist (e.g. the agent restarted).
    pub fn is_not_found(&self) -> bool {
        match self {
            Self::Status { code, message, .. } => {
                *code == 404
                    || (*code == 500 && {
                        let m = message.to_ascii_lowercase();
                        m.contains("unknown check")
                            || m.contains("unknown service")
                            || m.contains("does not have")
                    })
            }
            _ => false,
        }
    }

    /// True when the agent could not be reached or did not answer.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Timeout { .. })
    }

    /// As a [`driver_core::Error`] about `target`.
    pub fn into_registry_error(self, target: &str) -> Error {
        Error::Registry {
            target: target.to_string(),
            message: self.to_string(),
        }
    }
}

/// One answer from consul.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    /// `X-Consul-Index`, 0 when missing or garbled.
    pub(crate) fn index(&self) -> u64 {
        self.header("x-consul-index")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

static HTTP: LazyLock<Client<HttpConnector, Full<Bytes>>> = LazyLock::new(|| {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
});

/// A consul agent's HTTP API, as one config's caller sees it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ConsulClient {
    config: ConsulConfig,
}

impl ConsulClient {
    /// A client for `config` (no connection is made until the first request).
    pub fn new(config: ConsulConfig) -> Self {
        Self { config }
    }

    /// The config.
    pub fn config(&self) -> &ConsulConfig {
        &self.config
    }

    /// Sends one request with `body` (JSON) and waits at most `timeout`. Non-2xx
    /// answers are errors. `what` names the operation in errors.
    pub(crate) async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
        what: &str,
    ) -> std::result::Result<Reply, ConsulError> {
        let addr = &self.config.addr;
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path_and_query}"))
            .header(http::header::HOST, addr.as_str());
        if let Some(token) = &self.config.token {
            request = request.header("x-consul-token", token.as_str());
        }
        if let Some((user, password)) = &self.config.basic_auth {
            request = request.header(
                http::header::AUTHORIZATION,
                format!("Basic {}", base64(&format!("{user}:{password}"))),
            );
        }
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ConsulError::Unreachable {
                addr: addr.clone(),
                what: what.to_string(),
                reason: format!("cannot build the request: {e}"),
            })?;
        let exchange = async {
            let response = HTTP.request(request).await.map_err(|e| {
                let mut reason = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    reason = format!("{reason}: {s}");
                    source = s.source();
                }
                ConsulError::Unreachable {
                    addr: addr.clone(),
                    what: what.to_string(),
                    reason,
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| ConsulError::Unreachable {
                    addr: addr.clone(),
                    what: what.to_string(),
                    reason: format!("reading the answer: {e}"),
                })?
                .to_bytes();
            Ok::<_, ConsulError>((parts.status, parts.headers, body))
        };
        let (status, headers, body) =
            tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| ConsulError::Timeout {
                    addr: addr.clone(),
                    what: what.to_string(),
                    after: timeout,
                })??;
        if status.is_success() {
            return Ok(Reply { headers, body });
        }
        let message = String::from_utf8_lossy(&body).trim().to_string();
        Err(if status == StatusCode::FORBIDDEN {
            ConsulError::Refused {
                addr: addr.clone(),
                what: what.to_string(),
                message,
                token: if self.config.token.is_some() {
                    "refused"
                } else {
                    "missing"
                },
            }
        } else {
            ConsulError::Status {
                addr: addr.clone(),
                what: what.to_string(),
                code: status.as_u16(),
                message,
            }
        })
    }

    /// `PUT path` with a JSON body, bounded by the plain request timeout.
    pub(crate) async fn put<T: serde::Serialize>(
        &self,
        path: &str,
        body: &T,
        what: &str,
    ) -> std::result::Result<Reply, ConsulError> {
        let body = serde_json::to_vec(body).map_err(|e| ConsulError::Decode {
            addr: self.config.addr.clone(),
            what: what.to_string(),
            reason: format!("cannot encode the request: {e}"),
        })?;
        self.send(Method::PUT, path, Some(body), REQUEST_TIMEOUT, what)
            .await
    }

    /// Decodes a reply's JSON body.
    pub(crate) fn decode<T: serde::de::DeserializeOwned>(
        &self,
        reply: &Reply,
        what: &str,
    ) -> std::result::Result<T, ConsulError> {
        serde_json::from_slice(&reply.body).map_err(|e| ConsulError::Decode {
            addr: self.config.addr.clone(),
            what: what.to_string(),
            reason: e.to_string(),
        })
    }
}

/// Standard base64 with padding (for basic auth only).
fn base64(input: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Exponential backoff between attempts, bounded so that a returning agent is noticed
/// within half a second.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_millis(500);

    pub(crate) fn new() -> Self {
        Self { next: Self::FIRST }
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str, env: Option<&str>) -> Result<ConsulTarget> {
        ConsulTarget::from_target_with_env(&Target::parse(t).unwrap(), env.map(str::to_string))
    }

    #[test]
    fn targets_token_and_defaults() {
        let t = parse("consul://u:p@h:1/svc?token=a&dc=x", Some("env")).unwrap();
        assert_eq!(
            t.config,
            ConsulConfig::new("h:1")
                .with_token("a")
                .with_basic_auth("u", "p")
        );
        assert_eq!((t.service.as_str(), t.dc.as_deref()), ("svc", Some("x")));
        let t = parse("consul://h/svc", Some("env")).unwrap();
        assert_eq!(t.config, ConsulConfig::new("h:8500").with_token("env"));
        let t = parse("consul://[::1]/svc", None).unwrap();
        assert_eq!(t.config.addr(), "[::1]:8500");
        assert!(
            !format!("{:?}", parse("consul://h/s?token=secret", None).unwrap()).contains("secret")
        );
    }

    #[test]
    fn bad_targets_say_how_to_write_them() {
        for (t, needle) in [
            ("consul:///svc", "no consul agent"),
            ("consul://a:1,b:2/svc", "one agent"),
            ("consul://a:1/", "service name"),
        ] {
            let e = parse(t, None).unwrap_err().to_string();
            assert!(e.contains(needle), "{t}: {e}");
        }
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            assert_eq!(base64(plain), encoded);
        }
    }

    #[test]
    fn not_found_covers_old_and_new_agents() {
        let status = |code, message: &str| ConsulError::Status {
            addr: "a".into(),
            what: "w".into(),
            code,
            message: message.into(),
        };
        assert!(status(404, "").is_not_found());
        assert!(status(500, "Unknown check ID \"x\"").is_not_found());
        assert!(!status(500, "rpc error").is_not_found());
    }
}
