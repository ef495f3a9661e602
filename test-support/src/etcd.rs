//! Private etcd processes: a single server ([`EtcdServer`]) and a small cluster
//! ([`EtcdCluster`]).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::binary::etcd_binary;
use crate::ports::free_ports;
use crate::process::{self, StartFailure};

/// How long a single server may take to become healthy.
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole cluster may take to become healthy.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between two readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// Connect timeout of one readiness probe.
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_millis(200);
/// Read / write timeout of one readiness probe. Before etcd is ready its listener accepts
/// connections but does not answer, so this bounds each probe.
const PROBE_IO_TIMEOUT: Duration = Duration::from_millis(500);
/// Largest probe response read.
const PROBE_MAX_RESPONSE: u64 = 64 * 1024;

/// Distinguishes the clusters started by this process.
static CLUSTER_COUNTER: AtomicU64 = AtomicU64::new(0);

fn loopback_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn unique_token() -> String {
    format!(
        "test-support-{}-{}",
        std::process::id(),
        CLUSTER_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// One etcd process with its ports, data directory and log file.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    initial_cluster: String,
    token: String,
    binary: PathBuf,
    dir: TempDir,
    child: Option<Child>,
    /// An extra HTTPS client listener: port, certificate and key files.
    /// HTTPS port, certificate, key, and the CA client certificates must come from
    /// (`--client-cert-auth`) if any.
    tls: Option<(u16, PathBuf, PathBuf, Option<PathBuf>)>,
    /// More flags, kept across restarts (e.g. `--auth-token-ttl=2`).
    extra_args: Vec<String>,
}

impl Member {
    fn new(
        binary: &Path,
        name: &str,
        client_port: u16,
        peer_port: u16,
        initial_cluster: &str,
        token: &str,
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("etcd-test-")
            .tempdir()
            .unwrap_or_else(|err| panic!("cannot create a temporary directory for etcd: {err}"));
        Self {
            name: name.to_owned(),
            client_port,
            peer_port,
            initial_cluster: initial_cluster.to_owned(),
            token: token.to_owned(),
            binary: binary.to_owned(),
            dir,
            child: None,
            tls: None,
            extra_args: Vec::new(),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    fn args(&self) -> Vec<String> {
        let client_url = loopback_url(self.client_port);
        let peer_url = loopback_url(self.peer_port);
        // With TLS, etcd also serves HTTPS on a second port; the plain port stays for
        // the readiness check.
        let (listen_urls, tls_args) = match &self.tls {
            None => (client_url.clone(), Vec::new()),
            Some((port, cert, key, client_ca)) => {
                let mut args = vec![
                    format!("--cert-file={}", cert.display()),
                    format!("--key-file={}", key.display()),
                ];
                if let Some(ca) = client_ca {
                    args.push("--client-cert-auth".to_owned());
                    args.push(format!("--trusted-ca-file={}", ca.display()));
                }
                (format!("{client_url},https://127.0.0.1:{port}"), args)
            }
        };
        let mut args = vec![
            format!("--name={}", self.name),
            format!("--data-dir={}", self.data_dir().display()),
            format!("--listen-client-urls={listen_urls}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster={}", self.initial_cluster),
            format!("--initial-cluster-token={}", self.token),
            "--initial-cluster-state=new".to_owned(),
            "--logger=zap".to_owned(),
            "--log-outputs=stderr".to_owned(),
        ];
        args.extend(tls_args);
        args.extend(self.extra_args.iter().cloned());
        args
    }

    fn command_line(&self) -> String {
        let mut line = self.binary.display().to_string();
        for arg in self.args() {
            line.push(' ');
            line.push_str(&arg);
        }
        line
    }

    /// Starts the process (appending to the log file); does not wait for readiness.
    fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "etcd member {} already running",
            self.name
        );
        let (stdout, stderr) = process::log_output(&self.log_path(), &self.command_line());
        let mut command = Command::new(&self.binary);
        command
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        // etcd reads ETCD_* variables as flags; keep the caller's environment out.
        process::remove_env_prefixed(&mut command, "ETCD_");
        // etcd 3.4 refuses to run on arm64 unless told it is fine.
        if std::env::consts::ARCH == "aarch64" {
            command.env("ETCD_UNSUPPORTED_ARCH", "arm64");
        }
        let child = command.spawn().unwrap_or_else(|err| {
            panic!(
                "cannot start {}: {err}\n{}",
                self.binary.display(),
                crate::ETCD_INSTALL_HINT
            )
        });
        tracing::debug!(
            name = %self.name,
            pid = child.id(),
            client_port = self.client_port,
            peer_port = self.peer_port,
            "started etcd"
        );
        self.child = Some(child);
    }

    /// Polls `/health` on the client port until etcd reports healthy, the process exits,
    /// or `deadline` passes.
    fn wait_ready(&mut self, deadline: Instant) -> Result<(), StartFailure> {
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err(self.failure("etcd is not running".to_owned()));
            };
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Err(self.failure(format!("etcd exited during startup: {status}")));
                }
                Ok(None) => {}
                Err(err) => return Err(self.failure(format!("cannot poll etcd: {err}"))),
            }
            if is_healthy(self.client_port) {
                tracing::debug!(name = %self.name, port = self.client_port, "etcd is healthy");
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.failure("etcd did not become healthy in time".to_owned()));
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }

    fn failure(&self, reason: String) -> StartFailure {
        StartFailure {
            port_conflict: process::port_taken(&self.log_path()),
            message: self.start_failure_message(&reason),
        }
    }

    fn start_failure_message(&self, reason: &str) -> String {
        format!(
            "etcd member {} (client 127.0.0.1:{}, peer 127.0.0.1:{}) failed to start: {}\n\
             command: {}\n--- last part of {} ---\n{}",
            self.name,
            self.client_port,
            self.peer_port,
            reason,
            self.command_line(),
            self.log_path().display(),
            self.log_tail(),
        )
    }

    fn log_contents(&self) -> String {
        process::read_log(&self.log_path())
    }

    fn log_tail(&self) -> String {
        process::log_tail(&self.log_path())
    }

    fn is_running(&mut self) -> bool {
        process::is_running(&mut self.child)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process and starts it again on the same ports and data directory,
    /// waiting until it is healthy. A port of ours taken meanwhile by another process's
    /// outgoing connection (the kernel hands freed ports out as ephemeral ones) is
    /// waited for, for up to 5 s, since the ports cannot change.
    ///
    /// # Panics
    ///
    /// Panics if etcd does not become healthy; the message includes its log's end.
    fn respawn(&mut self, ready_within: Duration) {
        let conflicts_until = Instant::now() + Duration::from_secs(5);
        loop {
            self.kill();
            self.spawn();
            match self.wait_ready(Instant::now() + ready_within) {
                Ok(()) => return,
                Err(failure) if failure.port_conflict && Instant::now() < conflicts_until => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(failure) => panic!("{}", failure.message),
            }
        }
    }

    /// SIGKILLs and reaps the process; a no-op when it is not running.
    fn kill(&mut self) {
        process::kill(&mut self.child, &format!("etcd {}", self.name));
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            tracing::warn!(
                name = %self.name,
                log = %self.log_tail(),
                "dropping etcd during a panic; last part of its log"
            );
        }
        self.kill();
    }
}

/// Asks etcd's HTTP `/health` endpoint on the loopback client port whether it is healthy.
fn is_healthy(port: u16) -> bool {
    http_request(port, "GET", "/health", "")
        .is_some_and(|response| response.contains("\"health\":\"true\""))
}

/// One HTTP/1.0 request to etcd's loopback client port (its `/health` endpoint or its
/// JSON gateway under `/v3/`); the whole response, status line included, or `None` when
/// etcd could not be reached. Bounded by the probe timeouts. HTTP/1.0, so that the
/// body is never chunked: a chunk boundary inside a metric line or a JSON field made a
/// reading fail now and then (the scale bench's watcher count read `NaN`).
fn http_request(port: u16, method: &str, path: &str, body: &str) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_CONNECT_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_IO_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(PROBE_IO_TIMEOUT)).ok()?;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    // A timeout ends the read too; whatever arrived is judged by the caller.
    let _ = stream.take(PROBE_MAX_RESPONSE).read_to_end(&mut response);
    Some(String::from_utf8_lossy(&response).into_owned())
}

/// True if `response` (from [`http_request`]) has status 200, whatever HTTP version
/// etcd answers with (it answers an HTTP/1.0 request as HTTP/1.0).
fn answered_ok(response: &str) -> bool {
    let mut status_line = response.split_whitespace();
    status_line.next().is_some_and(|v| v.starts_with("HTTP/")) && status_line.next() == Some("200")
}

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
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port()));
        let mut stream = TcpStream::connect_timeout(&addr, PROBE_CONNECT_TIMEOUT).ok()?;
        stream.set_read_timeout(Some(PROBE_IO_TIMEOUT)).ok()?;
        let request = format!(
            "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
            self.port()
        );
        stream.write_all(request.as_bytes()).ok()?;
        let mut response = Vec::new();
        let _ = stream.take(16 << 20).read_to_end(&mut response);
        String::from_utf8_lossy(&response)
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
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

/// A private multi-member etcd cluster on free loopback ports.
///
/// Members are named `m0`, `m1`, …; each has its own temporary data directory and log
/// file. Dropping the handle SIGKILLs and reaps every member and removes the
/// directories. All methods are blocking (bounded by a few seconds).
///
/// ```
/// let mut cluster = test_support::EtcdCluster::start(3);
/// assert_eq!(cluster.endpoints().len(), 3);
/// cluster.kill_member(0);
/// assert!(!cluster.is_member_running(0));
/// ```
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
}

impl EtcdCluster {
    /// Starts a cluster of `members` etcd processes and waits until every member reports
    /// healthy (at most about 20 s).
    ///
    /// # Panics
    ///
    /// Panics if `members` is 0, if `etcd` is not installed (with the command that
    /// installs it), or if a member does not become healthy; the message includes the
    /// end of that member's log.
    pub fn start(members: usize) -> EtcdCluster {
        assert!(members > 0, "an etcd cluster needs at least one member");
        let binary = etcd_binary();
        process::start_with_retries("etcd", || {
            let ports = free_ports(2 * members);
            let token = unique_token();
            let names: Vec<String> = (0..members).map(|i| format!("m{i}")).collect();
            let initial_cluster = names
                .iter()
                .enumerate()
                .map(|(i, name)| format!("{name}={}", loopback_url(ports[2 * i + 1])))
                .collect::<Vec<_>>()
                .join(",");
            let mut cluster = EtcdCluster {
                members: names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| {
                        Member::new(
                            &binary,
                            name,
                            ports[2 * i],
                            ports[2 * i + 1],
                            &initial_cluster,
                            &token,
                        )
                    })
                    .collect(),
            };
            for member in &mut cluster.members {
                member.spawn();
            }
            let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
            for member in &mut cluster.members {
                member.wait_ready(deadline)?;
            }
            Ok(cluster)
        })
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always `false`: a cluster has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The client endpoints of all members as `127.0.0.1:PORT`, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// The client URLs of all members as `http://127.0.0.1:PORT`, in member order.
    pub fn urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|member| loopback_url(member.client_port))
            .collect()
    }

    /// The client endpoint of member `i` as `127.0.0.1:PORT`.
    ///
    /// # Panics
    ///
    /// Panics if `i` is out of range.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].endpoint()
    }

    /// Whether member `i`'s process is alive.
    ///
    /// # Panics
    ///
    /// Panics if `i` is out of range.
    pub fn is_member_running(&mut self, i: usize) -> bool {
        self.members[i].is_running()
    }

    /// Everything member `i` has logged so far.
    ///
    /// # Panics
    ///
    /// Panics if `i` is out of range.
    pub fn member_log_contents(&self, i: usize) -> String {
        self.members[i].log_contents()
    }

    /// SIGKILLs and reaps member `i`, keeping its data directory and ports. Does nothing
    /// if it is not running.
    ///
    /// # Panics
    ///
    /// Panics if `i` is out of range.
    pub fn kill_member(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Starts member `i` again on the same ports and data directory and waits until it
    /// is healthy (it needs a quorum of running members for that). A running process is
    /// killed first.
    ///
    /// # Panics
    ///
    /// Panics if `i` is out of range or the member does not become healthy in time.
    pub fn restart_member(&mut self, i: usize) {
        self.members[i].respawn(CLUSTER_READY_TIMEOUT);
    }
}

#[cfg(test)]
mod tests {
    use super::answered_ok;

    #[test]
    fn a_200_counts_in_either_http_version() {
        assert!(answered_ok(
            "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}"
        ));
        assert!(answered_ok("HTTP/1.1 200 OK\r\n\r\n"));
        assert!(!answered_ok("HTTP/1.0 400 Bad Request\r\n\r\n"));
        assert!(!answered_ok(""));
        assert!(!answered_ok("200 HTTP/1.0"));
    }
}
