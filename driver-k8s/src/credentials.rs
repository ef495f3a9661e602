//! Where the Kubernetes API is and who we are to it: [`Credentials`].
//!
//! Contract: [`Credentials::from_env`] picks, like go-zero's `rest.InClusterConfig`, the
//! pod's service account when `KUBERNETES_SERVICE_HOST` is set (token and CA under
//! [`SERVICE_ACCOUNT_DIR`], the API at `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`);
//! elsewhere, beyond go-zero, the kubeconfig named by `KUBECONFIG`, else
//! `~/.kube/config`, with its current context. [`use_credentials`] overrides that choice
//! for the process (before the first `k8s://` target is resolved). A failure to load
//! says which of the two was tried and what is missing. The token file is re-read as it
//! rotates (kube's token-file support), the CA file too.

use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

/// Where a pod's service-account token, CA and namespace are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How to reach and authenticate to a Kubernetes API server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Credentials {
    /// A pod's service account: `token` and `ca.crt` in `dir`, the API at
    /// `https://host:port`.
    InCluster {
        /// The directory holding `token` and `ca.crt` ([`SERVICE_ACCOUNT_DIR`] in a pod).
        dir: PathBuf,
        /// `KUBERNETES_SERVICE_HOST`.
        host: String,
        /// `KUBERNETES_SERVICE_PORT`.
        port: String,
    },
    /// A kubeconfig file and its current context; `None` reads `KUBECONFIG`, else
    /// `~/.kube/config`.
    Kubeconfig(Option<PathBuf>),
}

/// Why credentials could not be loaded; the message says what was tried and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// In a cluster, but the service account is not usable.
    #[error(
        "in-cluster credentials (KUBERNETES_SERVICE_HOST is set): {0}; mount the pod's \
         service account (automountServiceAccountToken) or, outside a cluster, unset \
         KUBERNETES_SERVICE_HOST and set KUBECONFIG"
    )]
    InCluster(String),
    /// Not in a cluster and no kubeconfig.
    #[error(
        "no credentials for the Kubernetes API: not in a cluster (KUBERNETES_SERVICE_HOST \
         is not set) and no kubeconfig ({0}); run in a pod with a service account, or set \
         KUBECONFIG to a kubeconfig file"
    )]
    Missing(String),
    /// The kubeconfig could not be used.
    #[error("kubeconfig {path}: {reason}; fix the file or point KUBECONFIG at another")]
    Kubeconfig {
        /// The file (or `KUBECONFIG`'s value).
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration that loaded but gives no client (a bad CA, say).
    #[error("{what}: cannot build a Kubernetes client: {reason}")]
    Client {
        /// [`Credentials::describe`].
        what: String,
        /// Why.
        reason: String,
    },
}

static OVERRIDE: LazyLock<Mutex<Option<Credentials>>> = LazyLock::new(|| Mutex::new(None));

/// Makes `k8s://` targets in this process use `credentials` instead of
/// [`Credentials::from_env`]'s choice. Watches already running keep theirs.
pub fn use_credentials(credentials: Credentials) {
    *OVERRIDE.lock().unwrap_or_else(|e| e.into_inner()) = Some(credentials);
}

impl Credentials {
    /// The credentials of this process: those given to [`use_credentials`], else in-cluster
    /// when `KUBERNETES_SERVICE_HOST` is set, else the kubeconfig (see the
    /// [module docs](self)).
    pub fn from_env() -> Self {
        if let Some(c) = OVERRIDE.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return c;
        }
        match std::env::var("KUBERNETES_SERVICE_HOST") {
            Ok(host) if !host.is_empty() => Self::InCluster {
                dir: PathBuf::from(SERVICE_ACCOUNT_DIR),
                host,
                port: std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_default(),
            },
            _ => Self::Kubeconfig(None),
        }
    }

    /// What these credentials are, for messages (no secret in it).
    pub fn describe(&self) -> String {
        match self {
            Self::InCluster { dir, host, port } => format!(
                "the service account in {} for https://{}",
                dir.display(),
                join_host_port(host, port)
            ),
            Self::Kubeconfig(Some(path)) => format!("kubeconfig {}", path.display()),
            Self::Kubeconfig(None) => match std::env::var("KUBECONFIG") {
                Ok(v) if !v.is_empty() => format!("kubeconfig {v} (KUBECONFIG)"),
                _ => "kubeconfig ~/.kube/config".into(),
            },
        }
    }

    /// A client with these credentials. Each watch makes its own: a watch holds a
    /// connection of its own anyway (HTTP/1.1), and a client lives in the runtime that
    /// made it.
    pub async fn client(&self) -> Result<kube::Client, CredentialsError> {
        let config = self.load().await?;
        kube::Client::try_from(config).map_err(|e| CredentialsError::Client {
            what: self.describe(),
            reason: e.to_string(),
        })
    }

    /// Loads the client configuration these credentials name.
    pub async fn load(&self) -> Result<kube::Config, CredentialsError> {
        match self {
            Self::InCluster { dir, host, port } => in_cluster(dir, host, port).await,
            Self::Kubeconfig(path) => kubeconfig(path.as_deref()).await,
        }
    }
}

fn join_host_port(host: &str, port: &str) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port.is_empty() {
        host
    } else {
        format!("{host}:{port}")
    }
}

async fn in_cluster(dir: &Path, host: &str, port: &str) -> Result<kube::Config, CredentialsError> {
    let fail = CredentialsError::InCluster;
    if port.is_empty() {
        return Err(fail("KUBERNETES_SERVICE_PORT is not set".into()));
    }
    let (token, ca) = (dir.join("token"), dir.join("ca.crt"));
    for file in [&token, &ca] {
        if let Err(e) = std::fs::metadata(file) {
            return Err(fail(format!("cannot read {}: {e}", file.display())));
        }
    }
    let server = format!("https://{}", join_host_port(host, port));
    let yaml = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "in-cluster", "cluster": {
            "server": server,
            "certificate-authority": ca,
        }}],
        "users": [{"name": "service-account", "user": {"tokenFile": token}}],
        "contexts": [{"name": "in-cluster", "context": {
            "cluster": "in-cluster",
            "user": "service-account",
        }}],
        "current-context": "in-cluster",
    })
    .to_string();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).map_err(|e| fail(e.to_string()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| fail(format!("{server}: {e}")))?;
    config.root_cert_file = Some(ca);
    Ok(config)
}

async fn kubeconfig(path: Option<&Path>) -> Result<kube::Config, CredentialsError> {
    let named = match path {
        Some(p) => Some(p.display().to_string()),
        None => std::env::var("KUBECONFIG").ok().filter(|v| !v.is_empty()),
    };
    let shown = match &named {
        Some(p) => p.clone(),
        None => {
            let Some(home) = std::env::var_os("HOME") else {
                return Err(CredentialsError::Missing(
                    "KUBECONFIG is not set and neither is HOME".into(),
                ));
            };
            let default = Path::new(&home).join(".kube/config");
            if !default.exists() {
                return Err(CredentialsError::Missing(format!(
                    "KUBECONFIG is not set and {} does not exist",
                    default.display()
                )));
            }
            default.display().to_string()
        }
    };
    let loaded = match path {
        Some(p) => {
            let file = kube::config::Kubeconfig::read_from(p).map_err(|e| {
                CredentialsError::Kubeconfig {
                    path: shown.clone(),
                    reason: e.to_string(),
                }
            })?;
            kube::Config::from_custom_kubeconfig(file, &Default::default()).await
        }
        None => kube::Config::from_kubeconfig(&Default::default()).await,
    };
    loaded.map_err(|e| CredentialsError::Kubeconfig {
        path: shown,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_say_what_was_tried_and_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let c = Credentials::InCluster {
            dir: dir.path().into(),
            host: "10.0.0.1".into(),
            port: "443".into(),
        };
        let err = c.load().await.unwrap_err().to_string();
        assert!(err.contains("in-cluster") && err.contains("token"), "{err}");
        let c = Credentials::InCluster {
            dir: dir.path().into(),
            host: "10.0.0.1".into(),
            port: String::new(),
        };
        let err = c.load().await.unwrap_err().to_string();
        assert!(err.contains("KUBERNETES_SERVICE_PORT"), "{err}");

        let missing = dir.path().join("nope");
        let err = Credentials::Kubeconfig(Some(missing.clone()))
            .load()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
        assert!(err.contains("KUBECONFIG"), "{err}");
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(join_host_port("fd00::1", "443"), "[fd00::1]:443");
        assert_eq!(join_host_port("10.0.0.1", "6443"), "10.0.0.1:6443");
    }
}
