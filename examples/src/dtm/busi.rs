//! The busi service: the branches dtm calls.
//!
//! dtm invokes a branch URI such as `etcd://127.0.0.1:2379/trans.rpc/busi.Busi/TransOut`
//! by resolving the server part through its driver and calling the method with the
//! branch payload as-is, through a codec named `dtm_raw`: the request arrives with
//! `content-type: application/grpc+dtm_raw` and an ordinary protobuf body. tonic
//! routes by path and does not check the request's content type, so the generated
//! server takes these calls unchanged; a small layer ([`note_content_type`]) only
//! copies the header into the request's extensions so that the log can show it (tonic
//! keeps `content-type` out of the metadata).
//!
//! The branch context comes as metadata: `dtm-gid`, `dtm-trans_type`, `dtm-branch_id`,
//! `dtm-op` and `dtm-dtm` (empty when the coordinator calls). A branch answers `Ok` for
//! success and `Aborted` for a business failure, which makes dtm roll a saga back;
//! anything else dtm retries.
//!
//! Each [`BusiServer`] runs on its own thread and runtime, like a separate process:
//! [`BusiServer::kill`] drops that runtime, closing the listener and every connection
//! at once, without any goodbye to clients or the registry.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use super::busi_pb::busi_server::{Busi, BusiServer as BusiGrpcServer};
use super::busi_pb::{BusiReply, BusiReq};

/// One of the busi service's methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BusiMethod {
    /// `/busi.Busi/TransOut`: take the amount from the sender.
    TransOut,
    /// `/busi.Busi/TransIn`: give the amount to the receiver.
    TransIn,
    /// `/busi.Busi/TransOutRevert`: compensate `TransOut`.
    TransOutRevert,
    /// `/busi.Busi/TransInRevert`: compensate `TransIn`.
    TransInRevert,
}

impl BusiMethod {
    /// The method's name in the proto, e.g. `TransOut`.
    pub fn name(self) -> &'static str {
        match self {
            Self::TransOut => "TransOut",
            Self::TransIn => "TransIn",
            Self::TransOutRevert => "TransOutRevert",
            Self::TransInRevert => "TransInRevert",
        }
    }

    /// The gRPC path, e.g. `/busi.Busi/TransOut`, as a dtm branch URI ends.
    pub fn path(self) -> String {
        format!("/busi.Busi/{}", self.name())
    }
}

/// One call the service received, in arrival order in the [`BusiLog`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BranchCall {
    /// The name of the [`BusiServer`] that served it.
    pub instance: String,
    /// The method called.
    pub method: BusiMethod,
    /// The request's `content-type` header.
    pub content_type: String,
    /// Metadata `dtm-gid`.
    pub gid: String,
    /// Metadata `dtm-trans_type` (`msg`, `saga`, ...).
    pub trans_type: String,
    /// Metadata `dtm-branch_id` (`01`, `02`, ...).
    pub branch_id: String,
    /// Metadata `dtm-op` (`action`, `compensate`, ...).
    pub op: String,
    /// Metadata `dtm-dtm`: the coordinator's address (dtm sends it empty).
    pub dtm: String,
    /// The decoded request.
    pub amount: i64,
    /// The decoded request's user.
    pub user_id: String,
    /// Whether the call was answered `Aborted` (a business failure).
    pub aborted: bool,
}

/// The calls every [`BusiServer`] sharing it received, plus the failure rules they
/// follow. Cheap to clone; clones share.
#[derive(Clone, Debug, Default)]
pub struct BusiLog {
    inner: Arc<Mutex<LogState>>,
}

#[derive(Debug, Default)]
struct LogState {
    calls: Vec<BranchCall>,
    /// A method fails with `Aborted` when the amount is above its limit.
    limits: HashMap<BusiMethod, i64>,
}

impl BusiLog {
    /// An empty log without failure rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on `method` answers `Aborted` ("insufficient balance") for amounts
    /// above `limit`; `None` removes the rule.
    pub fn set_limit(&self, method: BusiMethod, limit: Option<i64>) {
        let mut state = self.lock();
        match limit {
            Some(limit) => state.limits.insert(method, limit),
            None => state.limits.remove(&method),
        };
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<BranchCall> {
        self.lock().calls.clone()
    }

    /// The calls of transaction `gid`, in arrival order.
    pub fn calls_of(&self, gid: &str) -> Vec<BranchCall> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.gid == gid)
            .cloned()
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a call and says whether it fails.
    fn record(&self, mut call: BranchCall) -> bool {
        let mut state = self.lock();
        call.aborted = state
            .limits
            .get(&call.method)
            .is_some_and(|limit| call.amount > *limit);
        let aborted = call.aborted;
        state.calls.push(call);
        aborted
    }
}

/// The request's `content-type`, copied into its extensions by [`note_content_type`].
#[derive(Clone, Debug)]
pub struct ContentType(pub String);

/// Copies the `content-type` header into the request's extensions as [`ContentType`]
/// (tonic keeps it out of the metadata). Used as
/// `tower::util::MapRequestLayer::new(note_content_type)`.
pub fn note_content_type(
    mut req: http::Request<tonic::body::Body>,
) -> http::Request<tonic::body::Body> {
    let value = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    req.extensions_mut().insert(ContentType(value));
    req
}

/// The service implementation: records each call in the log and answers by its rules.
#[derive(Clone, Debug)]
struct BusiService {
    instance: String,
    log: BusiLog,
}

impl BusiService {
    fn handle(
        &self,
        method: BusiMethod,
        req: Request<BusiReq>,
    ) -> Result<Response<BusiReply>, Status> {
        let meta = |key: &str| {
            req.metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let content_type = req
            .extensions()
            .get::<ContentType>()
            .map(|c| c.0.clone())
            .unwrap_or_default();
        let call = BranchCall {
            instance: self.instance.clone(),
            method,
            content_type,
            gid: meta("dtm-gid"),
            trans_type: meta("dtm-trans_type"),
            branch_id: meta("dtm-branch_id"),
            op: meta("dtm-op"),
            dtm: meta("dtm-dtm"),
            amount: req.get_ref().amount,
            user_id: req.get_ref().user_id.clone(),
            aborted: false,
        };
        tracing::info!(
            instance = %call.instance,
            method = method.name(),
            gid = %call.gid,
            branch_id = %call.branch_id,
            op = %call.op,
            amount = call.amount,
            "busi call"
        );
        if self.log.record(call) {
            return Err(Status::aborted(format!(
                "{}: insufficient balance for {}",
                method.name(),
                req.get_ref().amount
            )));
        }
        Ok(Response::new(BusiReply {
            message: format!("{} done by {}", method.name(), self.instance),
        }))
    }
}

#[tonic::async_trait]
impl Busi for BusiService {
    async fn trans_out(&self, req: Request<BusiReq>) -> Result<Response<BusiReply>, Status> {
        self.handle(BusiMethod::TransOut, req)
    }

    async fn trans_in(&self, req: Request<BusiReq>) -> Result<Response<BusiReply>, Status> {
        self.handle(BusiMethod::TransIn, req)
    }

    async fn trans_out_revert(&self, req: Request<BusiReq>) -> Result<Response<BusiReply>, Status> {
        self.handle(BusiMethod::TransOutRevert, req)
    }

    async fn trans_in_revert(&self, req: Request<BusiReq>) -> Result<Response<BusiReply>, Status> {
        self.handle(BusiMethod::TransInRevert, req)
    }
}

/// A running busi service on `127.0.0.1` on its own thread and runtime. Dropping it
/// is [`kill`](Self::kill).
#[derive(Debug)]
pub struct BusiServer {
    name: String,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl BusiServer {
    /// Starts an instance called `name` on a free loopback port, recording into `log`.
    /// It serves once this returns.
    ///
    /// # Errors
    ///
    /// If no port can be bound or the thread cannot start.
    pub fn start(name: &str, log: &BusiLog) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let service = BusiService {
            instance: name.to_string(),
            log: log.clone(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let thread_name = format!("busi-{name}");
        let thread = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            tracing::error!(%e, "busi: cannot use the listener");
                            return;
                        }
                    };
                    let serve = tonic::transport::Server::builder()
                        .layer(tower::util::MapRequestLayer::new(note_content_type))
                        .add_service(BusiGrpcServer::new(service))
                        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
                    tokio::select! {
                        result = serve => if let Err(e) = result {
                            tracing::error!(%e, "busi server failed");
                        },
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime here drops every connection task: the sockets close
                // at once, as when a process dies.
                drop(runtime);
            })?;
        tracing::info!(name, %addr, "busi server started");
        Ok(Self {
            name: name.to_string(),
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The instance's name, as recorded in [`BranchCall::instance`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address it serves on, `127.0.0.1:PORT` (what to register).
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Stops serving at once: the listener and every open connection are closed, calls
    /// in flight get no answer. Registrations are not touched (a registration made for
    /// it stays until its owner drops it, like a crashed process's lease).
    pub fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::warn!(name = %self.name, "busi server thread panicked");
            }
            tracing::info!(name = %self.name, addr = %self.addr, "busi server killed");
        }
    }
}

impl Drop for BusiServer {
    fn drop(&mut self) {
        self.kill();
    }
}
