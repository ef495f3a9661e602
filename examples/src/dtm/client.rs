//! A small dtm client: what the end-to-end examples need, nothing more.
//!
//! It speaks dtm's gRPC API (`dtmgimp.Dtm`) over a discovery channel, so dtm is found
//! the way dtm registered itself: `etcd://127.0.0.1:2379/dtmservice` with
//! `dtm-driver-gozero`, `discovery:///dtmservice` with `dtm-driver-kratos`, and so on.
//!
//! What a request carries, as dtm's Go client builds it:
//!
//! | field | Msg | Saga |
//! |---|---|---|
//! | `trans_type` | `msg` | `saga` |
//! | `steps` | JSON `[{"action": URI}, …]` | JSON `[{"action": URI, "compensate": URI}, …]` |
//! | `bin_payloads` | one encoded request per step | one per step (action and compensation share it) |
//!
//! dtm's gRPC API has no query; [`DtmClient::query`] uses dtm's HTTP API,
//! `GET /api/dtmsvr/query?gid=…`, on the HTTP address given with
//! [`DtmClient::with_http`] (dtm registers only its gRPC endpoint, so that address
//! cannot be discovered).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dtmdriver_core::{Channel, Driver};
use prost::Message;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::dtm_pb::dtm_client::DtmClient as DtmGrpcClient;
use super::dtm_pb::{DtmRequest, DtmTransOptions};

/// What can go wrong talking to dtm.
#[derive(Debug, thiserror::Error)]
pub enum DtmError {
    /// The target could not be dialled (no driver for its scheme, bad target).
    #[error("cannot dial dtm: {0}")]
    Dial(#[from] dtmdriver_core::Error),
    /// dtm answered a gRPC call with an error.
    #[error("dtm refused {call}: {status}")]
    Rpc {
        /// The call, e.g. `Submit`.
        call: &'static str,
        /// dtm's answer.
        status: tonic::Status,
    },
    /// The HTTP query failed or its answer was not dtm's.
    #[error("dtm query {what}: {reason}; check the HTTP address given to with_http")]
    Query {
        /// What was asked.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// A transaction did not reach a final status in time.
    #[error("transaction {gid} still '{status}' after {waited:?}")]
    NotFinished {
        /// The transaction.
        gid: String,
        /// Its last status (empty if dtm does not know it).
        status: String,
        /// How long it was polled.
        waited: Duration,
    },
}

/// Options dtm keeps per transaction (`DtmTransOptions`); zero means dtm's default.
#[derive(Clone, Debug, Default)]
struct Options {
    retry_interval: i64,
    request_timeout: i64,
    timeout_to_fail: i64,
}

/// A two-phase message: dtm calls every step's action until it succeeds.
///
/// ```
/// use examples::dtm::Msg;
/// let msg = Msg::new("gid-1")
///     .add("etcd://127.0.0.1:2379/trans.rpc/busi.Busi/TransOut", vec![8, 30])
///     .add("etcd://127.0.0.1:2379/trans.rpc/busi.Busi/TransIn", vec![8, 30]);
/// assert_eq!(msg.gid(), "gid-1");
/// ```
#[derive(Clone, Debug)]
pub struct Msg {
    trans: Trans,
}

/// A saga: dtm calls the actions in order; when one fails (`Aborted`) it calls the
/// compensations of every branch that ran, the failed one included, in reverse order.
///
/// ```
/// use examples::dtm::Saga;
/// let saga = Saga::new("gid-2").add(
///     "etcd://127.0.0.1:2379/trans.rpc/busi.Busi/TransOut",
///     "etcd://127.0.0.1:2379/trans.rpc/busi.Busi/TransOutRevert",
///     vec![8, 30],
/// );
/// assert_eq!(saga.gid(), "gid-2");
/// ```
#[derive(Clone, Debug)]
pub struct Saga {
    trans: Trans,
}

#[derive(Clone, Debug)]
struct Trans {
    gid: String,
    steps: Vec<BTreeMap<&'static str, String>>,
    payloads: Vec<Vec<u8>>,
    options: Options,
}

impl Trans {
    fn new(gid: &str) -> Self {
        Self {
            gid: gid.to_string(),
            steps: Vec::new(),
            payloads: Vec::new(),
            options: Options::default(),
        }
    }

    fn request(&self, trans_type: &str) -> DtmRequest {
        DtmRequest {
            gid: self.gid.clone(),
            trans_type: trans_type.to_string(),
            trans_options: Some(DtmTransOptions {
                retry_interval: self.options.retry_interval,
                request_timeout: self.options.request_timeout,
                timeout_to_fail: self.options.timeout_to_fail,
                ..Default::default()
            }),
            bin_payloads: self.payloads.clone(),
            steps: serde_json::to_string(&self.steps).unwrap_or_else(|_| "[]".into()),
            ..Default::default()
        }
    }
}

/// Setters shared by [`Msg`] and [`Saga`].
macro_rules! trans_options {
    () => {
        /// The transaction's gid.
        pub fn gid(&self) -> &str {
            &self.trans.gid
        }

        /// Seconds before dtm retries a branch that failed with anything but
        /// `Aborted` (dtm doubles it on each further failure). Default: dtm's
        /// `RetryInterval` (10 s); per transaction, dtm accepts less.
        pub fn retry_interval(mut self, seconds: i64) -> Self {
            self.trans.options.retry_interval = seconds;
            self
        }

        /// Seconds dtm waits for one branch call. Default: dtm's `RequestTimeout`.
        pub fn request_timeout(mut self, seconds: i64) -> Self {
            self.trans.options.request_timeout = seconds;
            self
        }
    };
}

impl Msg {
    /// An empty message with `gid` (from [`DtmClient::new_gid`] or your own).
    pub fn new(gid: &str) -> Self {
        Self {
            trans: Trans::new(gid),
        }
    }

    /// Adds a step: dtm calls branch URI `action` with `payload` (an encoded request).
    pub fn add(mut self, action: &str, payload: Vec<u8>) -> Self {
        self.trans
            .steps
            .push(BTreeMap::from([("action", action.to_string())]));
        self.trans.payloads.push(payload);
        self
    }

    /// [`add`](Self::add) with a protobuf message.
    pub fn add_message(self, action: &str, payload: &impl Message) -> Self {
        self.add(action, payload.encode_to_vec())
    }

    trans_options!();
}

impl Saga {
    /// An empty saga with `gid`.
    pub fn new(gid: &str) -> Self {
        Self {
            trans: Trans::new(gid),
        }
    }

    /// Adds a step: branch URIs `action` and its `compensate`, both called with
    /// `payload` (an encoded request).
    pub fn add(mut self, action: &str, compensate: &str, payload: Vec<u8>) -> Self {
        self.trans.steps.push(BTreeMap::from([
            ("action", action.to_string()),
            ("compensate", compensate.to_string()),
        ]));
        self.trans.payloads.push(payload);
        self
    }

    /// [`add`](Self::add) with a protobuf message.
    pub fn add_message(self, action: &str, compensate: &str, payload: &impl Message) -> Self {
        self.add(action, compensate, payload.encode_to_vec())
    }

    /// Seconds after which dtm gives a saga that has not finished up and rolls it
    /// back. Default: none.
    pub fn timeout_to_fail(mut self, seconds: i64) -> Self {
        self.trans.options.timeout_to_fail = seconds;
        self
    }

    trans_options!();
}

/// A transaction as dtm's HTTP query shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransInfo {
    /// `prepared`, `submitted`, `aborting`, `succeed` or `failed`; empty if dtm does not
    /// know the gid.
    pub status: String,
    /// Why a saga was rolled back.
    pub rollback_reason: String,
    /// The branches dtm stored (their statuses may lag behind the transaction's).
    pub branches: Vec<BranchInfo>,
}

/// A branch as dtm's HTTP query shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct BranchInfo {
    /// `01`, `02`, ...
    #[serde(default)]
    pub branch_id: String,
    /// `action` or `compensate`.
    #[serde(default)]
    pub op: String,
    /// The branch URI.
    #[serde(default)]
    pub url: String,
    /// `prepared`, `succeed` or `failed`.
    #[serde(default)]
    pub status: String,
}

#[derive(Deserialize)]
struct QueryAnswer {
    transaction: Option<QueryTransaction>,
    #[serde(default)]
    branches: Option<Vec<BranchInfo>>,
}

#[derive(Deserialize)]
struct QueryTransaction {
    #[serde(default)]
    status: String,
    #[serde(default)]
    rollback_reason: String,
}

/// The final statuses of a transaction.
const FINAL_STATUSES: [&str; 2] = ["succeed", "failed"];
/// Pause between two status queries.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Bound of one HTTP query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// A dtm client. See the [module docs](self).
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use dtmdriver_gozero as _;
/// use examples::dtm::{DtmClient, Msg};
/// dtmdriver_core::use_driver("dtm-driver-gozero")?;
/// let mut dtm = DtmClient::connect("etcd://127.0.0.1:2379/dtmservice")?
///     .with_http("127.0.0.1:36789");
/// let gid = dtm.new_gid().await?;
/// dtm.submit_msg(&Msg::new(&gid).add("etcd://127.0.0.1:2379/trans.rpc/busi.Busi/TransIn", vec![])).await?;
/// let info = dtm.wait_final(&gid, std::time::Duration::from_secs(30)).await?;
/// assert_eq!(info.status, "succeed");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct DtmClient {
    grpc: DtmGrpcClient<Channel>,
    http_addr: Option<String>,
}

impl DtmClient {
    /// Dials dtm's registered gRPC endpoint at `target` through the driver in use
    /// (`dtmdriver_core::use_driver`).
    ///
    /// # Errors
    ///
    /// [`DtmError::Dial`] if the target is malformed or no resolver serves its scheme.
    pub fn connect(target: &str) -> Result<Self, DtmError> {
        Ok(Self::from_channel(dtmdriver_core::connect(target)?))
    }

    /// Dials `target` through `driver`, a driver value, without the global registry.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub fn connect_with(driver: &dyn Driver, target: &str) -> Result<Self, DtmError> {
        Ok(Self::from_channel(
            Channel::builder(target).driver(driver)?.connect()?,
        ))
    }

    /// A client over an existing channel.
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            grpc: DtmGrpcClient::new(channel),
            http_addr: None,
        }
    }

    /// dtm's HTTP address (`127.0.0.1:36789`), for [`query`](Self::query).
    pub fn with_http(mut self, http_addr: &str) -> Self {
        self.http_addr = Some(http_addr.to_string());
        self
    }

    /// A new gid from dtm (`NewGid`).
    ///
    /// # Errors
    ///
    /// [`DtmError::Rpc`] with dtm's (or the channel's) status.
    pub async fn new_gid(&mut self) -> Result<String, DtmError> {
        let reply = self
            .grpc
            .new_gid(())
            .await
            .map_err(|status| DtmError::Rpc {
                call: "NewGid",
                status,
            })?;
        Ok(reply.into_inner().gid)
    }

    /// Submits a message (`Submit`, trans type `msg`). dtm stores it and calls the
    /// branches in the background.
    ///
    /// # Errors
    ///
    /// [`DtmError::Rpc`], e.g. `Aborted` when the gid is already finished.
    pub async fn submit_msg(&mut self, msg: &Msg) -> Result<(), DtmError> {
        self.submit(msg.trans.request("msg")).await
    }

    /// Submits a saga (`Submit`, trans type `saga`).
    ///
    /// # Errors
    ///
    /// As [`submit_msg`](Self::submit_msg).
    pub async fn submit_saga(&mut self, saga: &Saga) -> Result<(), DtmError> {
        self.submit(saga.trans.request("saga")).await
    }

    async fn submit(&mut self, request: DtmRequest) -> Result<(), DtmError> {
        tracing::debug!(gid = %request.gid, trans_type = %request.trans_type, steps = %request.steps, "submit");
        self.grpc
            .submit(request)
            .await
            .map_err(|status| DtmError::Rpc {
                call: "Submit",
                status,
            })?;
        Ok(())
    }

    /// The transaction `gid` as dtm stores it (HTTP `GET /api/dtmsvr/query`).
    ///
    /// # Errors
    ///
    /// [`DtmError::Query`] without an HTTP address, or if dtm does not answer as dtm.
    pub async fn query(&self, gid: &str) -> Result<TransInfo, DtmError> {
        let what = format!("of {gid}");
        let fail = |reason: String| DtmError::Query {
            what: what.clone(),
            reason,
        };
        let addr = self
            .http_addr
            .as_deref()
            .ok_or_else(|| fail("no HTTP address; call with_http".into()))?;
        let body = tokio::time::timeout(
            QUERY_TIMEOUT,
            http_get(addr, &format!("/api/dtmsvr/query?gid={gid}")),
        )
        .await
        .map_err(|_| fail(format!("no answer from {addr} within {QUERY_TIMEOUT:?}")))?
        .map_err(|e| fail(format!("{addr}: {e}")))?;
        let answer: QueryAnswer = serde_json::from_str(&body)
            .map_err(|e| fail(format!("unexpected answer ({e}): {body}")))?;
        let (status, rollback_reason) = answer
            .transaction
            .map(|t| (t.status, t.rollback_reason))
            .unwrap_or_default();
        Ok(TransInfo {
            status,
            rollback_reason,
            branches: answer.branches.unwrap_or_default(),
        })
    }

    /// Polls [`query`](Self::query) until the transaction is `succeed` or `failed`,
    /// at most `limit`.
    ///
    /// # Errors
    ///
    /// [`DtmError::NotFinished`] with the last status after `limit`; query errors.
    pub async fn wait_final(&self, gid: &str, limit: Duration) -> Result<TransInfo, DtmError> {
        let started = Instant::now();
        loop {
            let info = self.query(gid).await?;
            if FINAL_STATUSES.contains(&info.status.as_str()) {
                return Ok(info);
            }
            if started.elapsed() >= limit {
                return Err(DtmError::NotFinished {
                    gid: gid.to_string(),
                    status: info.status,
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// One HTTP/1.0 GET (so the answer is never chunked); the body of a 200 answer.
async fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text}")))?;
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        return Err(std::io::Error::other(format!("{status_line}: {body}")));
    }
    Ok(body.to_string())
}
