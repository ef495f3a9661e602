//! go-zero's `k8s://` targets on the Kubernetes engine of `dtmdriver-k8s` (cargo feature
//! `k8s`, on by default).
//!
//! | target | namespace | service | port |
//! |---|---|---|---|
//! | `k8s://NAMESPACE/SERVICE:PORT` | `NAMESPACE` | `SERVICE` | `PORT` |
//! | `k8s:///SERVICE:PORT` | `default` | `SERVICE` | `PORT` |
//! | `k8s://NAMESPACE/SERVICE` | `NAMESPACE` | `SERVICE` | the first port of the first EndpointSlice |
//!
//! As go-zero v1.10.3 (`zrpc/resolver/internal/kube`): the instances are the addresses in
//! the service's `discovery.k8s.io/v1` EndpointSlices (label
//! `kubernetes.io/service-name=SERVICE`), each dialled at `ADDRESS:PORT`, at most
//! [`SUBSET_SIZE`](crate::SUBSET_SIZE) of them per channel (`?subset=N` as for the other
//! schemes); a port of `0` counts as none, as in go-zero. Where we differ, on purpose:
//!
//! * only ready endpoints (`conditions.ready` true or absent) are dialled; go-zero dials
//!   every address, also of pods that are not ready or are terminating. `serving` and
//!   `terminating` are not read (a terminating endpoint is never ready);
//! * every slice counts, always: go-zero replaces its whole set with the one slice that
//!   changed, so a service with several slices (dual-stack, or over 100 endpoints) loses
//!   the others' addresses on the first change;
//! * IPv6 addresses are dialled as `[ADDRESS]:PORT` (go-zero writes `ADDRESS:PORT`,
//!   which does not parse);
//! * a service with no slice yet resolves to an empty set and follows it, where go-zero
//!   fails the dial when the port is left out;
//! * credentials: in a pod the service account, as go-zero; elsewhere, beyond go-zero, a
//!   kubeconfig (`KUBECONFIG`, else `~/.kube/config`). See [`dtmdriver_k8s::credentials`].
//!
//! The namespace and service must be DNS labels (lower-case letters, digits and `-`, at
//! most 63), as Kubernetes names them.

use dtmdriver_core::resolve::{Resolver, SnapshotSender};
use dtmdriver_core::{Error, Result, Target};
use dtmdriver_k8s::{Credentials, ServiceKey, resolve_service};

/// The namespace of a target without one, as go-zero's.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A parsed `k8s://` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct K8sTarget {
    /// The namespace ([`DEFAULT_NAMESPACE`] when the target has none).
    pub namespace: String,
    /// The service name.
    pub service: String,
    /// The port to dial; `None`: the first port of the first EndpointSlice.
    pub port: Option<u16>,
}

impl K8sTarget {
    /// Parses go-zero's `k8s://[NAMESPACE]/SERVICE[:PORT]`.
    ///
    /// ```
    /// use dtmdriver_core::Target;
    /// use dtmdriver_gozero::k8s::K8sTarget;
    /// let t = K8sTarget::from_target(&Target::parse("k8s://ns1/my-svc:8080").unwrap()).unwrap();
    /// assert_eq!((t.namespace.as_str(), t.service.as_str(), t.port), ("ns1", "my-svc", Some(8080)));
    /// let t = K8sTarget::from_target(&Target::parse("k8s:///my-svc").unwrap()).unwrap();
    /// assert_eq!((t.namespace.as_str(), t.port), ("default", None));
    /// ```
    pub fn from_target(target: &Target) -> Result<Self> {
        let bad = |reason: String| Error::BadTarget {
            target: target.to_string(),
            reason: format!("{reason}; write k8s://NAMESPACE/SERVICE:PORT"),
        };
        if target.user().is_some() {
            return Err(bad(
                "k8s targets take no user: the credentials are the pod's service account or the kubeconfig"
                    .into(),
            ));
        }
        let namespace = match target.hosts() {
            [] => DEFAULT_NAMESPACE.to_string(),
            [ns] => ns.clone(),
            _ => return Err(bad("only one namespace may be named".into())),
        };
        check_label(&namespace).map_err(|why| bad(format!("namespace `{namespace}`: {why}")))?;
        let (service, port) = match target.endpoint().split_once(':') {
            None => (target.endpoint(), None),
            Some((service, port)) => match port.parse::<u16>() {
                Ok(0) => (service, None),
                Ok(p) => (service, Some(p)),
                Err(_) => {
                    return Err(bad(format!(
                        "port `{port}` is not a number from 1 to 65535 (leave `:PORT` out to \
                         use the service's first port)"
                    )));
                }
            },
        };
        check_label(service).map_err(|why| bad(format!("service `{service}`: {why}")))?;
        Ok(Self {
            namespace,
            service: service.to_string(),
            port,
        })
    }
}

/// Whether `name` is a DNS label (RFC 1123), as namespace and service names are.
fn check_label(name: &str) -> std::result::Result<(), &'static str> {
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

/// Resolves go-zero `k8s://` targets; see the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct GoZeroK8sResolver;

impl Resolver for GoZeroK8sResolver {
    fn resolve(&self, target: &Target, updates: SnapshotSender) -> Result<()> {
        let t = K8sTarget::from_target(target)?;
        let updates = updates.with_subset(crate::subset_size(target)?);
        let key = ServiceKey {
            credentials: Credentials::from_env(),
            namespace: t.namespace,
            service: t.service,
        };
        resolve_service(&key, t.port, updates);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<K8sTarget> {
        K8sTarget::from_target(&Target::parse(t)?)
    }

    #[test]
    fn go_zero_target_forms() {
        // go-zero's own cases (zrpc/resolver/internal/kube/targetparser_test.go).
        let t = parse("k8s://ns1/my-svc:8080").unwrap();
        assert_eq!(
            (t.namespace.as_str(), t.service.as_str(), t.port),
            ("ns1", "my-svc", Some(8080))
        );
        let t = parse("k8s:///my-svc:8080").unwrap();
        assert_eq!((t.namespace.as_str(), t.port), ("default", Some(8080)));
        assert!(parse("k8s://ns1/my-svc:").is_err());
        assert_eq!(parse("k8s://ns1/my-svc").unwrap().port, None);
        assert!(parse("k8s://ns1/my-svc:800a").is_err());
        assert!(parse("k8s://ns1:800/:").is_err());
        // Port 0 is "none", as go-zero's.
        assert_eq!(parse("k8s://ns1/my-svc:0").unwrap().port, None);
        for bad in [
            "k8s://ns1/My-Svc:80",
            "k8s://ns1/my-svc:70000",
            "k8s://a,b/my-svc:80",
            "k8s://u@ns1/my-svc:80",
            "k8s://ns1/",
            "k8s://ns_1/svc:80",
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("k8s://NAMESPACE/SERVICE:PORT"), "{bad}: {err}");
        }
    }
}
