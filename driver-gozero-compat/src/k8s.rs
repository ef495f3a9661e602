//! go-zero's `k8s://[NAMESPACE]/SERVICE[:PORT]` targets on the Kubernetes engine of
//! `dtmdriver-k8s` (cargo feature `k8s`, on by default): [`K8sTarget`] parses them,
//! [`GoZeroK8sResolver`] follows the ready addresses of the service's EndpointSlices, at
//! most [`SUBSET_SIZE`](crate::SUBSET_SIZE) per channel (`?subset=N`). Where we differ
//! from go-zero v1.10.3 (ready endpoints only, every slice counts, IPv6, kubeconfig
//! outside a pod), and why: `docs/gozero.md`.

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
        ServiceKey::check_name(&namespace)
            .map_err(|why| bad(format!("namespace `{namespace}`: {why}")))?;
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
        ServiceKey::check_name(service)
            .map_err(|why| bad(format!("service `{service}`: {why}")))?;
        Ok(Self {
            namespace,
            service: service.to_string(),
            port,
        })
    }
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
