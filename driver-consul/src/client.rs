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
//! # HTTPS
//!
//! `?tls=true` or any of `?tls_ca=`, `?tls_cert=` + `?tls_key=`, `?tls_server_name=`
//! (the parameter names of etcd targets) talks HTTPS to the agent's HTTPS port
//! (`ports { https = 8501 }` in consul's config):
//!
//! * `tls_ca`: PEM file of the CA that signed the agent's certificate. Required: the
//!   system's roots are not read (for a publicly trusted certificate pass the system's
//!   bundle, e.g. `/etc/ssl/certs/ca-certificates.crt`);
//! * `tls_cert` + `tls_key`: PEM files of a client certificate and its key, for an agent
//!   with `verify_incoming = true`;
//! * `tls_server_name`: the name the agent's certificate is checked against (and sent
//!   as SNI), when not the target's host.
//!
//! As consul's own tools do, `CONSUL_HTTP_SSL=true` turns HTTPS on for targets without
//! TLS parameters, and `CONSUL_CACERT`, `CONSUL_CLIENT_CERT` / `CONSUL_CLIENT_KEY` and
//! `CONSUL_TLS_SERVER_NAME` fill in what a TLS target does not give; `?tls=false` turns
//! HTTPS off whatever the environment says. The files are read when the first request
//! to the agent is made; errors name the file and the parameter to fix.
//!
//! Plain agents are reached through one pooled HTTP/1.1 client (hyper), so a process
//! holds a handful of connections per agent however many services it registers and
//! watches; each (agent address, TLS settings) pair has one pooled HTTPS client, made on
//! first use and kept for the life of the process.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use driver_core::{Error, Result, Target};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{
    self, CertificateError, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};

/// The port of a consul agent's HTTP API when the target names none.
pub const DEFAULT_PORT: u16 = 8500;

/// The environment variable consul's tools read the ACL token from.
pub const TOKEN_ENV: &str = "CONSUL_HTTP_TOKEN";

/// `true` turns HTTPS on for targets without TLS parameters, as for consul's tools.
pub const HTTP_SSL_ENV: &str = "CONSUL_HTTP_SSL";
/// The CA file when a TLS target has no `?tls_ca=`.
pub const CACERT_ENV: &str = "CONSUL_CACERT";
/// The client certificate file when a TLS target has no `?tls_cert=`.
pub const CLIENT_CERT_ENV: &str = "CONSUL_CLIENT_CERT";
/// The client key file when a TLS target has no `?tls_key=`.
pub const CLIENT_KEY_ENV: &str = "CONSUL_CLIENT_KEY";
/// The verification name when a TLS target has no `?tls_server_name=`.
pub const TLS_SERVER_NAME_ENV: &str = "CONSUL_TLS_SERVER_NAME";

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
    tls: Option<ConsulTls>,
}

/// HTTPS to the agent: files read when the first request is made. See the
/// [module docs](self#https).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConsulTls {
    /// PEM file of the CA (or CAs) that signed the agent's certificate (`?tls_ca=`).
    /// Required: the system's roots are not used.
    pub ca: Option<PathBuf>,
    /// PEM files of a client certificate and its key, for an agent with
    /// `verify_incoming = true` (`?tls_cert=&tls_key=`).
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name the agent's certificate is checked against and sent as SNI, when not
    /// the host (`?tls_server_name=`).
    pub server_name: Option<String>,
}

impl fmt::Debug for ConsulConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulConfig")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("user", &self.basic_auth.as_ref().map(|(u, _)| u))
            .field("tls", &self.tls)
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
            tls: None,
        }
    }

    /// Talks HTTPS to the agent.
    pub fn with_tls(mut self, tls: ConsulTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The TLS settings, if the agent is talked to over HTTPS.
    pub fn tls(&self) -> Option<&ConsulTls> {
        self.tls.as_ref()
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
    /// `CONSUL_HTTP_TOKEN`, the TLS settings to `CONSUL_HTTP_SSL` and friends.
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
        Self::from_target_with_env(target, |name| std::env::var(name).ok())
    }

    fn from_target_with_env(target: &Target, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
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
            .or_else(|| env(TOKEN_ENV))
            .filter(|t| !t.is_empty());
        if let Some(token) = token {
            config = config.with_token(token);
        }
        if let Some(user) = target.user() {
            config = config.with_basic_auth(user, target.password().unwrap_or_default());
        }
        if let Some(tls) = tls_from_query(target, &env).map_err(bad)? {
            config = config.with_tls(tls);
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

/// `?tls=`, `?tls_ca=`, `?tls_cert=` + `?tls_key=`, `?tls_server_name=`, with consul's
/// environment variables as fallbacks; see the [module docs](self#https).
fn tls_from_query(
    target: &Target,
    env: &impl Fn(&str) -> Option<String>,
) -> std::result::Result<Option<ConsulTls>, String> {
    let flag = |v: &str, what: &str| match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(format!("{what}`{other}`: write tls=true or tls=false")),
    };
    let asked = match target.query("tls") {
        None | Some("") => None,
        Some(v) => Some(flag(v, "tls=")?),
    };
    let query = |key: &str| target.query(key).filter(|v| !v.is_empty());
    let any_param = ["tls_ca", "tls_cert", "tls_key", "tls_server_name"]
        .iter()
        .any(|k| query(k).is_some());
    let on = match asked {
        Some(false) => return Ok(None),
        Some(true) => true,
        None if any_param => true,
        None => match env(HTTP_SSL_ENV).as_deref() {
            None | Some("") => false,
            Some(v) => flag(v, &format!("{HTTP_SSL_ENV}="))?,
        },
    };
    if !on {
        return Ok(None);
    }
    let setting = |key: &str, var: &str| {
        query(key)
            .map(str::to_string)
            .or_else(|| env(var).filter(|v| !v.is_empty()))
    };
    let identity = match (
        setting("tls_cert", CLIENT_CERT_ENV),
        setting("tls_key", CLIENT_KEY_ENV),
    ) {
        (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
        (None, None) => None,
        _ => return Err("tls_cert and tls_key go together: give both files".into()),
    };
    let tls = ConsulTls {
        ca: setting("tls_ca", CACERT_ENV).map(PathBuf::from),
        identity,
        server_name: setting("tls_server_name", TLS_SERVER_NAME_ENV),
    };
    if tls.ca.is_none() {
        return Err(format!(
            "HTTPS to the consul agent needs the CA that signed the agent's certificate: pass \
             ?tls_ca=FILE (PEM) or set {CACERT_ENV}; the system's roots are not used (for a \
             publicly trusted certificate pass the system's bundle, e.g. \
             tls_ca=/etc/ssl/certs/ca-certificates.crt)"
        ));
    }
    Ok(Some(tls))
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
    /// HTTPS to the agent failed: a TLS file is unusable, the agent's certificate is not
    /// trusted, or the agent does not speak TLS on that port.
    #[error("TLS to the consul agent at {addr} failed ({what}): {reason}")]
    Tls {
        /// The agent.
        addr: String,
        /// The operation.
        what: String,
        /// The problem and the parameter that fixes it.
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

/// A pooled HTTP/1.1 client dialing with an [`AgentConnector`].
type AgentHttp = Client<AgentConnector, Full<Bytes>>;

fn agent_http(tls: Option<Arc<TlsSetup>>) -> AgentHttp {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_secs(2)));
    http.set_nodelay(true);
    http.enforce_http(tls.is_none());
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(AgentConnector { http, tls })
}

/// The client of every plain-HTTP agent.
static HTTP: LazyLock<AgentHttp> = LazyLock::new(|| agent_http(None));

/// One HTTPS client per (agent address, TLS settings), made on first use.
static HTTPS: LazyLock<Mutex<HashMap<(String, ConsulTls), AgentHttp>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The HTTPS client for the agent at `addr`, reading the TLS files on first use. Failed
/// attempts are not kept, so a fixed file is picked up by the next request.
fn https_client(addr: &str, tls: &ConsulTls) -> std::result::Result<AgentHttp, String> {
    let key = (addr.to_string(), tls.clone());
    if let Some(client) = lock(&HTTPS).get(&key) {
        return Ok(client.clone());
    }
    let setup = Arc::new(TlsSetup {
        config: Arc::new(rustls_config(tls)?),
        settings: tls.clone(),
    });
    let client = lock(&HTTPS)
        .entry(key)
        .or_insert_with(|| agent_http(Some(setup)))
        .clone();
    tracing::debug!(agent = %addr, "created consul HTTPS client");
    Ok(client)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read_file(path: &Path, what: &str, param: &str) -> std::result::Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!(
            "cannot read the {what} file {} (?{param}=): {e}",
            path.display()
        )
    })
}

fn pem_certificates(
    path: &Path,
    what: &str,
    param: &str,
) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file(path, what, param)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "the {what} file {} (?{param}=) is not valid PEM: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "the {what} file {} (?{param}=) holds no PEM certificate (no -----BEGIN CERTIFICATE----- block)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The rustls config for `tls` (ring, HTTP/1.1 by ALPN), from its files.
fn rustls_config(tls: &ConsulTls) -> std::result::Result<rustls::ClientConfig, String> {
    let Some(ca) = &tls.ca else {
        return Err(
            "no CA to check the agent's certificate with: pass ?tls_ca=FILE (PEM); the system's \
             roots are not used"
                .into(),
        );
    };
    let mut roots = RootCertStore::empty();
    let (added, rejected) = roots.add_parsable_certificates(pem_certificates(ca, "CA", "tls_ca")?);
    if added == 0 {
        return Err(format!(
            "none of the {rejected} certificates in the CA file {} (?tls_ca=) is usable as a CA: \
             pass the PEM certificate of the CA that signed the agent's certificate",
            ca.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots);
    let mut config = match &tls.identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = pem_certificates(cert, "client certificate", "tls_cert")?;
            let key_pem = read_file(key, "client key", "tls_key")?;
            let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                format!(
                    "no usable private key in the client key file {} (?tls_key=): {e}; pass the \
                     PEM key (PKCS#8, PKCS#1 or SEC1) of the certificate in ?tls_cert=",
                    key.display()
                )
            })?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                format!(
                    "the client certificate {} (?tls_cert=) and key {} (?tls_key=) cannot be used \
                     together: {e}; check that the key belongs to the certificate",
                    cert.display(),
                    key.display()
                )
            })?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A TLS config and the settings it came from (for error hints).
struct TlsSetup {
    config: Arc<rustls::ClientConfig>,
    settings: ConsulTls,
}

/// A failed TLS handshake, already explained.
#[derive(Debug)]
struct TlsFailure(String);

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsFailure {}

/// Dials an agent over TCP, then TLS when the client is an HTTPS one.
#[derive(Clone)]
struct AgentConnector {
    http: HttpConnector,
    tls: Option<Arc<TlsSetup>>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<http::Uri> for AgentConnector {
    type Response = AgentStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<AgentStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let mut http = self.http.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let tcp = tower::Service::call(&mut http, uri).await?;
            let Some(tls) = tls else {
                return Ok(AgentStream::Plain(tcp));
            };
            let name = tls.settings.server_name.clone().unwrap_or(host);
            let server_name = ServerName::try_from(name.clone()).map_err(|e| {
                TlsFailure(format!(
                    "`{name}` is not a valid TLS server name ({e}): pass the name on the agent's \
                     certificate as ?tls_server_name=NAME"
                ))
            })?;
            let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                .connect(server_name, tcp.into_inner())
                .await
                .map_err(|e| TlsFailure(explain_handshake(&e, &tls.settings, &name)))?;
            Ok(AgentStream::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

/// What a failed handshake means and which parameter fixes it.
fn explain_handshake(e: &io::Error, tls: &ConsulTls, name: &str) -> String {
    let ca = tls
        .ca
        .as_ref()
        .map_or_else(|| "none".to_string(), |p| p.display().to_string());
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "the agent's certificate is not signed by the CA in {ca} ({e}): pass the CA \
                 certificate that signed the agent's certificate as ?tls_ca=FILE (PEM)"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "the agent's certificate is not issued for `{name}` ({e}): pass a name it is \
                     issued for as ?tls_server_name=NAME"
                )
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => format!(
                "the agent's certificate is outside its validity period ({e}): renew it or check \
                 this machine's clock"
            ),
            _ => format!(
                "the agent's certificate was rejected ({e}); it must be signed by the CA in \
                 ?tls_ca= ({ca}) and issued for `{name}` (?tls_server_name=)"
            ),
        },
        Some(rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. }) => {
            format!(
                "the agent did not answer with TLS ({e}): is this its HTTPS port \
                 (`ports {{ https = ... }}` in consul's config)? The HTTP port speaks plain HTTP: \
                 drop the tls parameters for it"
            )
        }
        Some(rustls::Error::AlertReceived(_)) => client_certificate_hint(&e.to_string()),
        _ => format!("TLS handshake: {e}"),
    }
}

/// The explanation of an alert the agent sent about our (missing) client certificate.
fn client_certificate_hint(reason: &str) -> String {
    format!(
        "the agent refused the TLS connection ({reason}); an agent with verify_incoming = true \
         wants a client certificate signed by its CA: pass ?tls_cert=FILE&tls_key=FILE"
    )
}

/// A connection to an agent.
enum AgentStream {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for AgentStream {
    fn connected(&self) -> Connected {
        match self {
            Self::Plain(s) => s.connected(),
            Self::Tls(_) => Connected::new(),
        }
    }
}

impl hyper::rt::Read for AgentStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for AgentStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

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
            let response = client.request(request).await.map_err(|e| {
                let mut reason = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    if let Some(failure) = s.downcast_ref::<TlsFailure>() {
                        return ConsulError::Tls {
                            addr: addr.clone(),
                            what: what.to_string(),
                            reason: failure.0.clone(),
                        };
                    }
                    reason = format!("{reason}: {s}");
                    source = s.source();
                }
                // TLS 1.3 servers judge the client certificate after the handshake.
                if self.config.tls.is_some() && reason.contains("fatal alert") {
                    return ConsulError::Tls {
                        addr: addr.clone(),
                        what: what.to_string(),
                        reason: client_certificate_hint(&reason),
                    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str, env: Option<&str>) -> Result<ConsulTarget> {
        parse_env(t, &[(TOKEN_ENV, env.unwrap_or_default())])
    }

    fn parse_env(t: &str, vars: &[(&str, &str)]) -> Result<ConsulTarget> {
        ConsulTarget::from_target_with_env(&Target::parse(t).unwrap(), |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn tls_parameters_and_environment() {
        let tls = |t: &str, vars: &[(&str, &str)]| parse_env(t, vars).map(|t| t.config.tls);
        assert_eq!(tls("consul://h/s", &[]).unwrap(), None);
        assert_eq!(
            tls(
                "consul://h/s?tls_ca=/ca.pem&tls_cert=/c.pem&tls_key=/k.pem&tls_server_name=n",
                &[]
            )
            .unwrap(),
            Some(ConsulTls {
                ca: Some("/ca.pem".into()),
                identity: Some(("/c.pem".into(), "/k.pem".into())),
                server_name: Some("n".into()),
            })
        );
        // consul's variables: HTTPS on, files filled in; the target's own win.
        let env = [
            (HTTP_SSL_ENV, "true"),
            (CACERT_ENV, "/env-ca.pem"),
            (TLS_SERVER_NAME_ENV, "env-name"),
        ];
        let t = tls("consul://h/s", &env).unwrap().unwrap();
        assert_eq!(t.ca, Some("/env-ca.pem".into()));
        assert_eq!(t.server_name.as_deref(), Some("env-name"));
        let t = tls("consul://h/s?tls_ca=/ca.pem", &env).unwrap().unwrap();
        assert_eq!(t.ca, Some("/ca.pem".into()));
        assert_eq!(tls("consul://h/s?tls=false", &env).unwrap(), None);
        // Environment files alone do not turn HTTPS on.
        assert_eq!(
            tls("consul://h/s", &[(CACERT_ENV, "/ca.pem")]).unwrap(),
            None
        );
        for (t, needle) in [
            ("consul://h/s?tls=true", "?tls_ca=FILE"),
            ("consul://h/s?tls=yes", "tls=true or tls=false"),
            (
                "consul://h/s?tls_ca=/a&tls_cert=/c",
                "tls_cert and tls_key go together",
            ),
        ] {
            let e = parse_env(t, &[]).unwrap_err().to_string();
            assert!(e.contains(needle), "{t}: {e}");
        }
    }

    #[test]
    fn unusable_tls_files_are_named() {
        let dir = std::env::temp_dir().join(format!("consul-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not pem").unwrap();
        let missing = dir.join("missing.pem");
        for (tls, needles) in [
            (
                ConsulTls {
                    ca: Some(missing.clone()),
                    ..ConsulTls::default()
                },
                vec!["missing.pem", "?tls_ca="],
            ),
            (
                ConsulTls {
                    ca: Some(empty.clone()),
                    ..ConsulTls::default()
                },
                vec!["empty.pem", "no PEM certificate"],
            ),
            (ConsulTls::default(), vec!["?tls_ca=FILE"]),
        ] {
            let e = rustls_config(&tls).unwrap_err();
            for needle in needles {
                assert!(e.contains(needle), "{tls:?}: {e}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
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
