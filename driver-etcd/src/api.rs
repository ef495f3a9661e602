//! The etcd calls the engine makes: [`EtcdClient`].
//!
//! Contract: an [`EtcdClient`] talks to one cluster through the balancing [`Channel`] to
//! its members ([`crate::client`] builds it). With credentials it logs in
//! (`Auth.Authenticate`) when created and sends the token with every call; a unary call
//! etcd refuses for its token (`UNAUTHENTICATED`: the token died with an etcd restart, or
//! after `--auth-token-ttl` unused) logs in again — once for all the calls refused with
//! the same token — and is sent once more. Streams (a watch, a
//! lease keep-alive) are opened the same way but not retried once open: their owners
//! resume them ([`crate::lease`], [`crate::watch_hub`]). Streams ask etcd to end them
//! when their member has no leader (etcd's `hasleader` metadata), so that an owner
//! resumes on a member that has one. Every response is read up to
//! 256 MiB (`MAX_RESPONSE_BYTES`); a longer one fails with tonic's "message length too
//! large".
//!
//! Why our own: the `etcd-client` crate compiles etcd's protos when it is built, which
//! needs `protoc` on every machine that builds a service using this crate. These few
//! calls over the committed stubs ([`crate::proto`]) need only Rust, and keep what the
//! engine relied on from `etcd-client`: its token refresh, the keep-alive and watch
//! streams it drives itself, and a custom channel.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};

use dtmdriver_core::Channel;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::proto::etcdserverpb::auth_client::AuthClient;
use crate::proto::etcdserverpb::kv_client::KvClient;
use crate::proto::etcdserverpb::lease_client::LeaseClient;
use crate::proto::etcdserverpb::watch_client::WatchClient;
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::{
    AuthenticateRequest, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseRevokeRequest, PutRequest, PutResponse, RangeRequest,
    RangeResponse, WatchCancelRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use crate::request::MAX_RESPONSE_BYTES;

/// Requests a stream may have queued before its sender waits (as `etcd-client`).
const STREAM_QUEUE: usize = 100;

/// The current auth token, if logged in.
type Token = Arc<RwLock<Option<MetadataValue<Ascii>>>>;

fn current(token: &Token) -> Option<MetadataValue<Ascii>> {
    token.read().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Adds the auth token (etcd's `token` metadata) to every call.
#[derive(Clone)]
struct AddToken(Token);

impl tonic::service::Interceptor for AddToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = current(&self.0) {
            request.metadata_mut().insert("token", token);
        }
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, AddToken>;

/// One etcd cluster as the engine calls it; see the [module docs](self). Shared per
/// cluster by [`shared_client`](crate::shared_client).
pub struct EtcdClient {
    channel: Channel,
    credentials: Option<(String, String)>,
    token: Token,
    /// Held while logging in again, so that concurrent refusals log in once.
    refreshing: tokio::sync::Mutex<()>,
}

impl fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdClient")
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish_non_exhaustive()
    }
}

impl EtcdClient {
    /// A client over `channel`; with `credentials` (user, password) it logs in first.
    pub(crate) async fn connect(
        channel: Channel,
        credentials: Option<(String, String)>,
    ) -> Result<Self, Status> {
        let client = Self {
            channel,
            credentials,
            token: Token::default(),
            refreshing: tokio::sync::Mutex::new(()),
        };
        client.refresh_token().await?;
        Ok(client)
    }

    /// Logs in again (a no-op without credentials) and keeps the new token.
    pub(crate) async fn refresh_token(&self) -> Result<(), Status> {
        let Some((name, password)) = &self.credentials else {
            return Ok(());
        };
        let request = AuthenticateRequest {
            name: name.clone(),
            password: password.clone(),
        };
        let token = AuthClient::new(self.channel.clone())
            .authenticate(request)
            .await?
            .into_inner()
            .token
            .parse()
            .map_err(|_| Status::internal("etcd answered an auth token that is not ASCII"))?;
        *self.token.write().unwrap_or_else(PoisonError::into_inner) = Some(token);
        Ok(())
    }

    /// Logs in again unless another call did since `stale` was refused.
    async fn refresh_if_stale(&self, stale: Option<MetadataValue<Ascii>>) -> Result<(), Status> {
        let _one = self.refreshing.lock().await;
        if current(&self.token) != stale {
            return Ok(());
        }
        self.refresh_token().await
    }

    /// Makes `call`, and once more after logging in again if etcd refused the token.
    async fn with_token<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: Fn(Authed) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let stale = current(&self.token);
        match call(self.authed()).await {
            Err(status) if self.credentials.is_some() && token_refused(&status) => {
                self.refresh_if_stale(stale).await?;
                call(self.authed()).await.map(Response::into_inner)
            }
            result => result.map(Response::into_inner),
        }
    }

    fn authed(&self) -> Authed {
        InterceptedService::new(self.channel.clone(), AddToken(self.token.clone()))
    }

    /// Puts `key` = `value` under `lease` (0: none).
    pub(crate) async fn put(
        &self,
        key: &str,
        value: &str,
        lease: i64,
    ) -> Result<PutResponse, Status> {
        let request = PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
            ..PutRequest::default()
        };
        self.with_token(|channel| {
            let request = request.clone();
            async move { kv(channel).put(request).await }
        })
        .await
    }

    /// Every key and value under `prefix`.
    pub(crate) async fn get_prefix(&self, prefix: &str) -> Result<RangeResponse, Status> {
        let request = RangeRequest {
            key: prefix.into(),
            range_end: prefix_end(prefix.as_bytes()),
            ..RangeRequest::default()
        };
        self.with_token(|channel| {
            let request = request.clone();
            async move { kv(channel).range(request).await }
        })
        .await
    }

    /// Grants a lease of `ttl` seconds.
    pub(crate) async fn lease_grant(&self, ttl: i64) -> Result<LeaseGrantResponse, Status> {
        self.with_token(|channel| async move {
            lease(channel)
                .lease_grant(LeaseGrantRequest { ttl, id: 0 })
                .await
        })
        .await
    }

    /// Revokes lease `id`, deleting its keys.
    pub(crate) async fn lease_revoke(&self, id: i64) -> Result<(), Status> {
        self.with_token(|channel| async move {
            lease(channel).lease_revoke(LeaseRevokeRequest { id }).await
        })
        .await
        .map(|_| ())
    }

    /// Opens a keep-alive stream for lease `id` and renews it once; fails with "lease not
    /// found" when etcd no longer knows the lease.
    pub(crate) async fn lease_keep_alive(
        &self,
        id: i64,
    ) -> Result<(KeepAliveSender, Streaming<LeaseKeepAliveResponse>), Status> {
        let (tx, mut acks) = self
            .with_token(|channel| async move {
                let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                // Queued before the call: etcd answers a stream's headers with its
                // first message.
                let _ = tx.try_send(LeaseKeepAliveRequest { id });
                let response = lease(channel)
                    .lease_keep_alive(require_leader(ReceiverStream::new(rx)))
                    .await?;
                Ok(response.map(|acks| (tx, acks)))
            })
            .await?;
        match acks.message().await? {
            Some(ack) if ack.ttl > 0 => Ok((KeepAliveSender { id, tx }, acks)),
            Some(_) => Err(Status::not_found(format!(
                "etcdserver: requested lease not found (lease {id})"
            ))),
            None => Err(Status::unavailable("etcd closed the keep-alive stream")),
        }
    }

    /// Opens a Watch stream with `first` on it; more watches join with
    /// [`WatchStream::watch`].
    pub(crate) async fn watch(&self, first: WatchCreateRequest) -> Result<WatchStream, Status> {
        self.with_token(|channel| {
            let first = first.clone();
            async move {
                let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                let _ = tx.try_send(create(first));
                let response = watch(channel)
                    .watch(require_leader(ReceiverStream::new(rx)))
                    .await?;
                Ok(response.map(|responses| WatchStream { tx, responses }))
            }
        })
        .await
    }
}

/// A stream request etcd refuses, or ends once opened, while the member it reached has
/// no leader: etcd's `hasleader` metadata, as clientv3's `WithRequireLeader` (on
/// go-zero's watches and on every clientv3 lease keep-alive).
///
/// Why: a member cut off from its peers by a network partition still serves the clients
/// that reach it. Without this, a watch on it stays open and silent while the others
/// go on (instances come and go unseen for as long as the partition lasts), and its
/// keep-alives hang in the member's wait for a leader until the lease runs out. With it,
/// etcd ends such streams after three election timeouts without a leader (about 3–4 s
/// with default settings) and refuses new ones at once, and their owners resume on
/// another member.
fn require_leader<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("hasleader", MetadataValue::from_static("true"));
    request
}

fn kv(channel: Authed) -> KvClient<Authed> {
    KvClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

fn lease(channel: Authed) -> LeaseClient<Authed> {
    LeaseClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

fn watch(channel: Authed) -> WatchClient<Authed> {
    WatchClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// Sends the renewals of one lease on its keep-alive stream.
#[derive(Debug)]
pub(crate) struct KeepAliveSender {
    id: i64,
    tx: mpsc::Sender<LeaseKeepAliveRequest>,
}

impl KeepAliveSender {
    /// Asks etcd to renew the lease once; its answer arrives on the stream.
    pub(crate) async fn keep_alive(&self) -> Result<(), String> {
        self.tx
            .send(LeaseKeepAliveRequest { id: self.id })
            .await
            .map_err(|_| "the keep-alive stream is closed".to_string())
    }
}

/// One gRPC Watch stream: watches created and cancelled on it by id, their responses.
#[derive(Debug)]
pub struct WatchStream {
    tx: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

impl WatchStream {
    /// Adds a watch to the stream.
    pub(crate) async fn watch(&self, request: WatchCreateRequest) -> Result<(), String> {
        self.send(create(request)).await
    }

    /// Cancels watch `watch_id`.
    pub(crate) async fn cancel(&self, watch_id: i64) -> Result<(), String> {
        let cancel = RequestUnion::CancelRequest(WatchCancelRequest { watch_id });
        self.send(WatchRequest {
            request_union: Some(cancel),
        })
        .await
    }

    async fn send(&self, request: WatchRequest) -> Result<(), String> {
        self.tx
            .send(request)
            .await
            .map_err(|_| "the watch stream is closed".to_string())
    }

    /// The next response on the stream; `Ok(None)` when etcd closed it.
    pub(crate) async fn message(&mut self) -> Result<Option<WatchResponse>, Status> {
        self.responses.message().await
    }
}

fn create(request: WatchCreateRequest) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(request)),
    }
}

/// A watch of every key under `prefix` from revision `start`, numbered `watch_id`.
pub(crate) fn watch_prefix(prefix: &str, start: i64, watch_id: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: prefix.into(),
        range_end: prefix_end(prefix.as_bytes()),
        start_revision: start,
        watch_id,
        ..WatchCreateRequest::default()
    }
}

/// A watch of exactly `key` from revision `start`.
pub(crate) fn watch_key(key: &str, start: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.into(),
        start_revision: start,
        ..WatchCreateRequest::default()
    }
}

/// The end of the range of keys starting with `prefix` (etcd's rule, as clientv3's
/// `GetPrefixRangeEnd`): the prefix with its last byte below 0xff incremented and what
/// follows dropped; `\0` (every key) when there is no such byte.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&b| b < 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

/// Whether etcd refused a call for its auth token (`UNAUTHENTICATED`; `UNKNOWN` with
/// etcd's message where a proxy lost the code).
fn token_refused(status: &Status) -> bool {
    match status.code() {
        Code::Unauthenticated => true,
        Code::Unknown => status.message() == "etcdserver: invalid auth token",
        _ => false,
    }
}

/// A failed call as text: etcd's message and the gRPC code.
pub(crate) fn describe(status: &Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{} ({:?})", status.message(), status.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_follow_etcd() {
        assert_eq!(prefix_end(b"svc/"), b"svc0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn only_token_refusals_log_in_again() {
        assert!(token_refused(&Status::unauthenticated(
            "etcdserver: invalid auth token"
        )));
        assert!(token_refused(&Status::unknown(
            "etcdserver: invalid auth token"
        )));
        assert!(!token_refused(&Status::permission_denied(
            "etcdserver: permission denied"
        )));
        assert!(!token_refused(&Status::unavailable("connection refused")));
    }
}
