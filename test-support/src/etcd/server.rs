//! [`EtcdServer`]: a private single-member etcd server on free loopback ports.
//!
//! The server is one [`Member`] named `default`; its HTTP helpers (authentication setup,
//! `/metrics`, compaction) go through etcd's loopback client port.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::member::{Member, answered_ok, http_request, loopback_url, metric, unique_token};
use crate::binary::etcd_binary;
use crate::ports::free_ports;
use crate::process;

/// How long a single server may take to become healthy.
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A private single-member etcd server on free loopback ports.
///
/// The server runs the real `etcd` binary with a temporary data directory; its output
/// goes to a log file in that directory ([`EtcdServer::log_path`]). Dropping the handle
/// SIGKILLs and reaps the process and removes the directory.
///
/// All methods are blocking (they wait at most a few seconds) and can be called from
/// async tests.
///
/// ```
/// let mut server = test_support::EtcdServer::start();
/// let port = server.port();
/// server.kill();
/// assert!(!server.is_running());
/// server.restart();
/// assert!(server.is_running());
/// assert_eq!(server.port(), port);
/// ```
#[derive(Debug)]
pub struct EtcdServer {
    member: Member,
}

impl EtcdServer {
    /// Starts etcd on two free loopback ports (client and peer) and waits until it
    /// reports healthy (at most about 10 s).
    ///
    /// # Panics
    ///
    /// Panics if `etcd` is not installed (with the command that installs it) or does not
    /// become healthy; the panic message includes the end of etcd's log.
    pub fn start() -> EtcdServer {
        Self::start_inner(etcd_binary(), None, Vec::new())
    }

    /// Like [`start`](Self::start), running another etcd build: `binary` (e.g. the newer
    /// etcd kube-apiserver wants, built into `interop/bin/kube-etcd`).
    pub fn start_binary(binary: &Path) -> EtcdServer {
        Self::start_inner(binary.to_owned(), None, Vec::new())
    }

    /// Like [`start`](Self::start), with authentication enabled: the user
    /// [`ROOT_USER`](Self::ROOT_USER) with `root_password` holds the `root` role, and
    /// requests without a valid token are refused. etcd's simple tokens die with the
    /// process (a [`restart`](Self::restart) invalidates them) and after `token_ttl`
    /// without use (`--auth-token-ttl`, whole seconds, at least 1; etcd's default is
    /// 300 s when `None`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let server = test_support::EtcdServer::start_with_auth("pw", Some(Duration::from_secs(2)));
    /// assert_eq!(test_support::EtcdServer::ROOT_USER, "root");
    /// # drop(server);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start), and when etcd refuses to enable authentication.
    pub fn start_with_auth(root_password: &str, token_ttl: Option<Duration>) -> EtcdServer {
        let extra = token_ttl
            .map(|ttl| vec![format!("--auth-token-ttl={}", ttl.as_secs().max(1))])
            .unwrap_or_default();
        let server = Self::start_inner(etcd_binary(), None, extra);
        let user = format!(
            r#"{{"name":"{}","password":"{root_password}"}}"#,
            Self::ROOT_USER
        );
        let grant = format!(r#"{{"user":"{}","role":"root"}}"#, Self::ROOT_USER);
        for (path, body) in [
            ("/v3/auth/user/add", user.as_str()),
            ("/v3/auth/user/grant", grant.as_str()),
            ("/v3/auth/enable", "{}"),
        ] {
            let response = http_request(server.port(), "POST", path, body).unwrap_or_default();
            assert!(
                answered_ok(&response),
                "etcd refused {path} while enabling authentication: {response}\n{}",
                server.member.log_tail()
            );
        }
        server
    }

    /// Like [`start`](Self::start), with a backend space quota of `bytes`
    /// (`--quota-backend-bytes`; etcd's default is 2 GiB): once the database passes it,
    /// etcd raises its `NOSPACE` alarm and refuses every put and lease grant until the
    /// alarm is disarmed.
    pub fn start_with_quota(bytes: u64) -> EtcdServer {
        let quota = vec![format!("--quota-backend-bytes={bytes}")];
        Self::start_inner(etcd_binary(), None, quota)
    }

    /// The user [`start_with_auth`](Self::start_with_auth) creates.
    pub const ROOT_USER: &'static str = "root";

    /// Like [`start`](Self::start), and also serves HTTPS on a second port
    /// ([`tls_endpoint`](Self::tls_endpoint)) with the given PEM certificate and key.
    pub fn start_with_tls(cert_pem: &Path, key_pem: &Path) -> EtcdServer {
        Self::start_inner(
            etcd_binary(),
            Some((cert_pem.to_owned(), key_pem.to_owned(), None)),
            Vec::new(),
        )
    }

    /// Like [`start_with_tls`](Self::start_with_tls), and the HTTPS port accepts only
    /// clients presenting a certificate signed by `client_ca_pem` (`--client-cert-auth`).
    pub fn start_with_tls_client_auth(
        cert_pem: &Path,
        key_pem: &Path,
        client_ca_pem: &Path,
    ) -> EtcdServer {
        Self::start_inner(
            etcd_binary(),
            Some((
                cert_pem.to_owned(),
                key_pem.to_owned(),
                Some(client_ca_pem.to_owned()),
            )),
            Vec::new(),
        )
    }

    /// The HTTPS client endpoint `127.0.0.1:PORT` of a server started with TLS.
    pub fn tls_endpoint(&self) -> Option<String> {
        self.member
            .tls
            .as_ref()
            .map(|(port, ..)| format!("127.0.0.1:{port}"))
    }

    fn start_inner(
        binary: PathBuf,
        tls: Option<(PathBuf, PathBuf, Option<PathBuf>)>,
        extra_args: Vec<String>,
    ) -> EtcdServer {
        process::start_with_retries("etcd", || {
            let ports = free_ports(3);
            let (client_port, peer_port) = (ports[0], ports[1]);
            let initial_cluster = format!("default={}", loopback_url(peer_port));
            let mut member = Member::new(
                &binary,
                "default",
                client_port,
                peer_port,
                &initial_cluster,
                &unique_token(),
            );
            member.tls = tls
                .clone()
                .map(|(cert, key, client_ca)| (ports[2], cert, key, client_ca));
            member.extra_args = extra_args.clone();
            member.spawn();
            member
                .wait_ready(Instant::now() + SERVER_READY_TIMEOUT)
                .map(|()| EtcdServer { member })
        })
    }

    /// The client endpoint as `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.member.endpoint()
    }

    /// The client URL as `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        loopback_url(self.member.client_port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.member.client_port
    }

    /// The peer (raft) port.
    pub fn peer_port(&self) -> u16 {
        self.member.peer_port
    }

    /// The data directory; it survives [`EtcdServer::kill`] and is removed on drop.
    pub fn data_dir(&self) -> PathBuf {
        self.member.data_dir()
    }

    /// The file etcd's output goes to (appended to across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.member.log_path()
    }

    /// Everything etcd has logged so far, for printing when a test fails.
    pub fn log_contents(&self) -> String {
        self.member.log_contents()
    }

    /// The process id, or `None` after [`EtcdServer::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.member.pid()
    }

    /// Whether the process is alive.
    pub fn is_running(&mut self) -> bool {
        self.member.is_running()
    }

    /// The value of the Prometheus metric `name` (an unlabelled gauge or counter) from
    /// etcd's `/metrics`, e.g. `etcd_debugging_mvcc_watch_stream_total`; `None` if etcd
    /// does not answer or has no such metric.
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric(self.port(), name)
    }

    /// Compacts the key space to the newest revision (physically): a watch from an
    /// older revision is refused as compacted.
    ///
    /// # Panics
    ///
    /// Panics if etcd does not answer or refuses.
    pub fn compact_to_head(&self) {
        let range = http_request(self.port(), "POST", "/v3/kv/range", r#"{"key":"AA=="}"#)
            .unwrap_or_default();
        let revision: u64 = range
            .split("\"revision\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("etcd gave no revision: {range}"));
        let body = format!(r#"{{"revision":"{revision}","physical":true}}"#);
        let response =
            http_request(self.port(), "POST", "/v3/kv/compaction", &body).unwrap_or_default();
        assert!(
            answered_ok(&response),
            "etcd refused to compact to {revision}: {response}"
        );
    }

    /// SIGKILLs the process and reaps it, keeping the data directory and ports for
    /// [`EtcdServer::restart`]. Does nothing if it is not running.
    pub fn kill(&mut self) {
        self.member.kill();
    }

    /// Starts etcd again on the same ports and data directory and waits until it is
    /// healthy. A running process is killed first.
    ///
    /// # Panics
    ///
    /// Panics if etcd does not become healthy (for example because another process took
    /// one of its ports meanwhile); the message includes the end of etcd's log.
    pub fn restart(&mut self) {
        self.member.respawn(SERVER_READY_TIMEOUT);
    }
}
