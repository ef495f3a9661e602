//! Dial and registration targets.
//!
//! A target names where instances of a service live, in the shape gRPC resolvers use:
//! `scheme://[user[:password]@]authority/endpoint[?query]`. The authority is a comma
//! separated host list (Go's `net/url` rejects commas there since Go 1.26; we accept
//! them). The forms in use by the Go ecosystem all parse:
//!
//! | target | hosts | endpoint | query |
//! |---|---|---|---|
//! | `etcd://h1:2379,h2:2379/trans` (go-zero ≤ 1.10.1) | `h1:2379`, `h2:2379` | `trans` | |
//! | `etcd:///h1:2379,h2:2379?key=trans` (go-zero ≥ 1.10.2) | | `h1:2379,h2:2379` | `key=trans` |
//! | `direct:///10.0.0.1:8080,10.0.0.2:8080` | | `10.0.0.1:8080,10.0.0.2:8080` | |
//! | `discovery:///busi` (kratos) | | `busi` | |
//! | `consul://user:pw@127.0.0.1:8500/busi?tag=x` | `127.0.0.1:8500` | `busi` | `tag=x` |
//!
//! A string with no `://` is a plain address (`localhost:8080`), dialled directly, as
//! gRPC's `passthrough` does.
//!
//! ```
//! use dtmdriver_core::Target;
//! let t = Target::parse("etcd://127.0.0.1:2379,127.0.0.1:22379/trans?user=root").unwrap();
//! assert_eq!(t.scheme(), "etcd");
//! assert_eq!(t.hosts(), ["127.0.0.1:2379", "127.0.0.1:22379"]);
//! assert_eq!(t.endpoint(), "trans");
//! assert_eq!(t.query("user"), Some("root"));
//! ```

use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::address::check_host;
use crate::error::{Error, Result};

/// The scheme given to targets without `://` (plain `host:port` addresses).
pub const PASSTHROUGH_SCHEME: &str = "passthrough";

/// A parsed target. See the [module docs](self) for the accepted forms.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    raw: String,
    scheme: String,
    user: Option<String>,
    password: Option<String>,
    hosts: Vec<String>,
    endpoint: String,
    query: Vec<(String, String)>,
}

impl Target {
    /// Parses a target; the error names the part that is wrong.
    pub fn parse(target: &str) -> Result<Self> {
        if target.trim().is_empty() {
            return Err(Error::bad_target(
                target,
                "the target is empty; write scheme://host:port/name, e.g. etcd://127.0.0.1:2379/trans",
            ));
        }
        if target.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::bad_target(
                target,
                "it contains white space or control characters",
            ));
        }
        let Some((scheme, rest)) = target.split_once("://") else {
            // A plain address, dialled as is.
            if target.contains('/') {
                return Err(Error::bad_target(
                    target,
                    "it has a '/' but no scheme; write scheme://host/name (e.g. etcd://127.0.0.1:2379/trans) or a plain host:port",
                ));
            }
            check_host(target).map_err(|reason| Error::bad_target(target, reason))?;
            return Ok(Self {
                raw: target.to_string(),
                scheme: PASSTHROUGH_SCHEME.to_string(),
                user: None,
                password: None,
                hosts: Vec::new(),
                endpoint: target.to_string(),
                query: Vec::new(),
            });
        };
        let scheme_ok = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok {
            return Err(Error::bad_target(
                target,
                format!(
                    "scheme `{scheme}` must start with a letter and hold only letters, digits, '+', '-', '.'"
                ),
            ));
        }
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let (authority, endpoint) = match before_query.split_once('/') {
            Some((a, e)) => (a, e),
            None => (before_query, ""),
        };
        let (userinfo, host_list) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = match u.split_once(':') {
                    Some((user, pass)) => (user, Some(pass)),
                    None => (u, None),
                };
                if user.is_empty() {
                    return Err(Error::bad_target(
                        target,
                        "the user name before '@' is empty",
                    ));
                }
                let user = decode(user)
                    .map_err(|e| Error::bad_target(target, format!("user name: {e}")))?;
                let pass = pass
                    .map(decode)
                    .transpose()
                    .map_err(|e| Error::bad_target(target, format!("password: {e}")))?;
                (Some(user), pass)
            }
        };
        let hosts = if host_list.is_empty() {
            Vec::new()
        } else {
            host_list
                .split(',')
                .map(|h| check_host(h).map(|()| h.to_string()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|reason| Error::bad_target(target, reason))?
        };
        let endpoint =
            decode(endpoint).map_err(|e| Error::bad_target(target, format!("path: {e}")))?;
        let query = match query {
            None => Vec::new(),
            Some(q) => form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        };
        Ok(Self {
            raw: target.to_string(),
            scheme: scheme.to_ascii_lowercase(),
            user,
            password,
            hosts,
            endpoint,
            query,
        })
    }

    /// The target exactly as given.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The scheme, lower-cased (`passthrough` for a plain address).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The user from `user:password@`, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The password from `user:password@`, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The hosts of the authority (`h1:2379,h2:2379`), empty for `scheme:///…`.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// The part after the authority's `/`, percent-decoded, without the leading `/`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The endpoint split on commas, for lists such as `direct:///a:1,b:2`.
    pub fn endpoint_list(&self) -> Vec<&str> {
        self.endpoint
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// The first value of a query parameter.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter holding a duration (`?wait=14s`), `None` when absent. The value
    /// must lie in `range`; the error names the parameter, the value and the range (see
    /// [`duration`](crate::duration) for the grammar).
    ///
    /// ```
    /// use std::time::Duration;
    /// use dtmdriver_core::Target;
    /// let t = Target::parse("consul://h/svc?wait=99999999999999999999s").unwrap();
    /// let range = Duration::from_millis(1)..=Duration::from_secs(600);
    /// assert_eq!(t.query_duration("tag", &range).unwrap(), None);
    /// assert!(t.query_duration("wait", &range).unwrap_err().to_string().contains("from 1ms to 10m"));
    /// ```
    pub fn query_duration(
        &self,
        key: &str,
        range: &RangeInclusive<Duration>,
    ) -> Result<Option<Duration>> {
        self.query(key)
            .map(|text| {
                crate::duration::parse_duration(key, text, range)
                    .map_err(|reason| Error::bad_target(&self.raw, reason))
            })
            .transpose()
    }

    /// The target of service `name` in `registry`, a target without a path
    /// (`etcd://h1:2379,h2:2379[?q]`) whose scheme is one of `schemes` (each with an
    /// example to write): `etcd://h1:2379,h2:2379/NAME[?q][&extra…]`. The error names the
    /// registry and what to write. Name-only targets that carry their registry
    /// (`discovery:///NAME?registry=…`, `registry://NAME?registry=…`) resolve through it.
    ///
    /// ```
    /// use dtmdriver_core::Target;
    /// let etcd = [("etcd", "etcd://HOST:2379")];
    /// let t = Target::in_registry("etcd://h:2379?user=u", "busi", &etcd, &["group=blue"]).unwrap();
    /// assert_eq!(t.as_str(), "etcd://h:2379/busi?user=u&group=blue");
    /// assert!(Target::in_registry("etcd://h:2379/x", "busi", &etcd, &[]).is_err());
    /// ```
    pub fn in_registry(
        registry: &str,
        name: &str,
        schemes: &[(&str, &str)],
        extra_query: &[&str],
    ) -> Result<Self> {
        let parsed = Self::parse(registry)?;
        if !schemes.iter().any(|(s, _)| *s == parsed.scheme()) {
            let names: Vec<&str> = schemes.iter().map(|(s, _)| *s).collect();
            let examples: Vec<&str> = schemes.iter().map(|(_, e)| *e).collect();
            return Err(Error::bad_target(
                registry,
                format!(
                    "registry scheme `{}` is not {}; write {}",
                    parsed.scheme(),
                    names.join(" or "),
                    examples.join(" or ")
                ),
            ));
        }
        if parsed.hosts().is_empty() {
            return Err(Error::bad_target(
                registry,
                format!("no registry host; write {}://HOST:PORT", parsed.scheme()),
            ));
        }
        if !parsed.endpoint().is_empty() {
            return Err(Error::bad_target(
                registry,
                format!("a registry names no service; drop `/{}`", parsed.endpoint()),
            ));
        }
        let (base, own) = registry.split_once('?').unwrap_or((registry, ""));
        let query: Vec<&str> = own
            .split('&')
            .chain(extra_query.iter().copied())
            .filter(|p| !p.is_empty())
            .collect();
        let base = base.trim_end_matches('/');
        Self::parse(&if query.is_empty() {
            format!("{base}/{name}")
        } else {
            format!("{base}/{name}?{}", query.join("&"))
        })
    }

    /// A yes/no parameter: `true`/`1` or `false`/`0`, absent or empty being `false`.
    /// The error names the parameter and the value.
    ///
    /// ```
    /// let t = dtmdriver_core::Target::parse("consul://h/s?healthy=1&grpc_tls=maybe").unwrap();
    /// assert!(t.query_flag("healthy").unwrap() && !t.query_flag("absent").unwrap());
    /// let e = t.query_flag("grpc_tls").unwrap_err().to_string();
    /// assert!(e.contains("grpc_tls `maybe` is not true or false"), "{e}");
    /// ```
    pub fn query_flag(&self, key: &str) -> Result<bool> {
        match self.query(key) {
            None | Some("" | "false" | "0") => Ok(false),
            Some("true" | "1") => Ok(true),
            Some(other) => Err(Error::bad_target(
                self,
                format!("{key} `{other}` is not true or false"),
            )),
        }
    }

    /// A query parameter holding a count (`?limit=2`), `None` when absent; the error
    /// names the parameter and the value, then `hint`.
    ///
    /// ```
    /// use dtmdriver_core::Target;
    /// let t = Target::parse("consul://h/svc?limit=2&subset=x").unwrap();
    /// assert_eq!(t.query_count("limit", "").unwrap(), Some(2));
    /// assert_eq!(t.query_count("tag", "").unwrap(), None);
    /// let e = t.query_count("subset", "write subset=N").unwrap_err().to_string();
    /// assert!(e.contains("subset `x` is not a whole number; write subset=N"), "{e}");
    /// ```
    pub fn query_count(&self, key: &str, hint: &str) -> Result<Option<usize>> {
        self.query(key)
            .map(|text| {
                let hint = if hint.is_empty() {
                    String::new()
                } else {
                    format!("; {hint}")
                };
                text.parse().map_err(|_| {
                    Error::bad_target(self, format!("{key} `{text}` is not a whole number{hint}"))
                })
            })
            .transpose()
    }

    /// All query parameters in order.
    pub fn query_pairs(&self) -> &[(String, String)] {
        &self.query
    }
}

/// Shows the target with its secrets [redacted](redact); [`as_str`](Target::as_str)
/// gives it as written.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.raw))
    }
}

impl std::str::FromStr for Target {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

pub use crate::redact::{redact, redact_message};

fn decode(s: &str) -> std::result::Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("`{s}` is not valid UTF-8 once percent-decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gozero_old_form_with_host_list() {
        let t = Target::parse("etcd://h1:2379,h2:2379/key").unwrap();
        assert_eq!(t.scheme(), "etcd");
        assert_eq!(t.hosts(), ["h1:2379", "h2:2379"]);
        assert_eq!(t.endpoint(), "key");
        assert!(t.query_pairs().is_empty());
    }

    #[test]
    fn gozero_new_form_with_key_query() {
        let t = Target::parse("etcd:///h1:2379,h2:2379?key=k").unwrap();
        assert!(t.hosts().is_empty());
        assert_eq!(t.endpoint_list(), ["h1:2379", "h2:2379"]);
        assert_eq!(t.query("key"), Some("k"));
    }

    #[test]
    fn direct_list() {
        let t = Target::parse("direct:///a:1,b:2").unwrap();
        assert_eq!(t.scheme(), "direct");
        assert_eq!(t.endpoint_list(), ["a:1", "b:2"]);
    }

    #[test]
    fn kratos_discovery() {
        let t = Target::parse("discovery:///name").unwrap();
        assert_eq!(t.scheme(), "discovery");
        assert!(t.hosts().is_empty());
        assert_eq!(t.endpoint(), "name");
    }

    #[test]
    fn consul_with_credentials_and_query() {
        let t = Target::parse("consul://user:p%40ss@h:8500/svc?tag=x&healthy=true").unwrap();
        assert_eq!(t.user(), Some("user"));
        assert_eq!(t.password(), Some("p@ss"));
        assert_eq!(t.hosts(), ["h:8500"]);
        assert_eq!(t.endpoint(), "svc");
        assert_eq!(t.query("tag"), Some("x"));
        assert_eq!(t.query("healthy"), Some("true"));
        assert_eq!(t.query("missing"), None);
    }

    #[test]
    fn ipv6_hosts() {
        let t = Target::parse("etcd://[::1]:2379,[::1]:2380/k").unwrap();
        assert_eq!(t.hosts(), ["[::1]:2379", "[::1]:2380"]);
        assert_eq!(
            Target::parse("[::1]:9000").unwrap().endpoint(),
            "[::1]:9000"
        );
        let err = Target::parse("etcd://::1:2379/k").unwrap_err().to_string();
        assert!(err.contains("brackets"), "{err}");
    }

    #[test]
    fn plain_address_is_passthrough() {
        let t = Target::parse("localhost:8080").unwrap();
        assert_eq!(t.scheme(), PASSTHROUGH_SCHEME);
        assert_eq!(t.endpoint(), "localhost:8080");
    }

    #[test]
    fn errors_name_the_part() {
        let cases = [
            ("", "empty"),
            ("1tcp://h/k", "scheme `1tcp`"),
            ("etcd://h1,,h2/k", "empty"),
            ("etcd://h:99999/k", "port `99999`"),
            ("etcd://h:0/k", "port `0`"),
            ("etcd://:2379/k", "no host name"),
            ("etcd://@h/k", "user name"),
            ("localhost:8080/pb.S/M", "no scheme"),
            ("etcd://h/a b", "white space"),
            ("etcd://[::1/k", "no ']'"),
        ];
        for (input, needle) in cases {
            let err = Target::parse(input).unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
            assert!(err.contains(&format!("`{input}`")), "{input}: {err}");
        }
    }
}
