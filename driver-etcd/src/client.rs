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

use driver_core::resolve::DirectResolver;
use driver_core::{Channel, Error, Result, Target, TlsConnector};
use etcd_client::{Client, ConnectOptions};
use tokio::sync::Mutex;

/// How long one etcd request (get, put, grant, revoke) may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long connecting to one etcd member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings while calls (watches, lease keep-alives) are open: a member behind a
/// silent network is found within two intervals. Above etcd's default
/// `--grpc-keepalive-min-time` (5 s), which closes connections that ping more often.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// The longest wait between redials of a member that is down.
const MEMBER_BACKOFF_MAX: Duration = Duration::from_secs(1);

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
            // The authority's hosts were checked by `Target::parse`; these were not.
            for host in &hosts {
                driver_core::address::check_host(host).map_err(bad)?;
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
    if !(on || tls != EtcdTls::default()) {
        return Ok(None);
    }
    if tls.ca.is_none() {
        return Err(NO_CA.into());
    }
    Ok(Some(tls))
}

/// Why TLS without `?tls_ca=` is refused.
const NO_CA: &str = "no CA to check etcd's certificate with: give the CA that signed it with \
                     ?tls_ca=/path/ca.pem (the system's roots are not used; for a publicly \
                     trusted certificate pass the system's bundle, e.g. \
                     tls_ca=/etc/ssl/certs/ca-certificates.crt)";

fn read_pem(hosts: &str, what: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        registry_error(
            hosts,
            format!("cannot read the TLS {what} file {}: {e}", path.display()),
        )
    })
}

/// The TLS connector for `tls`, from its files.
fn tls_connector(hosts: &str, tls: &EtcdTls) -> Result<TlsConnector> {
    let Some(ca) = &tls.ca else {
        return Err(registry_error(hosts, NO_CA));
    };
    let ca = read_pem(hosts, "CA", ca)?;
    let identity = match &tls.identity {
        Some((cert, key)) => Some((
            read_pem(hosts, "client certificate", cert)?,
            read_pem(hosts, "client key", key)?,
        )),
        None => None,
    };
    let identity = identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice()));
    let connector = TlsConnector::from_pem(&ca, identity)
        .map_err(|e| registry_error(hosts, format!("TLS setup: {e}")))?;
    Ok(match &tls.server_name {
        Some(name) => connector.with_server_name(name),
        None => connector,
    })
}

/// The balancing channel to the members of `config`'s cluster: calls go to live
/// members, a member that refuses connections is ejected (and redialled with backoff)
/// and its calls retried on another, so one dead member costs no call.
fn members_channel(config: &EtcdConfig) -> Result<Channel> {
    let hosts: Vec<&str> = config
        .hosts
        .iter()
        .map(|h| {
            h.strip_prefix("http://")
                .or_else(|| h.strip_prefix("https://"))
                .unwrap_or(h)
                .trim_end_matches('/')
        })
        .collect();
    let joined = config.hosts.join(",");
    let mut builder = Channel::builder(&format!("direct:///{}", hosts.join(",")))
        .resolver(Arc::new(DirectResolver))
        .connect_timeout(CONNECT_TIMEOUT)
        .backoff_max(MEMBER_BACKOFF_MAX)
        .keepalive(KEEPALIVE_INTERVAL);
    // `https://` hosts ask for TLS too (and, without a CA, fail saying to give one).
    let https = config.hosts.iter().any(|h| h.starts_with("https://"));
    let tls = config.tls.clone().or_else(|| https.then(EtcdTls::default));
    if let Some(tls) = &tls {
        builder = builder.tls(tls_connector(&joined, tls)?);
    }
    builder
        .connect()
        .map_err(|e| registry_error(&joined, format!("etcd hosts: {e}")))
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
    let mut options = ConnectOptions::new();
    if let Some(user) = &config.user {
        // etcd's tokens die with the process (simple tokens) and after
        // `--auth-token-ttl` unused: unary calls refused for that log in again and are
        // retried. Streams are not covered; see [`refresh_if_token_refused`].
        options = options
            .with_user(user.clone(), config.password.clone().unwrap_or_default())
            .with_auto_token_refresh(true);
    }
    let channel = members_channel(config)?;
    let channel = etcd_client::Channel::Custom(tower::util::BoxCloneSyncService::new(channel));
    let connect = Client::from_channel(channel, Some(options));
    let client = match tokio::time::timeout(REQUEST_TIMEOUT, connect).await {
        Ok(Ok(client)) => Arc::new(client),
        Ok(Err(e)) => {
            let message = format!("etcd connect failed: {e}");
            let hint = failure_hint(&message);
            return Err(registry_error(
                &config.hosts.join(","),
                format!("{message}; {hint}"),
            ));
        }
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

/// How long one attempt of a registration write may take before it is tried again. A
/// write proposed just after the etcd leader died is lost with it and hangs until
/// etcd's own request timeout (7 s with default settings); after the election (about a
/// second) the same write goes through.
const WRITE_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
/// Attempts of a registration write.
const WRITE_ATTEMPTS: u32 = 3;
/// The pause before a write is tried again.
const WRITE_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Runs an idempotent write (a lease grant, a put under a lease), each attempt bounded
/// by [`WRITE_ATTEMPT_TIMEOUT`], again while it times out, etcd says its leader is gone,
/// or the member it went to died under it (`UNAVAILABLE`, not a TLS failure), at most
/// [`WRITE_ATTEMPTS`] times; flattens the failure into text. A lease granted by an
/// attempt whose answer was lost is never used and expires with its TTL.
pub(crate) async fn write_retrying<T, F, Fut>(
    what: &str,
    mut attempt: F,
) -> std::result::Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    for n in 1..=WRITE_ATTEMPTS {
        let why = match tokio::time::timeout(WRITE_ATTEMPT_TIMEOUT, attempt()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if leader_lost(&e) || member_lost(&e) => {
                format!("etcd {what} failed: {e}")
            }
            Ok(Err(e)) => return Err(format!("etcd {what} failed: {e}")),
            Err(_) => format!("etcd {what} timed out after {WRITE_ATTEMPT_TIMEOUT:?}"),
        };
        if n == WRITE_ATTEMPTS {
            return Err(format!("{why} (attempt {n} of {WRITE_ATTEMPTS})"));
        }
        tracing::debug!(attempt = n, %why, "etcd write retried");
        tokio::time::sleep(WRITE_RETRY_PAUSE).await;
    }
    unreachable!("the attempts loop returns")
}

/// A call that failed because its member went away (or none could be reached), as
/// opposed to a refusal or a TLS failure, which a retry would only repeat.
fn member_lost(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::Unavailable && tls_hint(status.message()).is_none()
        }
        _ => false,
    }
}

/// What to do about a failure that is a TLS problem, if it is one: the server's
/// certificate not trusted, or the client's refused by etcd.
pub(crate) fn tls_hint(message: &str) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    if m.contains("asked for a client certificate")
        || (m.contains("alert")
            && (m.contains("badcertificate") || m.contains("certificaterequired")))
    {
        Some(
            "etcd refused the client's TLS certificate (or its absence): give a client \
             certificate signed by a CA etcd trusts with ?tls_cert=/path/cert.pem&tls_key=/path/key.pem",
        )
    } else if m.contains("certificate") || m.contains("tls") {
        Some(
            "etcd's TLS certificate was not accepted: give the CA that signed it with \
             ?tls_ca=/path/ca.pem (and ?tls_server_name= if it names another host)",
        )
    } else {
        None
    }
}

/// What to do about a failed etcd request, from its message: the TLS or authentication
/// fix when it is one of those, else to check that etcd runs where the target says.
pub(crate) fn failure_hint(message: &str) -> &'static str {
    tls_hint(message)
        .or_else(|| auth_hint(message))
        .unwrap_or("is etcd running at the target's hosts?")
}

/// What to do about a failure that is an authentication or permission refusal, if it is
/// one.
pub(crate) fn auth_hint(message: &str) -> Option<&'static str> {
    if message.contains("user name is empty") {
        Some(
            "etcd requires authentication: give the user in the target, \
             etcd://USER:PASSWORD@host:2379/key or ?user=USER&password=PASSWORD",
        )
    } else if message.contains("authentication failed") {
        Some("etcd refused the user name or password given in the target: check both")
    } else if message.contains("invalid auth token") {
        Some(
            "etcd no longer accepts the client's auth token (etcd restarted, or \
             --auth-token-ttl passed); the client logs in again",
        )
    } else if message.contains("permission denied") {
        Some(
            "the etcd user may lack permission on the key: grant its role readwrite on \
             the key's prefix (etcdctl role grant-permission ROLE readwrite --prefix=true PREFIX)",
        )
    } else {
        None
    }
}

/// After a failure whose message says etcd refused the client's auth token, logs in
/// again (bounded by [`REQUEST_TIMEOUT`]); a no-op for other failures and clients
/// without credentials. etcd-client refreshes the token for unary calls itself, but not
/// for streams: a watch created with a dead token is cancelled with `permission denied`.
/// Returns whether a refresh was made and worked.
pub(crate) async fn refresh_if_token_refused(client: &Client, why: &str) -> bool {
    if !(why.contains("invalid auth token") || why.contains("permission denied")) {
        return false;
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, client.refresh_token()).await {
        Ok(Ok(())) => {
            tracing::debug!("logged in to etcd again after a refused auth token");
            true
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "logging in to etcd again failed");
            false
        }
        Err(_) => false,
    }
}

/// etcd's answers while it has no leader, or lost a proposal to a leader change.
fn leader_lost(e: &etcd_client::Error) -> bool {
    let text = e.to_string();
    ["no leader", "leader changed", "request timed out"]
        .iter()
        .any(|s| text.contains(s))
}

/// The largest response the engine reads from etcd: 256 MiB. etcd-client keeps tonic's
/// 4 MiB default, which a listing of ~60,000 go-zero instances already passes (etcd
/// itself serves ranges of any size); a listing past this is refused with an error that
/// says so.
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// Says what a refused oversized response means, for `what` (e.g. the listing of a
/// prefix); other errors pass unchanged.
pub(crate) fn explain_oversized(error: String, what: &str) -> String {
    if error.contains("message length too large") {
        format!(
            "{what} is larger than {} MiB, more than this engine reads at once: {error}",
            MAX_RESPONSE_BYTES >> 20
        )
    } else {
        error
    }
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

    #[tokio::test]
    async fn https_hosts_without_a_ca_say_to_give_one() {
        let Err(err) = shared_client(&EtcdConfig::new(["https://127.0.0.1:1"])).await else {
            panic!("an https:// host without a CA was accepted");
        };
        let err = err.to_string();
        assert!(err.contains("?tls_ca="), "{err}");
    }

    #[test]
    fn failures_name_their_fix() {
        // etcd's own messages (etcdserver/api/v3rpc/rpctypes).
        let empty = "etcd put failed: grpc request error: status: InvalidArgument, message: \"etcdserver: user name is empty\"";
        assert!(
            failure_hint(empty).contains("USER:PASSWORD@"),
            "{}",
            failure_hint(empty)
        );
        assert!(failure_hint(empty).contains("?user="));
        let wrong =
            "etcd connect failed: etcdserver: authentication failed, invalid user ID or password";
        assert!(failure_hint(wrong).contains("check both"));
        let denied = "etcd cancelled the watch of our key: etcdserver: permission denied";
        assert!(failure_hint(denied).contains("grant-permission"));
        assert!(failure_hint("etcd put failed: connection refused").contains("is etcd running"));
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

    /// Issue #11 item 6: the three-slash form's hosts and TLS without a CA were only
    /// found out when dialling.
    #[test]
    fn three_slash_hosts_and_tls_without_a_ca_are_refused_up_front() {
        for (target, why) in [
            ("etcd:///h:99999?key=svc", "port `99999`"),
            ("etcd:///h1:2379,::1:2379?key=svc", "brackets"),
            ("etcd:///h1:2379,h:0?key=svc", "port `0`"),
            ("etcd://h:2379/svc?tls=true", "?tls_ca="),
            ("etcd://h:2379/svc?tls_server_name=x", "?tls_ca="),
        ] {
            let e = parse(target).unwrap_err().to_string();
            assert!(e.contains(why), "{target}: {e}");
        }
        assert!(parse("etcd://h:2379/svc?tls=true&tls_ca=/ca.pem").is_ok());
        assert!(parse("etcd://h:2379/svc?tls=false").is_ok());
    }
}
