//! Where an etcd target points, and one shared client per distinct cluster.
//!
//! Two target shapes name an etcd cluster and a key (go-zero uses both):
//!
//! | target | hosts | key |
//! |---|---|---|
//! | `etcd://h1:2379,h2:2379/trans` | `h1:2379`, `h2:2379` | `trans` |
//! | `etcd:///h1:2379,h2:2379?key=trans` | `h1:2379`, `h2:2379` | `trans` |
//!
//! Credentials come from `user:password@` in the authority or from `?user=&password=`.
//!
//! Every registration and watch of a process that talks to the same hosts with the same
//! credentials shares one [`etcd_client::Client`] (one set of HTTP/2 connections); it is
//! closed once the last user is gone.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use driver_core::{Error, Result, Target};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use tokio::sync::Mutex;

/// How long one etcd request (get, put, grant, revoke) may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long connecting to one etcd member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 keep-alive: notices a dead member behind a silent network within seconds.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Which etcd cluster to talk to, and as whom. Equal configs share one client.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EtcdConfig {
    hosts: Vec<String>,
    user: Option<String>,
    password: Option<String>,
    tls: Option<EtcdTls>,
}

/// TLS to etcd: files read when the client connects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct EtcdTls {
    /// PEM file of the CA that signed etcd's certificate (`?tls_ca=`); the system's
    /// roots are not used, as etcd clusters usually run their own CA.
    pub ca: Option<PathBuf>,
    /// PEM files of a client certificate and its key, for etcd's `--client-cert-auth`
    /// (`?tls_cert=&tls_key=`).
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name etcd's certificate is checked against, when not the host's (`?tls_server_name=`).
    pub server_name: Option<String>,
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("hosts", &self.hosts)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .finish()
    }
}

impl EtcdConfig {
    /// A config for `hosts` (`host:port` or `http://host:port`) without credentials.
    pub fn new<S: Into<String>>(hosts: impl IntoIterator<Item = S>) -> Self {
        Self {
            hosts: hosts.into_iter().map(Into::into).collect(),
            user: None,
            password: None,
            tls: None,
        }
    }

    /// Talks to etcd over TLS (`https`).
    pub fn with_tls(mut self, tls: EtcdTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The TLS settings, if any.
    pub fn tls(&self) -> Option<&EtcdTls> {
        self.tls.as_ref()
    }

    /// Authenticates as `user` with `password`.
    pub fn with_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self.password = Some(password.into());
        self
    }

    /// The hosts, as given.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// The user name, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

/// An etcd target split into the cluster to talk to and the key (service name) it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdTarget {
    /// The cluster and credentials.
    pub config: EtcdConfig,
    /// The key as given (`trans`, `trans.rpc`, ...).
    pub key: String,
}

impl EtcdTarget {
    /// Splits `target` in either shape of the [module docs](self).
    ///
    /// ```
    /// use driver_core::Target;
    /// use driver_etcd::EtcdTarget;
    /// let old = EtcdTarget::from_target(&Target::parse("etcd://h1:2379,h2:2379/trans").unwrap()).unwrap();
    /// let new = EtcdTarget::from_target(&Target::parse("etcd:///h1:2379,h2:2379?key=trans").unwrap()).unwrap();
    /// assert_eq!(old, new);
    /// assert_eq!(old.config.hosts(), ["h1:2379", "h2:2379"]);
    /// assert_eq!(old.key, "trans");
    /// ```
    pub fn from_target(target: &Target) -> Result<Self> {
        let bad = |reason: String| Error::BadTarget {
            target: target.to_string(),
            reason,
        };
        let (hosts, key) = if target.hosts().is_empty() {
            let hosts: Vec<String> = target
                .endpoint_list()
                .into_iter()
                .map(str::to_string)
                .collect();
            if hosts.is_empty() {
                return Err(bad(format!(
                    "no etcd host given; write {s}://host:2379/key or {s}:///host:2379?key=key",
                    s = target.scheme()
                )));
            }
            let Some(key) = target.query("key") else {
                return Err(bad(format!(
                    "the hosts follow three slashes but no `?key=` names the service; write \
                     {s}:///{h}?key=NAME or {s}://{h}/NAME",
                    s = target.scheme(),
                    h = hosts.join(",")
                )));
            };
            (hosts, key.to_string())
        } else {
            let key = match target.query("key") {
                Some(k) if target.endpoint().is_empty() => k.to_string(),
                _ => target.endpoint().to_string(),
            };
            (target.hosts().to_vec(), key)
        };
        if key.is_empty() {
            return Err(bad(format!(
                "the service key is empty; write {}://{}/NAME",
                target.scheme(),
                hosts.join(",")
            )));
        }
        let user = target.user().or(target.query("user"));
        let password = target.password().or(target.query("password"));
        let mut config = EtcdConfig::new(hosts);
        if let Some(user) = user {
            config = config.with_user(user, password.unwrap_or_default());
        }
        if let Some(tls) = tls_from_query(target).map_err(bad)? {
            config = config.with_tls(tls);
        }
        Ok(Self { config, key })
    }
}

/// `?tls=true`, `?tls_ca=`, `?tls_cert=` + `?tls_key=`, `?tls_server_name=`; any of them
/// turns TLS on.
fn tls_from_query(target: &Target) -> std::result::Result<Option<EtcdTls>, String> {
    let on = match target.query("tls") {
        None => false,
        Some("true" | "1") => true,
        Some("false" | "0") => false,
        Some(other) => return Err(format!("tls=`{other}`: write tls=true or tls=false")),
    };
    let tls = EtcdTls {
        ca: target.query("tls_ca").map(PathBuf::from),
        identity: match (target.query("tls_cert"), target.query("tls_key")) {
            (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
            (None, None) => None,
            _ => return Err("tls_cert and tls_key go together: give both files".into()),
        },
        server_name: target.query("tls_server_name").map(str::to_string),
    };
    Ok((on || tls != EtcdTls::default()).then_some(tls))
}

fn read_pem(hosts: &str, what: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        registry_error(
            hosts,
            format!("cannot read the TLS {what} file {}: {e}", path.display()),
        )
    })
}

fn tls_options(hosts: &str, tls: &EtcdTls) -> Result<TlsOptions> {
    let mut options = TlsOptions::new();
    if let Some(ca) = &tls.ca {
        options = options.ca_certificate(Certificate::from_pem(read_pem(hosts, "CA", ca)?));
    }
    if let Some((cert, key)) = &tls.identity {
        options = options.identity(Identity::from_pem(
            read_pem(hosts, "client certificate", cert)?,
            read_pem(hosts, "client key", key)?,
        ));
    }
    if let Some(name) = &tls.server_name {
        options = options.domain_name(name.clone());
    }
    Ok(options)
}

type Clients = HashMap<EtcdConfig, Weak<Client>>;

static CLIENTS: LazyLock<Mutex<Clients>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The process's client for `config`, created on first use and shared while anyone
/// holds it. Connecting is lazy: this fails only for unusable hosts or, with
/// credentials, when etcd cannot be reached to log in.
pub async fn shared_client(config: &EtcdConfig) -> Result<Arc<Client>> {
    let mut clients = CLIENTS.lock().await;
    if let Some(client) = clients.get(config).and_then(Weak::upgrade) {
        return Ok(client);
    }
    let mut options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
        .with_keep_alive_while_idle(true);
    if let Some(user) = &config.user {
        options = options.with_user(user.clone(), config.password.clone().unwrap_or_default());
    }
    if let Some(tls) = &config.tls {
        options = options.with_tls(tls_options(&config.hosts.join(","), tls)?);
    }
    let connect = Client::connect(&config.hosts, Some(options));
    let client = match tokio::time::timeout(REQUEST_TIMEOUT, connect).await {
        Ok(Ok(client)) => Arc::new(client),
        Ok(Err(e)) => return Err(etcd_error(&config.hosts.join(","), "connect", e)),
        Err(_) => {
            return Err(registry_error(
                &config.hosts.join(","),
                format!("connecting timed out after {REQUEST_TIMEOUT:?}; is etcd running there?"),
            ));
        }
    };
    clients.retain(|_, w| w.strong_count() > 0);
    clients.insert(config.clone(), Arc::downgrade(&client));
    tracing::debug!(hosts = ?config.hosts, "created etcd client");
    Ok(client)
}

pub(crate) fn registry_error(target: &str, message: impl Into<String>) -> Error {
    Error::Registry {
        target: target.to_string(),
        message: message.into(),
    }
}

pub(crate) fn etcd_error(target: &str, what: &str, e: etcd_client::Error) -> Error {
    registry_error(target, format!("etcd {what} failed: {e}"))
}

/// Runs one etcd request with [`REQUEST_TIMEOUT`], flattening both failures into text.
pub(crate) async fn bounded<T>(
    what: &str,
    fut: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> std::result::Result<T, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("etcd {what} failed: {e}")),
        Err(_) => Err(format!("etcd {what} timed out after {REQUEST_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<EtcdTarget> {
        EtcdTarget::from_target(&Target::parse(t).unwrap())
    }

    #[test]
    fn both_forms_and_credentials() {
        let t = parse("etcd://u:p@h1:1,h2:2/svc").unwrap();
        assert_eq!(t.config.hosts(), ["h1:1", "h2:2"]);
        assert_eq!(t.config.user(), Some("u"));
        assert_eq!(t.key, "svc");
        let t = parse("etcd:///h1:1?key=svc&user=u&password=p").unwrap();
        assert_eq!(t.config, EtcdConfig::new(["h1:1"]).with_user("u", "p"));
        assert_eq!(t.key, "svc");
        assert!(!format!("{:?}", t.config).contains("\"p\""));
    }

    #[test]
    fn errors_say_how_to_write_it() {
        let e = parse("etcd:///h1:1").unwrap_err().to_string();
        assert!(e.contains("?key="), "{e}");
        let e = parse("etcd://h1:1/").unwrap_err().to_string();
        assert!(e.contains("key is empty"), "{e}");
        let e = parse("etcd:///?key=x").unwrap_err().to_string();
        assert!(e.contains("no etcd host"), "{e}");
    }
}
