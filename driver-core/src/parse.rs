//! Splitting dtm branch URIs into the server to dial and the gRPC method to call.
//!
//! dtm stores a branch as one string, `server` followed by `/package.Service/Method`;
//! each driver decides where the server ends. The two rules in use by the Go drivers
//! live here so that every driver shares one implementation:
//!
//! * [`parse_plain`]: the `default` driver's rule. The server is the text before the
//!   first `/`: `localhost:8080/pb.S/M` → (`localhost:8080`, `/pb.S/M`). A URI with a
//!   scheme is refused with an error that says to choose a driver first.
//! * [`parse_scheme_url`]: the rule of the go-zero and kratos drivers (go-zero adds its
//!   consul/nacos query rule on top, in `dtmdriver-gozero`). A URI without
//!   `//` falls back to the plain rule; otherwise the server is `scheme://host` plus the
//!   first path segment and the method is the rest:
//!   `etcd://127.0.0.1:2379/trans/trans.TransSvc/TransOut` →
//!   (`etcd://127.0.0.1:2379/trans`, `/trans.TransSvc/TransOut`).
//!
//! Unlike Go, a URI that cannot be split is an error quoting it (Go returns empty
//! strings, or panics on an empty path), and the method must have the shape of a gRPC
//! path, `/package.Service/Method`, since anything else can only fail later.
//!
//! ```
//! use dtmdriver_core::parse::{parse_plain, parse_scheme_url};
//! let sm = parse_plain("localhost:8080/pb.S/M").unwrap();
//! assert_eq!((sm.server.as_str(), sm.method.as_str()), ("localhost:8080", "/pb.S/M"));
//! let sm = parse_scheme_url("discovery:///busi/api.trans.v1.Trans/TransOut").unwrap();
//! assert_eq!(sm.server, "discovery:///busi");
//! assert_eq!(sm.method, "/api.trans.v1.Trans/TransOut");
//! ```

use crate::error::{Error, Result};

/// A branch URI split into the server to dial and the method path to call.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ServerMethod {
    /// What to dial: a target such as `etcd://127.0.0.1:2379/trans` or `localhost:8080`.
    pub server: String,
    /// The gRPC method path, `/package.Service/Method`.
    pub method: String,
}

fn bad(uri: &str, reason: impl Into<String>) -> Error {
    Error::bad_uri(uri, reason.into())
}

/// The `default` driver's rule: the server is everything before the first `/`.
pub fn parse_plain(uri: &str) -> Result<ServerMethod> {
    let Some(sep) = uri.find('/') else {
        return Err(bad(
            uri,
            "no '/' found; write server/package.Service/Method, e.g. localhost:8080/pb.Busi/TransOut",
        ));
    };
    if uri.contains("://") {
        return Err(bad(
            uri,
            "it has a custom scheme but the `default` driver is in use; call \
             dtmdriver_core::use_driver(\"dtm-driver-gozero\") (or the driver that owns the scheme) \
             before using it, or pass --driver to dtmdriver",
        ));
    }
    split_at(uri, sep)
}

/// The shared rule of the go-zero and kratos drivers (see the [module docs](self)).
///
/// A query string between the first path segment and the method
/// (`etcd:///h1,h2?key=k/pkg.S/M`) stays with the server; Go cannot parse that form.
pub fn parse_scheme_url(uri: &str) -> Result<ServerMethod> {
    if !uri.contains("//") {
        return parse_plain_without_scheme(uri);
    }
    let Some(scheme_end) = uri.find("://") else {
        return Err(bad(
            uri,
            "it has '//' but no scheme before it; write scheme://host/name/package.Service/Method",
        ));
    };
    let scheme = &uri[..scheme_end];
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return Err(bad(uri, format!("`{scheme}` is not a URL scheme")));
    }
    let after_scheme = scheme_end + 3;
    let rest = &uri[after_scheme..];
    // The authority ends at the first '/' (or '?', which leaves no path: an error below).
    let Some(path_start) = rest.find('/').map(|i| after_scheme + i) else {
        return Err(bad(
            uri,
            "no path after the host; write scheme://host/name/package.Service/Method",
        ));
    };
    if uri[after_scheme..path_start].contains('?') {
        return Err(bad(
            uri,
            "the query comes before the path; put ?query after the service name",
        ));
    }
    // The server's name is the first path segment; a query may follow it.
    let name_start = path_start + 1;
    let name_end = uri[name_start..]
        .find(['/', '?'])
        .map_or(uri.len(), |i| name_start + i);
    if name_end == name_start {
        return Err(bad(
            uri,
            "the service name after the host is empty; write scheme://host/name/package.Service/Method",
        ));
    }
    let method_start = if uri[name_end..].starts_with('?') {
        match uri[name_end..].find('/') {
            Some(i) => name_end + i,
            None => {
                return Err(bad(
                    uri,
                    "no method after the query; append /package.Service/Method",
                ));
            }
        }
    } else {
        name_end
    };
    split_at(uri, method_start)
}

fn parse_plain_without_scheme(uri: &str) -> Result<ServerMethod> {
    match uri.find('/') {
        Some(sep) => split_at(uri, sep),
        None => Err(bad(
            uri,
            "no '/' found; write server/package.Service/Method, e.g. localhost:8080/pb.Busi/TransOut",
        )),
    }
}

fn split_at(uri: &str, sep: usize) -> Result<ServerMethod> {
    let (server, method) = uri.split_at(sep);
    if server.is_empty() {
        return Err(bad(uri, "the server part before the first '/' is empty"));
    }
    check_method(uri, method)?;
    Ok(ServerMethod {
        server: server.to_string(),
        method: method.to_string(),
    })
}

/// A gRPC path is `/service/method`, both parts non-empty; the service usually carries
/// its proto package (`/pb.Busi/TransOut`).
fn check_method(uri: &str, method: &str) -> Result<()> {
    let shape_ok = method
        .strip_prefix('/')
        .and_then(|m| m.split_once('/'))
        .is_some_and(|(svc, name)| !svc.is_empty() && !name.is_empty() && !name.contains('/'));
    if shape_ok {
        Ok(())
    } else {
        Err(bad(
            uri,
            format!(
                "the method part `{method}` is not a gRPC path of the form /package.Service/Method \
                 (copy it from the generated client; it is case-sensitive)"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(f: fn(&str) -> Result<ServerMethod>, uri: &str) -> (String, String) {
        let sm = f(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
        (sm.server, sm.method)
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.to_string(), b.to_string())
    }

    // Every row of WIRE-FORMATS.md §1's table.
    #[test]
    fn wire_formats_table_rows() {
        assert_eq!(
            ok(
                parse_scheme_url,
                "etcd://127.0.0.1:2379/trans/trans.TransSvc/TransOut"
            ),
            pair("etcd://127.0.0.1:2379/trans", "/trans.TransSvc/TransOut")
        );
        assert_eq!(
            ok(
                parse_scheme_url,
                "direct:///127.0.0.1:2006/pb.Wallet/DeductBalance"
            ),
            pair("direct:///127.0.0.1:2006", "/pb.Wallet/DeductBalance")
        );
        assert_eq!(
            ok(
                parse_scheme_url,
                "discovery:///busi/api.trans.v1.Trans/TransOut"
            ),
            pair("discovery:///busi", "/api.trans.v1.Trans/TransOut")
        );
        for f in [parse_plain, parse_scheme_url] {
            assert_eq!(
                ok(f, "localhost:8080/pb.S/M"),
                pair("localhost:8080", "/pb.S/M")
            );
        }
    }

    #[test]
    fn default_rule_errors_like_go_but_says_what_to_do() {
        let e = parse_plain("localhost").unwrap_err().to_string();
        assert!(
            e.contains("no '/' found") && e.contains("`localhost`"),
            "{e}"
        );
        let e = parse_plain("etcd://h:2379/a/pkg.S/M")
            .unwrap_err()
            .to_string();
        assert!(e.contains("use_driver"), "{e}");
    }

    #[test]
    fn multi_host_authority_is_accepted() {
        assert_eq!(
            ok(parse_scheme_url, "etcd://h1:2379,h2:2379/trans/pb.S/M"),
            pair("etcd://h1:2379,h2:2379/trans", "/pb.S/M")
        );
    }

    #[test]
    fn query_after_name_stays_with_server() {
        assert_eq!(
            ok(parse_scheme_url, "etcd:///h1:2379,h2:2379?key=trans/pb.S/M"),
            pair("etcd:///h1:2379,h2:2379?key=trans", "/pb.S/M")
        );
    }

    #[test]
    fn go_panics_and_silences_are_errors_here() {
        for uri in [
            "etcd://h:2379",            // empty path: Go panics
            "etcd://h:2379/",           // empty name
            "etcd://h:2379/trans",      // no method part
            "etcd://h:2379/trans/",     // empty method
            "etcd://h:2379/trans/pb.S", // method without a service
            "etcd://h:2379//pb.S/M",    // empty name
            "localhost:8080/",          // empty method
            "/pb.S/M",                  // empty server
            "h:1//pb.S/M",              // '//' without a scheme: Go's url.Parse fails silently
        ] {
            let e = parse_scheme_url(uri).unwrap_err().to_string();
            assert!(e.contains(&format!("`{uri}`")), "{uri}: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn no_input_panics(s in "\\PC*") {
            let _ = parse_plain(&s);
            let _ = parse_scheme_url(&s);
            let _ = crate::Target::parse(&s);
        }

        #[test]
        fn no_url_shaped_input_panics(
            scheme in "[a-z:/?]{0,6}", host in "[a-z0-9.:,\\[\\]@%]{0,12}",
            path in "[a-zA-Z0-9./?=&%]{0,24}",
        ) {
            let uri = format!("{scheme}://{host}/{path}");
            let _ = parse_plain(&uri);
            let _ = parse_scheme_url(&uri);
            let _ = crate::Target::parse(&uri);
        }
    }
}
