//! Where an etcd target points, and one shared client per distinct cluster.
//!
//! Two target shapes name an etcd cluster and a key (go-zero uses both):
//!
//! | target | hosts | key |
//! |---|---|---|
//! | `etcd://h1:2379,h2:2379/trans` | `h1:2379`, `h2:2379` | `trans` |
//! | `etcd:///h1:2379,h2:2379?key=trans` | `h1:2379`, `h2:2379` | `trans` |
//!
//! Credentials come from `user:password@` in the authority or from `?user=&password=`;
//! TLS from `?tls_ca=&tls_cert=&tls_key=&tls_server_name=&tls=`, the parameters every
//! engine shares ([`dtmdriver_core::tls_files`]), or from `https://` hosts (which then
//! need `?tls_ca=`).
//!
//! Every registration and watch of a process that talks to the same hosts with the same
//! credentials shares one [`EtcdClient`] (one set of HTTP/2 connections); it is closed
//! once the last user is gone (a [`SharedByKey`]: the first users of a config wait for
//! its one login; users of other configs do not).

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use dtmdriver_core::resolve::DirectResolver;
use dtmdriver_core::shared::SharedByKey;
use dtmdriver_core::{Channel, Error, Result, Target, TlsConnector, TlsFiles};

use crate::api::{EtcdClient, describe};
use crate::request::{REQUEST_TIMEOUT, failure_hint, registry_error};

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
    tls: Option<TlsFiles>,
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

    /// Talks to etcd over TLS (`https`), with the files of `tls` (read when the client
    /// connects).
    pub fn with_tls(mut self, tls: TlsFiles) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The TLS settings, if any.
    pub fn tls(&self) -> Option<&TlsFiles> {
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
    /// use dtmdriver_core::Target;
    /// use dtmdriver_etcd::EtcdTarget;
    /// let old = EtcdTarget::from_target(&Target::parse("etcd://h1:2379,h2:2379/trans").unwrap()).unwrap();
    /// let new = EtcdTarget::from_target(&Target::parse("etcd:///h1:2379,h2:2379?key=trans").unwrap()).unwrap();
    /// assert_eq!(old, new);
    /// assert_eq!(old.config.hosts(), ["h1:2379", "h2:2379"]);
    /// assert_eq!(old.key, "trans");
    /// ```
    pub fn from_target(target: &Target) -> Result<Self> {
        let (hosts, key) = if target.hosts().is_empty() {
            let hosts: Vec<String> = target
                .endpoint_list()
                .into_iter()
                .map(str::to_string)
                .collect();
            if hosts.is_empty() {
                return Err(Error::bad_target(
                    target,
                    format!(
                        "no etcd host given; write {s}://host:2379/key or {s}:///host:2379?key=key",
                        s = target.scheme()
                    ),
                ));
            }
            // The authority's hosts were checked by `Target::parse`; these were not.
            for host in &hosts {
                dtmdriver_core::address::check_host(host)
                    .map_err(|reason| Error::bad_target(target, reason))?;
            }
            let Some(key) = target.query("key") else {
                return Err(Error::bad_target(
                    target,
                    format!(
                        "the hosts follow three slashes but no `?key=` names the service; write \
                     {s}:///{h}?key=NAME or {s}://{h}/NAME",
                        s = target.scheme(),
                        h = hosts.join(",")
                    ),
                ));
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
            return Err(Error::bad_target(
                target,
                format!(
                    "the service key is empty; write {}://{}/NAME",
                    target.scheme(),
                    hosts.join(",")
                ),
            ));
        }
        let user = target.user().or(target.query("user"));
        let password = target.password().or(target.query("password"));
        let mut config = EtcdConfig::new(hosts);
        if let Some(user) = user {
            config = config.with_user(user, password.unwrap_or_default());
        }
        if let Some(tls) =
            TlsFiles::from_target(target).map_err(|reason| Error::bad_target(target, reason))?
        {
            config = config.with_tls(tls);
        }
        Ok(Self { config, key })
    }
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
    let tls = config.tls.clone().or_else(|| https.then(TlsFiles::default));
    if let Some(tls) = &tls {
        let config = tls
            .client_config()
            .map_err(|e| registry_error(&joined, e))?;
        let connector = TlsConnector::new(config);
        builder = builder.tls(match &tls.server_name {
            Some(name) => connector.with_server_name(name),
            None => connector,
        });
    }
    builder
        .connect()
        .map_err(|e| registry_error(&joined, format!("etcd hosts: {e}")))
}

/// One client per config; concurrent first users wait for its one login.
static CLIENTS: LazyLock<SharedByKey<EtcdConfig, EtcdClient>> = LazyLock::new(SharedByKey::default);

/// The process's client for `config`, created on first use and shared while anyone
/// holds it. Connecting is lazy: this fails only for unusable hosts or, with
/// credentials, when etcd cannot be reached to log in.
pub async fn shared_client(config: &EtcdConfig) -> Result<Arc<EtcdClient>> {
    CLIENTS
        .get_or_try_insert_async(config, || new_client(config))
        .await
}

/// A new client for `config` (logged in, with credentials).
async fn new_client(config: &EtcdConfig) -> Result<Arc<EtcdClient>> {
    // etcd's tokens die with the process (simple tokens) and after `--auth-token-ttl`
    // unused: unary calls refused for that log in again and are retried. Streams are not
    // covered; see `request::refresh_if_token_refused`.
    let credentials = config.user.as_ref().map(|user| {
        let password = config.password.clone().unwrap_or_default();
        (user.clone(), password)
    });
    let channel = members_channel(config)?;
    let connect = EtcdClient::connect(channel, credentials);
    let client = match tokio::time::timeout(REQUEST_TIMEOUT, connect).await {
        Ok(Ok(client)) => Arc::new(client),
        Ok(Err(e)) => {
            let message = format!("etcd connect failed: {}", describe(&e));
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
    tracing::debug!(hosts = ?config.hosts, "created etcd client");
    Ok(client)
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

    /// Issue #14: an unusable CA or client file surfaced as ``bad target `<tls>` ``,
    /// naming neither the file nor its parameter.
    #[tokio::test]
    async fn unusable_tls_files_name_the_file_and_the_parameter() {
        let dir = std::env::temp_dir().join(format!("etcd-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not pem").unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(
            &ca,
            test_support::TestPki::new(&["localhost"]).ca_pem.as_bytes(),
        )
        .unwrap();
        for (query, needles) in [
            (
                format!("tls_ca={}", garbage.display()),
                ["garbage.pem", "?tls_ca="],
            ),
            (
                format!(
                    "tls_ca={}&tls_cert={}&tls_key={}",
                    ca.display(),
                    garbage.display(),
                    ca.display()
                ),
                ["garbage.pem", "?tls_cert="],
            ),
            (
                format!(
                    "tls_ca={}&tls_cert={}&tls_key={}",
                    ca.display(),
                    ca.display(),
                    garbage.display()
                ),
                ["garbage.pem", "?tls_key="],
            ),
        ] {
            let t = parse(&format!("etcd://127.0.0.1:1/svc?{query}")).unwrap();
            let Err(err) = shared_client(&t.config).await else {
                panic!("{query}: accepted");
            };
            let err = err.to_string();
            for needle in needles {
                assert!(err.contains(needle), "{query}: {err}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
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
