//! One private consul agent: [`ConsulAgent`], in `-dev` mode (a single server that keeps
//! everything in memory, so a restarted agent has lost every registration, which is what
//! fault tests want), or as a server or client of a [`ConsulCluster`](super::ConsulCluster).

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::http::{PROBE_TIMEOUT, exchange, probe};
use crate::ports::free_ports;
use crate::process;

/// The message [`consul_agent_binary`] panics with when the agent is not built.
pub const CONSUL_BUILD_HINT: &str = "interop/bin/consul-agent not found: build it with \
    `bash interop/build.sh` (needs Go) from the workspace root; \
    `bash scripts/test.sh` builds it automatically";

/// How long an agent may take to elect itself and answer.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between two readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(30);

/// The path of the consul agent: `consul-agent` on `PATH`, else the one built by
/// `bash interop/build.sh` into `interop/bin/`.
///
/// # Panics
///
/// Panics with [`CONSUL_BUILD_HINT`] if it has not been built.
pub fn consul_agent_binary() -> PathBuf {
    let built = concat!(env!("CARGO_MANIFEST_DIR"), "/../interop/bin/consul-agent");
    crate::find_binary("consul-agent", &[built]).unwrap_or_else(|| panic!("{CONSUL_BUILD_HINT}"))
}

/// A private consul agent (`-dev`, loopback only) on free ports.
///
/// Dropping the handle SIGKILLs and reaps the process. All methods block for at most a
/// few seconds and can be called from async tests.
///
/// ```
/// let mut agent = test_support::ConsulAgent::start();
/// let addr = agent.http_addr();
/// agent.kill();
/// assert!(!agent.is_running());
/// agent.restart();
/// assert_eq!(agent.http_addr(), addr);
/// ```
#[derive(Debug)]
pub struct ConsulAgent {
    binary: PathBuf,
    role: Role,
    /// http, server, serf lan, serf wan.
    ports: [u16; 4],
    node: String,
    acl_token: Option<String>,
    /// The HTTPS port of an agent started with [`ConsulAgent::start_with_tls`].
    https_port: Option<u16>,
    /// More configuration, HCL (e.g. `limits { ... }`).
    hcl: Option<String>,
    dir: TempDir,
    child: Option<Child>,
}

/// How an agent runs.
#[derive(Debug, Clone)]
pub(super) enum Role {
    /// `-dev`: a single server that keeps everything in memory.
    Dev,
    /// A server of a cluster of `expect` servers, joining the agents whose serf LAN
    /// ports are `join`; it keeps its state in its directory, so it can be restarted.
    Server { expect: usize, join: Vec<u16> },
    /// A client agent joining the servers whose serf LAN ports are `join`.
    Client { join: Vec<u16> },
}

impl ConsulAgent {
    /// Starts an agent without ACLs and waits until it has a leader.
    ///
    /// # Panics
    ///
    /// Panics if the agent is not built (with the command that builds it) or does not
    /// become ready; the message includes the end of its log.
    pub fn start() -> Self {
        Self::start_inner(None, None, None)
    }

    /// [`start`](Self::start) with more agent configuration in HCL, e.g.
    /// `limits { http_max_conns_per_client = 10 }`.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start), and when the agent refuses the configuration.
    pub fn start_with_hcl(hcl: &str) -> Self {
        Self::start_inner(None, None, Some(hcl))
    }

    /// Starts an agent with ACLs enabled and a default policy of `deny`. `token` (a
    /// UUID) is both the initial management token and the agent's own token; requests
    /// without it are refused (writes) or see nothing (reads).
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub fn start_with_acl(token: &str) -> Self {
        Self::start_inner(Some(token.to_string()), None, None)
    }

    /// Starts an agent that also serves its HTTP API over HTTPS (see
    /// [`https_addr`](Self::https_addr)) with the server certificate `cert_pem` and its
    /// key `key_pem`, trusting `ca_pem` for client certificates. Client certificates are
    /// not required (`verify_incoming = false`). The plain HTTP port stays open.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub fn start_with_tls(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Self {
        Self::start_inner(None, Some((ca_pem, cert_pem, key_pem, false)), None)
    }

    /// [`start_with_tls`](Self::start_with_tls), but the HTTPS port requires a client
    /// certificate signed by `ca_pem` (`verify_incoming = true`).
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub fn start_with_tls_client_auth(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Self {
        Self::start_inner(None, Some((ca_pem, cert_pem, key_pem, true)), None)
    }

    fn start_inner(
        acl_token: Option<String>,
        tls: Option<(&str, &str, &str, bool)>,
        hcl: Option<&str>,
    ) -> Self {
        let binary = consul_agent_binary();
        process::start_with_retries("consul", || {
            let p = free_ports(5);
            let mut agent = Self::unstarted(&binary, Role::Dev, [p[0], p[1], p[2], p[3]]);
            agent.acl_token.clone_from(&acl_token);
            agent.https_port = tls.map(|_| p[4]);
            agent.hcl = hcl.map(str::to_string);
            if let Some((ca, cert, key, verify_incoming)) = tls {
                agent.write_tls_files(ca, cert, key, verify_incoming);
            }
            agent.spawn();
            agent.wait_ready().map(|()| agent)
        })
    }

    /// An agent not started yet, in `role`, on `ports` (http, server, serf lan, serf wan),
    /// with a fresh directory.
    pub(super) fn unstarted(binary: &std::path::Path, role: Role, ports: [u16; 4]) -> Self {
        let dir = crate::process::temp_dir("consul-test-");
        Self {
            binary: binary.to_owned(),
            role,
            ports,
            node: format!("test-{}", ports[0]),
            acl_token: None,
            https_port: None,
            hcl: None,
            dir,
            child: None,
        }
    }

    /// The HTTP API address, `127.0.0.1:PORT`.
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports[0])
    }

    /// The HTTP API port.
    pub fn http_port(&self) -> u16 {
        self.ports[0]
    }

    /// The server RPC port (the one `/v1/status/leader` names for a server).
    pub fn server_port(&self) -> u16 {
        self.ports[1]
    }

    /// The HTTPS API address `127.0.0.1:PORT` of an agent started with
    /// [`start_with_tls`](Self::start_with_tls), else `None`.
    pub fn https_addr(&self) -> Option<String> {
        self.https_port.map(|p| format!("127.0.0.1:{p}"))
    }

    /// The management token of an agent started with [`start_with_acl`](Self::start_with_acl).
    pub fn acl_token(&self) -> Option<&str> {
        self.acl_token.as_deref()
    }

    /// The process id, or `None` after [`kill`](Self::kill).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is alive.
    pub fn is_running(&mut self) -> bool {
        process::is_running(&mut self.child)
    }

    /// Everything the agent has logged so far (log level `warn`).
    pub fn log_contents(&self) -> String {
        process::read_log(&self.log_path())
    }

    /// SIGKILLs and reaps the agent, keeping its ports for [`restart`](Self::restart).
    /// Does nothing if it is not running.
    pub fn kill(&mut self) {
        process::kill(&mut self.child, "consul");
    }

    /// Starts the agent again on the same ports and waits until it is ready. Dev mode
    /// keeps nothing: the new agent has no registrations (a server of a
    /// [`ConsulCluster`](crate::ConsulCluster) keeps its state and rejoins). A running
    /// agent is killed first.
    ///
    /// # Panics
    ///
    /// Panics if the agent does not become ready (e.g. another process took one of its
    /// ports meanwhile); the message includes the end of its log.
    pub fn restart(&mut self) {
        self.kill();
        // The ports were just released; a moment's conflict is retried within the bound.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.spawn();
            match self.wait_ready() {
                Ok(()) => return,
                Err(failure) if failure.port_conflict && Instant::now() < deadline => {
                    self.kill();
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(failure) => panic!("{}", failure.message),
            }
        }
    }

    /// Sends one request to the agent's HTTP API (with the ACL token, if the agent has
    /// one) and returns the status code and body, for tests that check what is stored.
    ///
    /// # Panics
    ///
    /// Panics if the agent does not answer within 5 s.
    pub fn api(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        self.api_with_token(method, path, self.acl_token.as_deref(), body)
    }

    /// [`api`](Self::api) with an explicit token (`None` sends none).
    ///
    /// # Panics
    ///
    /// Panics if the agent does not answer within 5 s.
    pub fn api_with_token(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, String) {
        exchange(
            self.ports[0],
            method,
            path,
            token,
            body,
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| {
            panic!(
                "consul at {} did not answer {method} {path}",
                self.http_addr()
            )
        })
    }

    /// Sets (`verb` `"set"`) or deletes (`"delete"`) `services` (each a JSON object as
    /// consul's catalog takes it: `ID`, `Service`, `Address`, `Port`, `Tags`, `Meta`; for
    /// a delete `ID` and `Service` are enough) on `node`, through the transaction API in batches of
    /// 128 operations (consul's limit), creating the node with a set. `node` must not be
    /// the agent's own node, whose anti-entropy would remove what it did not register.
    /// Fast: 10,000 instances take about a second, one agent registration a call would
    /// take far longer.
    ///
    /// # Panics
    ///
    /// Panics if a transaction is refused, naming consul's answer.
    pub fn catalog_services(&self, node: &str, verb: &str, services: &[String]) {
        assert_ne!(node, self.node, "use a node the agent does not run");
        let node_op = (verb == "set").then(|| {
            format!(
                r#"{{"Node":{{"Verb":"set","Node":{{"Node":"{node}","Address":"127.0.0.1"}}}}}}"#
            )
        });
        for batch in services.chunks(128 - usize::from(node_op.is_some())) {
            let ops: Vec<String> = node_op
                .iter()
                .cloned()
                .chain(batch.iter().map(|service| {
                    format!(
                        r#"{{"Service":{{"Verb":"{verb}","Node":"{node}","Service":{service}}}}}"#
                    )
                }))
                .collect();
            let (code, body) = self.api("PUT", "/v1/txn", &format!("[{}]", ops.join(",")));
            assert_eq!(code, 200, "consul refused a catalog transaction: {body}");
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("consul.log")
    }

    /// Writes the PEM files and the `tls` config block the HTTPS port uses.
    fn write_tls_files(&self, ca: &str, cert: &str, key: &str, verify_incoming: bool) {
        let path = |name: &str| self.dir.path().join(name);
        for (name, pem) in [
            ("ca.pem", ca),
            ("server.pem", cert),
            ("server-key.pem", key),
        ] {
            std::fs::write(path(name), pem)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path(name).display()));
        }
        let config = format!(
            "tls {{ defaults {{ ca_file = {:?} cert_file = {:?} key_file = {:?} \
             verify_incoming = {verify_incoming} }} }}\n",
            path("ca.pem").display().to_string(),
            path("server.pem").display().to_string(),
            path("server-key.pem").display().to_string(),
        );
        std::fs::write(path("tls.hcl"), config)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path("tls.hcl").display()));
    }

    fn args(&self) -> Vec<String> {
        let [http, server, lan, wan] = self.ports;
        let mut args: Vec<String> = [
            "agent",
            "-bind",
            "127.0.0.1",
            "-client",
            "127.0.0.1",
            "-advertise",
            "127.0.0.1",
            "-dns-port",
            "-1",
            "-grpc-port",
            "-1",
            "-grpc-tls-port",
            "-1",
            "-log-level",
            "warn",
        ]
        .map(String::from)
        .into();
        for (flag, port) in [
            ("-http-port", http),
            ("-server-port", server),
            ("-serf-lan-port", lan),
            ("-serf-wan-port", wan),
        ] {
            args.push(flag.into());
            args.push(port.to_string());
        }
        args.push("-node".into());
        args.push(self.node.clone());
        let data_dir = format!("-data-dir={}", self.dir.path().join("data").display());
        // Agents start together, so a first join may find no one listening yet: try
        // again every half second (consul's default waits 30 s).
        let join = |args: &mut Vec<String>, ports: &[u16]| {
            args.extend(ports.iter().map(|p| format!("-retry-join=127.0.0.1:{p}")));
            args.push("-retry-interval=500ms".into());
        };
        match &self.role {
            Role::Dev => args.push("-dev".into()),
            Role::Server { expect, join: to } => {
                args.extend([
                    "-server".into(),
                    format!("-bootstrap-expect={expect}"),
                    data_dir,
                    // Dev mode's quick raft timings: an election in about a second.
                    "-hcl".into(),
                    "performance { raft_multiplier = 1 }".into(),
                ]);
                join(&mut args, to);
            }
            Role::Client { join: to } => {
                args.push(data_dir);
                join(&mut args, to);
            }
        }
        if let Some(https) = self.https_port {
            args.push("-hcl".into());
            args.push(format!("ports {{ https = {https} }}"));
            args.push("-config-file".into());
            args.push(self.dir.path().join("tls.hcl").display().to_string());
        }
        if let Some(hcl) = &self.hcl {
            args.push("-hcl".into());
            args.push(hcl.clone());
        }
        if let Some(token) = &self.acl_token {
            args.push("-hcl".into());
            args.push(format!(
                "acl {{ enabled = true default_policy = \"deny\" down_policy = \"extend-cache\" \
                 enable_token_persistence = false tokens {{ initial_management = \"{token}\" \
                 agent = \"{token}\" }} }}"
            ));
        }
        args
    }

    pub(super) fn spawn(&mut self) {
        let mut command = process::logged_command(
            &self.binary,
            self.args(),
            &self.log_path(),
            &format!("{} {}", self.binary.display(), self.args().join(" ")),
        );
        // consul reads CONSUL_* variables (address, token, ...); keep the caller's out.
        process::remove_env_prefixed(&mut command, "CONSUL_");
        let child = process::spawn(command, &self.binary, CONSUL_BUILD_HINT);
        tracing::debug!(pid = child.id(), http = self.ports[0], "started consul");
        self.child = Some(child);
    }

    /// Polls until the agent answers as ready: a known leader, and with ACLs the
    /// management token is accepted.
    pub(super) fn wait_ready(&mut self) -> Result<(), process::StartFailure> {
        self.poll_ready().map_err(|reason| process::StartFailure {
            message: self.failure_message(&reason),
            port_conflict: process::port_taken(&self.log_path()),
        })
    }

    fn poll_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if !self.is_running() {
                return Err("consul exited during startup".into());
            }
            let ready = match &self.acl_token {
                None => probe(self.ports[0], "/v1/status/leader", None)
                    .is_some_and(|(code, body)| code == 200 && body.trim().len() > 2),
                Some(token) => probe(self.ports[0], "/v1/acl/token/self", Some(token))
                    .is_some_and(|(code, _)| code == 200),
            };
            let https_up = self.https_port.is_none_or(|port| {
                TcpStream::connect_timeout(
                    &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                    PROBE_TIMEOUT,
                )
                .is_ok()
            });
            if ready && https_up {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "consul did not become ready within {READY_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }

    fn failure_message(&self, reason: &str) -> String {
        format!(
            "consul agent (http 127.0.0.1:{}) failed to start: {reason}\ncommand: {} {}\n\
             --- last part of its log ---\n{}",
            self.ports[0],
            self.binary.display(),
            self.args().join(" "),
            process::log_tail(&self.log_path())
        )
    }
}

impl Drop for ConsulAgent {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            tracing::warn!(log = %self.log_contents(), "dropping consul during a panic; its log");
        }
        self.kill();
    }
}
