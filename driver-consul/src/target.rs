//! Where a consul target points: [`ConsulTarget`], [`ConsulConfig`].
//!
//! A consul target names one agent's HTTP API and a service:
//!
//! ```text
//! consul://[user:password@]host[:8500]/SERVICE[?token=T][&dc=DC][&...]
//! ```
//!
//! * the port defaults to 8500;
//! * the ACL token comes from `?token=`, else from the `CONSUL_HTTP_TOKEN` environment
//!   variable (as consul's own tools do), and is sent as the `X-Consul-Token` header;
//! * `?dc=` picks the datacenter of health queries;
//! * `user:password@` is sent as HTTP basic auth (for an agent behind a proxy).
//!
//! # HTTPS
//!
//! `?tls=true` or any of `?tls_ca=`, `?tls_cert=` + `?tls_key=`, `?tls_server_name=`
//! talks HTTPS to the agent's HTTPS port (`ports { https = 8501 }` in consul's config),
//! with the parameters and meaning every engine shares ([`dtmdriver_core::tls_files`]):
//! `tls_ca` (required), a client certificate for an agent with `verify_incoming = true`,
//! a verification name when not the target's host.
//!
//! As consul's own tools do, `CONSUL_HTTP_SSL=true` turns HTTPS on for targets without
//! TLS parameters, and `CONSUL_CACERT`, `CONSUL_CLIENT_CERT` / `CONSUL_CLIENT_KEY` and
//! `CONSUL_TLS_SERVER_NAME` fill in what a TLS target does not give; `?tls=false` turns
//! HTTPS off whatever the environment says. The files are read when the first request
//! to the agent is made ([`crate::tls`]); errors name the file and the parameter to fix.

use std::fmt;

use dtmdriver_core::address::with_default_port;
use dtmdriver_core::{Error, Result, Target, TlsFiles};

/// The port of a consul agent's HTTP API when the target names none.
pub const DEFAULT_PORT: u16 = 8500;

/// The environment variable consul's tools read the ACL token from.
pub const TOKEN_ENV: &str = "CONSUL_HTTP_TOKEN";

/// `true` turns HTTPS on for targets without TLS parameters, as for consul's tools.
pub const HTTP_SSL_ENV: &str = "CONSUL_HTTP_SSL";
/// The CA file when a TLS target has no `?tls_ca=`.
pub const CACERT_ENV: &str = "CONSUL_CACERT";
/// The client certificate file when a TLS target has no `?tls_cert=`.
pub const CLIENT_CERT_ENV: &str = "CONSUL_CLIENT_CERT";
/// The client key file when a TLS target has no `?tls_key=`.
pub const CLIENT_KEY_ENV: &str = "CONSUL_CLIENT_KEY";
/// The verification name when a TLS target has no `?tls_server_name=`.
pub const TLS_SERVER_NAME_ENV: &str = "CONSUL_TLS_SERVER_NAME";

/// Which agent to talk to, and as whom. Equal configs share watches.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ConsulConfig {
    pub(crate) addr: String,
    pub(crate) token: Option<String>,
    pub(crate) basic_auth: Option<(String, String)>,
    pub(crate) tls: Option<TlsFiles>,
}

impl fmt::Debug for ConsulConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulConfig")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("user", &self.basic_auth.as_ref().map(|(u, _)| u))
            .field("tls", &self.tls)
            .finish()
    }
}

impl ConsulConfig {
    /// The agent at `addr` (`host:port`), without a token.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            token: None,
            basic_auth: None,
            tls: None,
        }
    }

    /// Talks HTTPS to the agent.
    pub fn with_tls(mut self, tls: TlsFiles) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The TLS settings, if the agent is talked to over HTTPS.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// Sends `token` as `X-Consul-Token` on every request.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sends HTTP basic auth on every request.
    pub fn with_basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.basic_auth = Some((user.into(), password.into()));
        self
    }

    /// The agent's `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether an ACL token is sent.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }
}

/// A consul target split into the agent, the service and the datacenter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsulTarget {
    /// The agent and credentials.
    pub config: ConsulConfig,
    /// The service name.
    pub service: String,
    /// The datacenter from `?dc=`, if any.
    pub dc: Option<String>,
}

impl ConsulTarget {
    /// Splits a target of the shape in the [module docs](self). The token falls back to
    /// `CONSUL_HTTP_TOKEN`, the TLS settings to `CONSUL_HTTP_SSL` and friends.
    ///
    /// ```
    /// use dtmdriver_core::Target;
    /// use dtmdriver_consul::ConsulTarget;
    /// let t = ConsulTarget::from_target(&Target::parse("consul://127.0.0.1/trans?dc=dc2&token=abc").unwrap()).unwrap();
    /// assert_eq!(t.config.addr(), "127.0.0.1:8500");
    /// assert_eq!(t.service, "trans");
    /// assert_eq!(t.dc.as_deref(), Some("dc2"));
    /// assert!(t.config.has_token());
    /// ```
    pub fn from_target(target: &Target) -> Result<Self> {
        Self::from_target_with_env(target, |name| std::env::var(name).ok())
    }

    fn from_target_with_env(target: &Target, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let host = match target.hosts() {
            [one] => one.clone(),
            [] => {
                return Err(Error::bad_target(
                    target,
                    format!(
                        "no consul agent address; write {}://host:8500/SERVICE",
                        target.scheme()
                    ),
                ));
            }
            many => {
                return Err(Error::bad_target(
                    target,
                    format!(
                        "a consul target names one agent, not {}; point it at the local agent \
                     (consul agents forward to the servers)",
                        many.join(",")
                    ),
                ));
            }
        };
        let addr = with_default_port(&host, DEFAULT_PORT);
        let service = target.endpoint().to_string();
        if service.is_empty() || service.contains('/') {
            return Err(Error::bad_target(
                target,
                format!(
                    "the service name after the host must be one non-empty path segment; write \
                 {}://{addr}/SERVICE",
                    target.scheme()
                ),
            ));
        }
        let mut config = ConsulConfig::new(addr);
        let token = target
            .query("token")
            .map(str::to_string)
            .or_else(|| env(TOKEN_ENV))
            .filter(|t| !t.is_empty());
        if let Some(token) = token {
            config = config.with_token(token);
        }
        if let Some(user) = target.user() {
            config = config.with_basic_auth(user, target.password().unwrap_or_default());
        }
        if let Some(tls) = TlsFiles::from_target_or(target, &TLS_FALLBACKS, &env)
            .map_err(|reason| Error::bad_target(target, reason))?
        {
            config = config.with_tls(tls);
        }
        let dc = target
            .query("dc")
            .filter(|d| !d.is_empty())
            .map(str::to_string);
        Ok(Self {
            config,
            service,
            dc,
        })
    }
}

/// consul's environment variables for absent TLS parameters, as its own tools read
/// them; see the [module docs](self#https).
const TLS_FALLBACKS: [(&str, &str); 5] = [
    ("tls", HTTP_SSL_ENV),
    ("tls_ca", CACERT_ENV),
    ("tls_cert", CLIENT_CERT_ENV),
    ("tls_key", CLIENT_KEY_ENV),
    ("tls_server_name", TLS_SERVER_NAME_ENV),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str, env: Option<&str>) -> Result<ConsulTarget> {
        parse_env(t, &[(TOKEN_ENV, env.unwrap_or_default())])
    }

    fn parse_env(t: &str, vars: &[(&str, &str)]) -> Result<ConsulTarget> {
        ConsulTarget::from_target_with_env(&Target::parse(t).unwrap(), |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn tls_parameters_and_environment() {
        let tls = |t: &str, vars: &[(&str, &str)]| parse_env(t, vars).map(|t| t.config.tls);
        // The parameters are dtmdriver-core's (tested there); here consul's fallbacks.
        assert_eq!(tls("consul://h/s", &[]).unwrap(), None);
        // consul's variables: HTTPS on, files filled in; the target's own win.
        let env = [
            (HTTP_SSL_ENV, "true"),
            (CACERT_ENV, "/env-ca.pem"),
            (TLS_SERVER_NAME_ENV, "env-name"),
        ];
        let t = tls("consul://h/s", &env).unwrap().unwrap();
        assert_eq!(t.ca, Some("/env-ca.pem".into()));
        assert_eq!(t.server_name.as_deref(), Some("env-name"));
        let t = tls("consul://h/s?tls_ca=/ca.pem", &env).unwrap().unwrap();
        assert_eq!(t.ca, Some("/ca.pem".into()));
        assert_eq!(tls("consul://h/s?tls=false", &env).unwrap(), None);
        // Environment files alone do not turn HTTPS on.
        assert_eq!(
            tls("consul://h/s", &[(CACERT_ENV, "/ca.pem")]).unwrap(),
            None
        );
        for (t, needle) in [
            ("consul://h/s?tls=true", "?tls_ca=FILE (PEM); the system"),
            ("consul://h/s?tls=true", "or set CONSUL_CACERT"),
            ("consul://h/s?tls=yes", "tls=true or tls=false"),
            (
                "consul://h/s?tls_ca=/a&tls_cert=/c",
                "tls_cert and tls_key go together",
            ),
        ] {
            let e = parse_env(t, &[]).unwrap_err().to_string();
            assert!(e.contains(needle), "{t}: {e}");
        }
    }

    #[test]
    fn targets_token_and_defaults() {
        let t = parse("consul://u:p@h:1/svc?token=a&dc=x", Some("env")).unwrap();
        assert_eq!(
            t.config,
            ConsulConfig::new("h:1")
                .with_token("a")
                .with_basic_auth("u", "p")
        );
        assert_eq!((t.service.as_str(), t.dc.as_deref()), ("svc", Some("x")));
        let t = parse("consul://h/svc", Some("env")).unwrap();
        assert_eq!(t.config, ConsulConfig::new("h:8500").with_token("env"));
        let t = parse("consul://[::1]/svc", None).unwrap();
        assert_eq!(t.config.addr(), "[::1]:8500");
        assert!(
            !format!("{:?}", parse("consul://h/s?token=secret", None).unwrap()).contains("secret")
        );
    }

    #[test]
    fn bad_targets_say_how_to_write_them() {
        for (t, needle) in [
            ("consul:///svc", "no consul agent"),
            ("consul://a:1,b:2/svc", "one agent"),
            ("consul://a:1/", "service name"),
        ] {
            let e = parse(t, None).unwrap_err().to_string();
            assert!(e.contains(needle), "{t}: {e}");
        }
    }
}
