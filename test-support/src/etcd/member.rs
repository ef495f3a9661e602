//! One etcd process ([`Member`]) and the HTTP probes that talk to its loopback client port.
//!
//! A [`Member`] owns its ports, a temporary data directory and a log file in it; it can be
//! spawned, waited for until `/health` says healthy, killed and respawned on the same ports
//! and data directory, and it is SIGKILLed and reaped when dropped. [`http_request`] and
//! [`answered_ok`] are bounded by the probe timeouts, so a silent etcd never hangs a test.
//!
//! [`EtcdServer`](super::EtcdServer) and [`EtcdCluster`](super::EtcdCluster) are built
//! from members; keeping the process handling here lets both share it.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{self, StartFailure};

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

pub(super) fn loopback_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

pub(super) fn unique_token() -> String {
    format!(
        "test-support-{}-{}",
        std::process::id(),
        CLUSTER_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// One etcd process with its ports, data directory and log file.
#[derive(Debug)]
pub(super) struct Member {
    name: String,
    pub(super) client_port: u16,
    pub(super) peer_port: u16,
    /// The port peers dial, when it is not `peer_port` (a proxy in between).
    pub(super) advertised_peer_port: Option<u16>,
    initial_cluster: String,
    token: String,
    binary: PathBuf,
    dir: TempDir,
    child: Option<Child>,
    /// An extra HTTPS client listener: port, certificate and key files.
    /// HTTPS port, certificate, key, and the CA client certificates must come from
    /// (`--client-cert-auth`) if any.
    pub(super) tls: Option<(u16, PathBuf, PathBuf, Option<PathBuf>)>,
    /// More flags, kept across restarts (e.g. `--auth-token-ttl=2`).
    pub(super) extra_args: Vec<String>,
}

impl Member {
    pub(super) fn new(
        binary: &Path,
        name: &str,
        client_port: u16,
        peer_port: u16,
        initial_cluster: &str,
        token: &str,
    ) -> Self {
        let dir = crate::process::temp_dir("etcd-test-");
        Self {
            name: name.to_owned(),
            client_port,
            peer_port,
            advertised_peer_port: None,
            initial_cluster: initial_cluster.to_owned(),
            token: token.to_owned(),
            binary: binary.to_owned(),
            dir,
            child: None,
            tls: None,
            extra_args: Vec::new(),
        }
    }

    pub(super) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub(super) fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    pub(super) fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    fn args(&self) -> Vec<String> {
        let client_url = loopback_url(self.client_port);
        let peer_url = loopback_url(self.peer_port);
        let advertised_peer_url = loopback_url(self.advertised_peer_port.unwrap_or(self.peer_port));
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
            format!("--initial-advertise-peer-urls={advertised_peer_url}"),
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
    pub(super) fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "etcd member {} already running",
            self.name
        );
        let mut command = process::logged_command(
            &self.binary,
            self.args(),
            &self.log_path(),
            &self.command_line(),
        );
        // etcd reads ETCD_* variables as flags; keep the caller's environment out.
        process::remove_env_prefixed(&mut command, "ETCD_");
        // etcd 3.4 refuses to run on arm64 unless told it is fine.
        if std::env::consts::ARCH == "aarch64" {
            command.env("ETCD_UNSUPPORTED_ARCH", "arm64");
        }
        let child = process::spawn(command, &self.binary, crate::ETCD_INSTALL_HINT);
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
    pub(super) fn wait_ready(&mut self, deadline: Instant) -> Result<(), StartFailure> {
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

    pub(super) fn log_contents(&self) -> String {
        process::read_log(&self.log_path())
    }

    pub(super) fn log_tail(&self) -> String {
        process::log_tail(&self.log_path())
    }

    pub(super) fn is_running(&mut self) -> bool {
        process::is_running(&mut self.child)
    }

    pub(super) fn pid(&self) -> Option<u32> {
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
    pub(super) fn respawn(&mut self, ready_within: Duration) {
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
    pub(super) fn kill(&mut self) {
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
pub(super) fn http_request(port: u16, method: &str, path: &str, body: &str) -> Option<String> {
    exchange(port, method, path, body, PROBE_MAX_RESPONSE)
}

/// [`http_request`], reading at most `max` bytes of the response.
fn exchange(port: u16, method: &str, path: &str, body: &str, max: u64) -> Option<String> {
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
    let _ = stream.take(max).read_to_end(&mut response);
    Some(String::from_utf8_lossy(&response).into_owned())
}

/// The value of the Prometheus metric `name` (an unlabelled gauge or counter) from the
/// `/metrics` of the etcd whose client port is `port`; `None` if etcd does not answer or
/// has no such metric.
pub(super) fn metric(port: u16, name: &str) -> Option<f64> {
    metrics(port)?
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The sum of the Prometheus metric `name` over its series whose labels include every
/// one of `labels` (e.g. `grpc_server_handled_total` of one method, over its codes); `None`
/// if etcd does not answer or has no such series.
pub(super) fn metric_sum(port: u16, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    sum_series(&metrics(port)?, name, labels)
}

/// [`metric_sum`] of a `/metrics` text.
fn sum_series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    let values: Vec<f64> = text
        .lines()
        .filter_map(|line| {
            let (series, value) = line
                .strip_prefix(name)?
                .strip_prefix('{')?
                .rsplit_once(' ')?;
            let set = series.strip_suffix('}')?;
            let has = |w: &String| set.split(',').any(|pair| pair == w);
            wanted.iter().all(has).then(|| value.trim().parse().ok())?
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The text of `/metrics` of the etcd whose client port is `port` (up to 16 MiB: a
/// member's metrics pass the probes' 64 KiB).
fn metrics(port: u16) -> Option<String> {
    exchange(port, "GET", "/metrics", "", 16 << 20)
}

/// True if `response` (from [`http_request`]) has status 200, whatever HTTP version
/// etcd answers with (it answers an HTTP/1.0 request as HTTP/1.0).
pub(super) fn answered_ok(response: &str) -> bool {
    let mut status_line = response.split_whitespace();
    status_line.next().is_some_and(|v| v.starts_with("HTTP/")) && status_line.next() == Some("200")
}

#[cfg(test)]
mod tests {
    use super::{answered_ok, sum_series};

    #[test]
    fn series_are_summed_over_the_labels_not_asked_for() {
        let text = "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Watch\"} 2\n\
                    grpc_server_handled_total{grpc_code=\"Unavailable\",grpc_method=\"Watch\"} 3\n\
                    grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Range\"} 40\n\
                    grpc_server_handled_totals{grpc_method=\"Watch\"} 100\n";
        let watch = [("grpc_method", "Watch")];
        assert_eq!(
            sum_series(text, "grpc_server_handled_total", &watch),
            Some(5.0)
        );
        let ok = [("grpc_code", "OK")];
        assert_eq!(
            sum_series(text, "grpc_server_handled_total", &ok),
            Some(42.0)
        );
        assert_eq!(sum_series(text, "grpc_server_started_total", &watch), None);
    }

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
