//! A private dtm coordinator: [`DtmServer`].
//!
//! The coordinator is the real dtm v1.19.0, built from its Go module into
//! `interop/bin/dtm` by `bash interop/build.sh`. Each server gets a generated
//! `conf.yml` in its own temporary directory (which is also its working directory, so
//! the boltdb store `./dtm.bolt` lands there), free ports for its HTTP and gRPC
//! listeners, and the `MicroService` section the test asks for: at start dtm calls
//! `dtmdriver.Use(Driver)` and `RegisterService(Target, EndPoint)`, failing fatally
//! on either error.
//!
//! dtm listens on `:PORT` (every interface; v1.19.0 has no bind-address setting) for
//! HTTP and gRPC only. Its `JsonRpcPort` setting opens nothing (JSON-RPC is routed on
//! the HTTP port), and the metrics are served on the HTTP port too; the config still
//! sets `JsonRpcPort` to a free port so that no default port appears anywhere.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::ports::free_ports;
use crate::process;

/// The message [`dtm_binary`] panics with when the coordinator is not built.
pub const DTM_BUILD_HINT: &str = "interop/bin/dtm not found: build the dtm coordinator with \
    `bash interop/build.sh` (needs Go) from the workspace root; \
    `bash scripts/test.sh` builds it automatically";

/// How long dtm may take until its gRPC port accepts connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// Connect timeout of one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// The path of the dtm coordinator built by `bash interop/build.sh`.
///
/// # Panics
///
/// Panics with [`DTM_BUILD_HINT`] if it has not been built.
pub fn dtm_binary() -> PathBuf {
    // Only the pinned build: another `dtm` on PATH may be another version.
    let built = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../interop/bin/dtm"));
    assert!(built.is_file(), "{DTM_BUILD_HINT}");
    built
}

/// dtm's `EndPoint` setting: what it registers for itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DtmEndpoint {
    /// Its own gRPC address, in the form the driver expects: `grpc://127.0.0.1:PORT`
    /// for `dtm-driver-kratos` (kratos endpoints carry a scheme), `127.0.0.1:PORT`
    /// otherwise.
    Auto,
    /// Exactly this string.
    Given(String),
}

/// A private dtm coordinator on free ports with a boltdb store in a temporary
/// directory. Dropping the handle SIGKILLs and reaps the process.
///
/// ```
/// use test_support::{DtmEndpoint, DtmServer, EtcdServer};
/// let etcd = EtcdServer::start();
/// let target = format!("etcd://{}/dtmservice", etcd.endpoint());
/// let dtm = DtmServer::start("dtm-driver-gozero", &target, DtmEndpoint::Auto);
/// assert_eq!(dtm.endpoint(), dtm.grpc_addr());
/// assert!(dtm.config().contains("Driver: 'dtm-driver-gozero'"));
/// ```
#[derive(Debug)]
pub struct DtmServer {
    binary: PathBuf,
    http_port: u16,
    grpc_port: u16,
    endpoint: String,
    config: String,
    dir: TempDir,
    child: Option<Child>,
}

impl DtmServer {
    /// Starts dtm with `MicroService: {Driver: driver, Target: target, EndPoint:
    /// endpoint}` and waits (bounded) until its gRPC port accepts connections.
    ///
    /// # Panics
    ///
    /// Panics if dtm is not built (with the command that builds it), exits during
    /// startup (e.g. its driver refused the target) or does not listen in time; the
    /// message includes the end of its log.
    pub fn start(driver: &str, target: &str, endpoint: DtmEndpoint) -> Self {
        Self::start_with_config(driver, target, endpoint, "")
    }

    /// [`start`](Self::start) with `extra` appended to the generated `conf.yml`: more
    /// top-level settings, e.g. `"TransCronInterval: 1\n"`. The generated part sets
    /// `Store`, `HttpPort`, `GrpcPort`, `JsonRpcPort`, `LogLevel` and `MicroService`.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub fn start_with_config(
        driver: &str,
        target: &str,
        endpoint: DtmEndpoint,
        extra: &str,
    ) -> Self {
        let binary = dtm_binary();
        process::start_with_retries("dtm", || {
            let [http_port, grpc_port, jsonrpc_port] = free_ports(3)[..] else {
                unreachable!("free_ports returns as many ports as asked")
            };
            let endpoint = match &endpoint {
                DtmEndpoint::Given(given) => given.clone(),
                DtmEndpoint::Auto if driver == "dtm-driver-kratos" => {
                    format!("grpc://127.0.0.1:{grpc_port}")
                }
                DtmEndpoint::Auto => format!("127.0.0.1:{grpc_port}"),
            };
            let config = format!(
                "Store:\n  Driver: 'boltdb'\n\
                 HttpPort: {http_port}\nGrpcPort: {grpc_port}\nJsonRpcPort: {jsonrpc_port}\n\
                 LogLevel: 'info'\n\
                 MicroService:\n  Driver: '{driver}'\n  Target: '{target}'\n  EndPoint: '{endpoint}'\n\
                 {extra}"
            );
            let dir = crate::process::temp_dir("dtm-test-");
            let mut server = Self {
                binary: binary.clone(),
                http_port,
                grpc_port,
                endpoint,
                config,
                dir,
                child: None,
            };
            server.spawn();
            server.wait_ready().map(|()| server)
        })
    }

    /// The gRPC API address, `127.0.0.1:PORT`.
    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// The HTTP API address, `127.0.0.1:PORT` (`/api/dtmsvr/...`).
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// The `EndPoint` dtm registered for itself.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The generated `conf.yml`.
    pub fn config(&self) -> &str {
        &self.config
    }

    /// Whether the process is alive.
    pub fn is_running(&mut self) -> bool {
        process::is_running(&mut self.child)
    }

    /// Everything dtm has logged so far (stdout and stderr).
    pub fn log_contents(&self) -> String {
        process::read_log(&self.log_path())
    }

    /// SIGKILLs and reaps dtm. Does nothing if it is not running.
    pub fn kill(&mut self) {
        process::kill(&mut self.child, "dtm");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("dtm.log")
    }

    fn spawn(&mut self) {
        let config_path = self.dir.path().join("conf.yml");
        std::fs::write(&config_path, &self.config)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config_path.display()));
        let mut command = process::logged_command(
            &self.binary,
            ["-c", "conf.yml"],
            &self.log_path(),
            &format!("{} -c conf.yml\n{}", self.binary.display(), self.config),
        );
        // dtm reads every setting from the environment too (MICRO_SERVICE_DRIVER,
        // STORE_DRIVER, ...): start it with none of the caller's.
        command.current_dir(self.dir.path()).env_clear();
        let child = process::spawn(command, &self.binary, DTM_BUILD_HINT);
        tracing::debug!(pid = child.id(), grpc = self.grpc_port, "started dtm");
        self.child = Some(child);
    }

    /// Polls until the gRPC and HTTP ports accept connections.
    fn wait_ready(&mut self) -> Result<(), process::StartFailure> {
        self.poll_ready().map_err(|reason| process::StartFailure {
            message: self.failure_message(&reason),
            port_conflict: process::port_taken(&self.log_path()),
        })
    }

    fn poll_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let accepts = |port: u16| {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).is_ok()
        };
        loop {
            if !self.is_running() {
                return Err("dtm exited during startup".into());
            }
            if accepts(self.grpc_port) && accepts(self.http_port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "dtm's gRPC port {} and HTTP port {} did not both accept within \
                     {READY_TIMEOUT:?}",
                    self.grpc_port, self.http_port
                ));
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }

    fn failure_message(&self, reason: &str) -> String {
        format!(
            "dtm (grpc 127.0.0.1:{}) failed to start: {reason}\n\
             --- last part of its log ---\n{}",
            self.grpc_port,
            process::log_tail(&self.log_path())
        )
    }
}

impl Drop for DtmServer {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            tracing::warn!(log = %self.log_contents(), "dropping dtm during a panic; its log");
        }
        self.kill();
    }
}
