//! In-process tonic echo servers on loopback, for balancer and driver tests.
//!
//! Each server answers `echo.Echo/Say` with its own name, so a test can count which
//! endpoint served a call. Its behaviour (delay, failure code) can change while it runs,
//! and it can be stopped and started again on the same port. A server started with
//! [`EchoServer::start_with_health`] also serves `grpc.health.v1.Health` (tonic-health)
//! on the same port, its overall status switchable with [`EchoServer::set_serving`].
//! Every server also serves `streams.Streams` (see [`crate::streams`]), and accepts
//! messages up to 16 MiB.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

/// Generated code of `proto/echo.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("echo");
}

use pb::echo_server::{Echo, EchoServer as EchoService};
pub use pb::{SayReply, SayRequest, echo_client::EchoClient};

/// How a server answers; change it at run time with [`EchoServer::set_behavior`].
#[derive(Clone, Debug, Default)]
pub struct Behavior {
    /// Sleep this long before answering.
    pub delay: Duration,
    /// Answer with this status code instead of a reply.
    pub fail: Option<tonic::Code>,
}

#[derive(Default)]
struct Shared {
    behavior: Mutex<Behavior>,
    calls: AtomicU64,
    last_metadata: Mutex<Vec<(String, String)>>,
}

struct Handler {
    name: String,
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl Echo for Handler {
    async fn say(
        &self,
        req: tonic::Request<SayRequest>,
    ) -> Result<tonic::Response<SayReply>, tonic::Status> {
        self.shared.calls.fetch_add(1, Ordering::Relaxed);
        let metadata = req
            .metadata()
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                    Some((k.to_string(), v.to_str().unwrap_or_default().to_string()))
                }
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            })
            .collect();
        *self
            .shared
            .last_metadata
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = metadata;
        let behavior = self
            .shared
            .behavior
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !behavior.delay.is_zero() {
            tokio::time::sleep(behavior.delay).await;
        }
        if let Some(code) = behavior.fail {
            return Err(tonic::Status::new(
                code,
                format!("{} fails on purpose", self.name),
            ));
        }
        Ok(tonic::Response::new(SayReply {
            message: req.into_inner().message,
            server: self.name.clone(),
        }))
    }
}

/// A running echo server. Stops when dropped.
pub struct EchoServer {
    name: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    health: Option<HealthReporter>,
    tls: Option<tonic::transport::ServerTlsConfig>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl EchoServer {
    /// Starts a server called `name` on a free loopback port.
    pub async fn start(name: &str) -> Self {
        let port = crate::free_port();
        Self::start_on(name, port).await
    }

    /// Starts a server called `name` on `port` (e.g. a port a test reserved earlier).
    pub async fn start_on(name: &str, port: u16) -> Self {
        Self::start_inner(name, port, None).await
    }

    /// Starts a server called `name` on a free loopback port that also serves the gRPC
    /// health protocol, overall status `SERVING` until [`set_serving`](Self::set_serving).
    pub async fn start_with_health(name: &str) -> Self {
        Self::start_inner(name, crate::free_port(), Some(HealthReporter::new())).await
    }

    /// Starts a server called `name` on a free loopback port that serves TLS only, with
    /// `pki`'s server certificate.
    pub async fn start_tls(name: &str, pki: &crate::TestPki) -> Self {
        let tls = tonic::transport::ServerTlsConfig::new().identity(pki.identity());
        Self::start_with_tls_config(name, tls).await
    }

    /// [`start_tls`](Self::start_tls), and clients must present a certificate issued by
    /// `pki`'s CA.
    pub async fn start_tls_client_auth(name: &str, pki: &crate::TestPki) -> Self {
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(pki.identity())
            .client_ca_root(tonic::transport::Certificate::from_pem(&pki.ca_pem));
        Self::start_with_tls_config(name, tls).await
    }

    async fn start_with_tls_config(name: &str, tls: tonic::transport::ServerTlsConfig) -> Self {
        let mut server = Self::new(name, crate::free_port(), None);
        server.tls = Some(tls);
        server.restart().await;
        server
    }

    async fn start_inner(name: &str, port: u16, health: Option<HealthReporter>) -> Self {
        let mut server = Self::new(name, port, health);
        server.restart().await;
        server
    }

    fn new(name: &str, port: u16, health: Option<HealthReporter>) -> Self {
        Self {
            name: name.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            shared: Arc::new(Shared::default()),
            health,
            tls: None,
            running: None,
        }
    }

    /// Sets the overall health status (service `""`) to `SERVING` or `NOT_SERVING`.
    ///
    /// # Panics
    ///
    /// Panics if the server was not started with
    /// [`start_with_health`](Self::start_with_health).
    pub async fn set_serving(&self, serving: bool) {
        let Some(health) = &self.health else {
            panic!(
                "echo server {} serves no health protocol: start it with EchoServer::start_with_health",
                self.name
            );
        };
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        health.set_service_status("", status).await;
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The name replies carry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Calls served since start (failed ones included).
    pub fn calls(&self) -> u64 {
        self.shared.calls.load(Ordering::Relaxed)
    }

    /// The ASCII metadata (headers) of the last call received.
    pub fn last_metadata(&self) -> Vec<(String, String)> {
        self.shared
            .last_metadata
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes how the server answers from the next call on.
    pub fn set_behavior(&self, behavior: Behavior) {
        *self
            .shared
            .behavior
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = behavior;
    }

    /// Serves TLS with this certificate and key from the next
    /// [`restart`](Self::restart) on (a certificate rotated on a running service).
    pub fn set_tls_identity(&mut self, cert_pem: &str, key_pem: &str) {
        self.tls = Some(
            tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(cert_pem, key_pem)),
        );
    }

    /// Stops accepting and closes connections once in-flight calls finish (bounded).
    pub async fn stop(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// Starts serving again on the same port (after [`stop`](Self::stop)).
    pub async fn restart(&mut self) {
        self.stop().await;
        // The port may linger briefly after a stop; retry the bind, bounded.
        let mut listener = None;
        for _ in 0..50 {
            match TcpListener::bind(self.addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let listener = listener
            .unwrap_or_else(|| panic!("cannot bind echo server {} to {}", self.name, self.addr));
        let (tx, rx) = oneshot::channel();
        let service = EchoService::new(Handler {
            name: self.name.clone(),
            shared: self.shared.clone(),
        })
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20);
        let health = self
            .health
            .clone()
            .map(|r| HealthServer::new(HealthService::from_health_reporter(r)));
        // tonic sets TCP_NODELAY only on listeners it binds itself; without it, small
        // replies wait for delayed ACKs (~40 ms stalls under concurrency).
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            |conn| {
                conn.inspect(|stream| {
                    let _ = stream.set_nodelay(true);
                })
            },
        );
        let name = self.name.clone();
        let tls = self.tls.clone();
        let task = tokio::spawn(async move {
            let mut builder = tonic::transport::Server::builder();
            if let Some(tls) = tls {
                builder = builder
                    .tls_config(tls)
                    .expect("TLS configuration of the echo server");
            }
            let result = builder
                .add_service(service)
                .add_service(crate::streams::service(&name))
                .add_optional_service(health)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "echo server ended with an error");
            }
        });
        self.running = Some((tx, task));
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            task.abort();
        }
    }
}
