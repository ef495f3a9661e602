//! The HTTP client every registration and watch shares: [`ConsulClient`].
//!
//! Contract: one request is one bounded exchange (a timeout per call); a non-2xx answer
//! is a [`ConsulError`] naming the agent, the operation and the fix (a 403 names the
//! ACL token, a 400 from an HTTPS port names `?tls_ca=`); an answer is read whole up to
//! a size limit ([`MAX_ANSWER`] unless the caller sets one), a larger one is
//! [`ConsulError::TooLarge`] carrying its `X-Consul-Index`; the ACL token goes in
//! `X-Consul-Token`, `user:password@` as HTTP basic auth.
//!
//! Plain agents are reached through one pooled HTTP/1.1 client (hyper): registrations
//! share a handful of connections per agent, while each watched service's blocking query
//! holds one for its wait. The agent takes at most `limits.http_max_conns_per_client`
//! (200 by default) from one client address and refuses more with a 429 of its own,
//! which is reported naming that limit. Each (agent address, TLS settings) pair has one
//! pooled HTTPS client ([`crate::tls`]), made on first use and kept for the life of the
//! process.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use dtmdriver_core::address::host_of;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::error::ConsulError;
use dtmdriver_core::TlsFiles;

use crate::target::ConsulConfig;

/// The largest answer read unless the caller sets a limit: 1 GiB, about a million
/// instances in a health answer (consul sends about 1 KB an instance). There is no
/// lower limit on the way: a health answer of any size consul serves below it is read.
pub const MAX_ANSWER: usize = 1 << 30;

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

/// One answer from consul.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    /// `X-Consul-Index`, 0 when missing or garbled.
    pub(crate) fn index(&self) -> u64 {
        index_of(&self.headers)
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `X-Consul-Index` of `headers`, 0 when missing or garbled.
fn index_of(headers: &HeaderMap) -> u64 {
    headers
        .get("x-consul-index")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0)
}

/// A pooled HTTP/1.1 client to agents: plain, or HTTPS for one set of TLS settings.
#[derive(Clone)]
enum AgentHttp {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
}

impl AgentHttp {
    fn request(&self, request: Request<Full<Bytes>>) -> ResponseFuture {
        match self {
            Self::Plain(c) => c.request(request),
            Self::Tls(c) => c.request(request),
        }
    }
}

fn tcp() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_secs(2)));
    http.set_nodelay(true);
    http
}

fn pooled() -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder.pool_idle_timeout(Duration::from_secs(30));
    builder
}

/// The client of every plain-HTTP agent.
static HTTP: LazyLock<AgentHttp> = LazyLock::new(|| AgentHttp::Plain(pooled().build(tcp())));

/// One HTTPS client per (agent address, TLS settings), made on first use.
static HTTPS: LazyLock<Mutex<HashMap<(String, TlsFiles), AgentHttp>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The HTTPS client for the agent at `addr`, reading the TLS files on first use. Failed
/// attempts are not kept, so a fixed file is picked up by the next request.
fn https_client(addr: &str, tls: &TlsFiles) -> std::result::Result<AgentHttp, String> {
    let key = (addr.to_string(), tls.clone());
    if let Some(client) = lock(&HTTPS).get(&key) {
        return Ok(client.clone());
    }
    let mut http = tcp();
    http.enforce_http(false);
    let client = AgentHttp::Tls(pooled().build(crate::tls::connector(http, tls)?));
    let client = lock(&HTTPS).entry(key).or_insert(client).clone();
    tracing::debug!(agent = %addr, "created consul HTTPS client");
    Ok(client)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A consul agent's HTTP API, as one config's caller sees it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ConsulClient {
    config: ConsulConfig,
}

impl From<ConsulConfig> for ConsulClient {
    fn from(config: ConsulConfig) -> Self {
        Self::new(config)
    }
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
        self.send_limited(method, path_and_query, body, timeout, what, MAX_ANSWER)
            .await
    }

    /// [`send`](Self::send), reading at most `max_answer` bytes of the answer: a
    /// larger one is [`ConsulError::TooLarge`].
    pub(crate) async fn send_limited(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
        what: &str,
        max_answer: usize,
    ) -> std::result::Result<Reply, ConsulError> {
        let addr = &self.config.addr;
        let (client, scheme) = match &self.config.tls {
            None => (HTTP.clone(), "http"),
            Some(tls) => (
                https_client(addr, tls).map_err(|reason| ConsulError::Tls {
                    addr: addr.clone(),
                    what: what.to_string(),
                    reason,
                })?,
                "https",
            ),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{scheme}://{addr}{path_and_query}"))
            .header(http::header::HOST, addr.as_str());
        if let Some(token) = &self.config.token {
            request = request.header("x-consul-token", token.as_str());
        }
        if let Some((user, password)) = &self.config.basic_auth {
            request = request.header(
                http::header::AUTHORIZATION,
                format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))),
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
            let response = client.request(request).await.map_err(|e| {
                if let Some(tls) = &self.config.tls
                    && let Some(failure) = crate::tls::rustls_error(&e)
                {
                    let name = tls
                        .server_name
                        .clone()
                        .unwrap_or_else(|| host_of(addr).to_string());
                    return ConsulError::Tls {
                        addr: addr.clone(),
                        what: what.to_string(),
                        reason: crate::tls::explain_handshake(failure, tls, &name),
                    };
                }
                let mut reason = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    reason = format!("{reason}: {s}");
                    source = s.source();
                }
                // TLS 1.3 servers judge the client certificate after the handshake: their
                // refusal reaches us as an alert, or, when the agent's close wins the
                // race with the request, as a connection that ended before any answer.
                if let Some(tls) = &self.config.tls {
                    let closed_early = tls.identity.is_none() && crate::tls::closed_early(&e);
                    if reason.contains("fatal alert") || closed_early {
                        return ConsulError::Tls {
                            addr: addr.clone(),
                            what: what.to_string(),
                            reason: crate::tls::client_certificate_hint(&reason),
                        };
                    }
                }
                // consul answers a connection over its per-client limit with a 429 of its
                // own, written before any request: hyper reads it as an unexpected message.
                if reason.contains("unexpected message from connection") {
                    return ConsulError::Status {
                        addr: addr.clone(),
                        what: what.to_string(),
                        code: 429,
                        message: "Too Many Requests (answered before the request was read: \
                                  the agent refuses the connection)"
                            .into(),
                    };
                }
                // Out of file descriptors: raised once for the whole process (the next
                // retry connects), or what to do at the hard limit.
                if dtmdriver_core::open_files::out_of_descriptors(&e) {
                    reason += &if dtmdriver_core::open_files::raise_after_exhaustion() {
                        "; raised the soft open-file limit, retrying".to_string()
                    } else {
                        dtmdriver_core::open_files::advice()
                    };
                }
                ConsulError::Unreachable {
                    addr: addr.clone(),
                    what: what.to_string(),
                    reason,
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max_answer)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<LengthLimitError>() {
                        return ConsulError::TooLarge {
                            addr: addr.clone(),
                            what: what.to_string(),
                            limit: max_answer,
                            index: index_of(&parts.headers),
                        };
                    }
                    ConsulError::Unreachable {
                        addr: addr.clone(),
                        what: what.to_string(),
                        reason: format!("reading the answer: {e}"),
                    }
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
        let mut message = String::from_utf8_lossy(&body).trim().to_string();
        if status == StatusCode::BAD_REQUEST && message.contains("HTTPS server") {
            message.truncate(message.trim_end_matches('.').len());
            message.push_str(
                "; this is the agent's HTTPS port: add ?tls_ca=FILE (the CA that signed its \
                 certificate) to the target",
            );
        }
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
