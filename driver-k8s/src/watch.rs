//! Following a service's EndpointSlices: [`ServiceWatch`] and [`resolve_service`].
//!
//! Contract:
//!
//! * the watch lists the `discovery.k8s.io/v1` EndpointSlices labelled
//!   `kubernetes.io/service-name=SERVICE` in the namespace, then watches them from the
//!   list's resourceVersion (kube-runtime's `watcher`, with bookmarks);
//! * a watch that ends or breaks (the apiserver restarts, a proxy cuts it) is started
//!   again from the last resourceVersion seen, so nothing is read twice; a watch the
//!   apiserver refuses as expired (410 Gone: its resourceVersion was compacted away) is
//!   replaced by a new list, published once complete;
//! * while the apiserver cannot be read the watch reports an error and keeps the last
//!   set (a balancer keeps serving it), and tries again after a bounded backoff
//!   (50 ms doubling to 500 ms);
//! * a refusal (403) is an error naming the identity, the namespace and the Role it
//!   needs: get, list and watch on `endpointslices` in `discovery.k8s.io`;
//! * each change decodes the one slice that changed ([`ServiceSlice`]) and, when what
//!   the resolvers use of it changed, publishes the new index ([`SliceIndex`], shared
//!   between snapshots); each resolver passes on the keyed changes from the index it
//!   published last ([`keyed_changes`]): the changed slices' addresses alone;
//! * one watch runs per (credentials, namespace, service) in a process, however many
//!   targets resolve it; it stops when its last subscriber is gone.

use std::sync::{Arc, LazyLock};

use dtmdriver_core::backoff::Backoff;
use dtmdriver_core::resolve::SnapshotSender;
use dtmdriver_core::shared::SharedWatches;
use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::credentials::Credentials;
use crate::slices::{ServiceSlice, SliceIndex, default_port, keyed_changes};

/// The label the EndpointSlice controller puts on a service's slices.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One watched service. Equal keys share one watch.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// Who reads, and from which apiserver.
    pub credentials: Credentials,
    /// The namespace.
    pub namespace: String,
    /// The service name.
    pub service: String,
}

impl ServiceKey {
    /// Whether `name` is a DNS label (RFC 1123), as Kubernetes namespace and service
    /// names are; the error says what is wrong.
    pub fn check_name(name: &str) -> std::result::Result<(), &'static str> {
        if name.is_empty() {
            return Err("it is empty");
        }
        if name.len() > 63 {
            return Err("it is longer than 63 characters");
        }
        let ok = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !ok {
            return Err(
                "it must hold only lower-case letters, digits and '-', and start and end with a letter or digit",
            );
        }
        Ok(())
    }
}

/// What a watch knows about its service.
#[derive(Clone, Debug, Default)]
pub struct ServiceState {
    /// The slices, by name; `None` until the first list completes.
    pub slices: Option<SliceIndex>,
    /// Why the apiserver cannot be read right now, if it cannot.
    pub error: Option<String>,
    /// How many lists completed (the first one, then one after each 410 Gone).
    pub lists: u64,
}

static WATCHES: LazyLock<SharedWatches<ServiceKey, ServiceState>> =
    LazyLock::new(|| SharedWatches::new("EndpointSlice watch"));

/// The shared list-and-watch of one [`ServiceKey`]; see the [module docs](self).
#[derive(Debug)]
pub struct ServiceWatch {
    rx: watch::Receiver<ServiceState>,
}

impl ServiceWatch {
    /// Subscribes to the process's watch of `key`, starting it if none runs. Must be
    /// called inside a tokio runtime.
    pub fn subscribe(key: &ServiceKey) -> Self {
        let key = key.clone();
        let rx = WATCHES.subscribe(&key, |tx| run(key.clone(), tx));
        Self { rx }
    }

    /// The receiver of the watch's state; `changed()` fires on every change.
    pub fn receiver(&self) -> watch::Receiver<ServiceState> {
        self.rx.clone()
    }

    /// How many watches run in this process.
    pub fn running() -> usize {
        WATCHES.len()
    }

    /// How many subscribers the watch of `key` has (0 when none runs), for tests of the
    /// sharing.
    pub fn subscribers(key: &ServiceKey) -> usize {
        WATCHES.receivers(key)
    }
}

/// Resolves `key` into endpoint snapshots on `updates`: the ready addresses of every
/// slice with `port`, or, without one, the service's first port (see [`default_port`]).
/// Returns at once; a task follows the shared [`ServiceWatch`] until `updates` is closed.
pub fn resolve_service(key: &ServiceKey, port: Option<u16>, updates: SnapshotSender) {
    let mut rx = ServiceWatch::subscribe(key).receiver();
    let (namespace, service) = (key.namespace.clone(), key.service.clone());
    tokio::spawn(async move {
        rx.mark_changed();
        // The index and port published last, which the next changes start from.
        let mut published: Option<(SliceIndex, u16)> = None;
        loop {
            tokio::select! {
                () = updates.closed() => return,
                changed = rx.changed() => if changed.is_err() { return },
            }
            let state = rx.borrow_and_update().clone();
            if let Some(error) = state.error {
                updates.error(error);
                continue;
            }
            let Some(slices) = state.slices else { continue };
            // A service without slices has no port to find, and needs none: it lists
            // nothing on any (on the last one published, its keys go).
            let empty = || {
                slices
                    .is_empty()
                    .then(|| published.as_ref().map_or(0, |(_, port)| *port))
            };
            let Some(port) = port.or_else(|| default_port(&slices)).or_else(empty) else {
                updates.error(format!(
                    "no EndpointSlice of service `{service}` in namespace `{namespace}` \
                     has a port number; name the port in the target: \
                     k8s://{namespace}/{service}:PORT"
                ));
                continue;
            };
            let old = published.as_ref().map(|(index, port)| (index, *port));
            let (changes, bad) = keyed_changes(old, &slices, port);
            if !bad.is_empty() {
                tracing::warn!(%namespace, %service, skipped = ?bad, "EndpointSlice addresses that are not hosts were left out");
            }
            updates.apply(changes);
            published = Some((slices, port));
        }
    });
}

/// The watch task: list and watch until the shared map drops it (no subscriber left).
async fn run(key: ServiceKey, tx: watch::Sender<ServiceState>) {
    loop {
        follow(&key, &tx).await;
    }
}

/// What to do after a watcher error.
enum Next {
    /// Poll the same watcher again (it resumes or re-lists by itself).
    Continue,
    /// Start a new watcher: a new list.
    Relist,
}

/// Lists and watches forever; cancelled by dropping.
async fn follow(key: &ServiceKey, tx: &watch::Sender<ServiceState>) {
    let mut backoff = Backoff::for_engine();
    loop {
        let client = match key.credentials.client().await {
            Ok(client) => client,
            Err(e) => {
                publish_error(tx, key, e.to_string());
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let api: Api<EndpointSlice> = Api::namespaced(client, &key.namespace);
        let config =
            watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={}", key.service));
        let mut events = watcher(api, config).boxed();
        // The slices of a list in progress, published when it completes.
        let mut listing: Option<SliceIndex> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => listing = Some(SliceIndex::new()),
                Ok(watcher::Event::InitApply(slice)) => {
                    if let (Some(index), Some(name)) =
                        (listing.as_mut(), slice.metadata.name.clone())
                    {
                        index.insert(name, Arc::new(ServiceSlice::decode(&slice)));
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    backoff.reset();
                    let index = listing.take().unwrap_or_default();
                    tx.send_modify(|s| {
                        s.slices = Some(index);
                        s.error = None;
                        s.lists += 1;
                    });
                }
                Ok(watcher::Event::Apply(slice)) => {
                    backoff.reset();
                    let Some(name) = slice.metadata.name.clone() else {
                        continue;
                    };
                    let decoded = ServiceSlice::decode(&slice);
                    tx.send_if_modified(|s| {
                        let index = s.slices.get_or_insert_default();
                        let same = index.get(&name).is_some_and(|old| **old == decoded);
                        let was_error = s.error.take().is_some();
                        if !same {
                            index.insert(name, Arc::new(decoded));
                        }
                        !same || was_error
                    });
                }
                Ok(watcher::Event::Delete(slice)) => {
                    backoff.reset();
                    let Some(name) = slice.metadata.name else {
                        continue;
                    };
                    tx.send_if_modified(|s| {
                        let index = s.slices.get_or_insert_default();
                        let removed = index.remove(&name).is_some();
                        let was_error = s.error.take().is_some();
                        removed || was_error
                    });
                }
                Err(e) => {
                    let (message, next) = explain(key, &e);
                    if let Some(message) = message {
                        publish_error(tx, key, message);
                    }
                    if let Next::Relist = next {
                        break;
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }
}

fn publish_error(tx: &watch::Sender<ServiceState>, key: &ServiceKey, message: String) {
    tracing::debug!(namespace = %key.namespace, service = %key.service, error = %message, "EndpointSlice watch error");
    tx.send_modify(|s| s.error = Some(message));
}

/// A message a person can act on (none for an expired watch, which is no failure:
/// the list that follows replaces it), and what the watch does next.
fn explain(key: &ServiceKey, e: &watcher::Error) -> (Option<String>, Next) {
    let status = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.as_ref()),
        watcher::Error::WatchError(s) => Some(s.as_ref()),
        _ => None,
    };
    let (ns, svc, who) = (&key.namespace, &key.service, key.credentials.describe());
    let Some(status) = status else {
        return (
            Some(format!(
                "reading the EndpointSlices of service `{svc}` in namespace `{ns}` with {who}: {e}"
            )),
            Next::Continue,
        );
    };
    let message = match status.code {
        403 => format!(
            "forbidden to read the EndpointSlices of service `{svc}` in namespace `{ns}` \
             with {who}: {}; bind a Role granting get, list and watch on `endpointslices` \
             (apiGroups: [\"discovery.k8s.io\"]) in namespace `{ns}` to this identity \
             (see docs/targets.md, `k8s://`)",
            status.message
        ),
        401 => format!(
            "the apiserver did not accept {who} ({}); renew the token or the kubeconfig's \
             credentials",
            status.message
        ),
        410 => {
            tracing::info!(namespace = %ns, service = %svc, reason = %status.message, "EndpointSlice watch expired (410 Gone); listing again");
            // The watcher lists again by itself after a 410 inside a watch, but not
            // when the watch request itself is refused with it: start over then.
            let next = match e {
                watcher::Error::WatchStartFailed(_) => Next::Relist,
                _ => Next::Continue,
            };
            return (None, next);
        }
        _ => format!(
            "reading the EndpointSlices of service `{svc}` in namespace `{ns}` with {who}: \
             {} ({})",
            status.message, status.code
        ),
    };
    (Some(message), Next::Continue)
}
