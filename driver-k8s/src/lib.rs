//! The Kubernetes registry engine: where a service's instances are, read from its
//! EndpointSlices through the kube-apiserver, as go-zero's `k8s://` resolver reads them.
//!
//! Contract (each module states its part):
//!
//! * [`resolve_service`] publishes the ready addresses of a service's
//!   `discovery.k8s.io/v1` EndpointSlices (label `kubernetes.io/service-name`) with a
//!   port, as keyed changes through dtmdriver-core's resolver contract (those of the
//!   slices that changed), following every change: [`watch`] (list, then watch from the list's resourceVersion; resume from the
//!   last resourceVersion after a broken watch; a new list after 410 Gone; one watch per
//!   credentials, namespace and service in a process);
//! * [`slices`]: which addresses count (ready or unknown; `serving` and `terminating`
//!   unread), the default port, dual-stack and multi-slice services;
//! * [`credentials`]: in-cluster service account as go-zero, else a kubeconfig; errors
//!   say which was tried and what is missing; a refusal names the Role to bind.
//!
//! The target syntax is a format's business (go-zero's `k8s://NAMESPACE/SERVICE:PORT`
//! lives in `dtmdriver-gozero`). The Role a reader needs:
//!
//! ```yaml
//! apiVersion: rbac.authorization.k8s.io/v1
//! kind: Role
//! metadata: {name: endpointslice-reader, namespace: NAMESPACE}
//! rules:
//! - apiGroups: ["discovery.k8s.io"]
//!   resources: ["endpointslices"]
//!   verbs: ["get", "list", "watch"]
//! ```
//!
//! Why a crate of its own: a Kubernetes client (kube-rs, k8s-openapi) is large; only
//! programs that dial `k8s://` targets link it.

pub mod credentials;
pub mod slices;
pub mod watch;

pub use credentials::{Credentials, CredentialsError, SERVICE_ACCOUNT_DIR, use_credentials};
pub use slices::{ServiceSlice, SliceIndex};
pub use watch::{SERVICE_NAME_LABEL, ServiceKey, ServiceState, ServiceWatch, resolve_service};
