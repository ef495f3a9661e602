//! The [`Driver`] contract.
//!
//! A driver is what dtm calls a "micro-service driver": it knows one framework's
//! registry formats. It mirrors `dtmdriver.Driver` (v0.0.6): a name, a hook that
//! installs its resolvers, registering a service, and splitting branch URIs. Two things
//! differ from Go: registering returns a [`Registration`] that removes the instance
//! when deregistered or dropped, and a driver also hands out its resolvers and
//! registrars as values, so several drivers can work side by side in one process
//! without the global [`use_driver`](crate::use_driver).

use std::sync::Arc;

use async_trait::async_trait;

use crate::address::host_of;
use crate::error::{Error, Result};
use crate::parse::ServerMethod;
pub use crate::registration::Registration;
use crate::resolve::{self, Registrar, Resolver};
use crate::target::Target;

/// A service-discovery driver. See the [module docs](self).
///
/// Implementors usually only provide [`name`](Driver::name),
/// [`resolvers`](Driver::resolvers), [`registrars`](Driver::registrars) and
/// [`parse_server_method`](Driver::parse_server_method); the provided methods install
/// and dispatch by scheme. A complete driver:
///
/// ```
/// use std::sync::Arc;
/// use dtmdriver_core::{Driver, Error, ServerMethod, parse::parse_scheme_url};
/// use dtmdriver_core::resolve::{Resolver, SnapshotSender, Endpoint};
/// use dtmdriver_core::Target;
///
/// /// Resolves `static:///name` to one fixed address.
/// struct Static;
/// impl Resolver for Static {
///     fn resolve(&self, _target: &Target, updates: SnapshotSender) -> Result<(), Error> {
///         updates.update(vec![Endpoint::new("127.0.0.1:9000")]);
///         Ok(())
///     }
/// }
///
/// #[derive(Default)]
/// struct MyDriver;
/// #[async_trait::async_trait]
/// impl Driver for MyDriver {
///     fn name(&self) -> &str { "my-driver" }
///     fn resolvers(&self) -> Vec<(&'static str, Arc<dyn Resolver>)> {
///         vec![("static", Arc::new(Static))]
///     }
///     fn parse_server_method(&self, uri: &str) -> Result<ServerMethod, Error> {
///         parse_scheme_url(uri)
///     }
/// }
/// // Linking is enough for `use_driver("my-driver")` to find it:
/// dtmdriver_core::register_driver!(MyDriver);
/// ```
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// The name users pass to [`use_driver`](crate::use_driver), e.g. `dtm-driver-gozero`.
    fn name(&self) -> &str;

    /// The resolvers this driver provides, by scheme.
    fn resolvers(&self) -> Vec<(&'static str, Arc<dyn Resolver>)> {
        Vec::new()
    }

    /// Tells apart values of this driver whose resolvers behave differently, e.g. one
    /// configured with another registry. Channels built with
    /// [`ChannelBuilder::driver`](crate::ChannelBuilder::driver) are shared per driver
    /// name, this identity, target and settings. Default: empty, for drivers whose
    /// values all resolve alike.
    fn resolver_identity(&self) -> String {
        String::new()
    }

    /// The registrars this driver provides, by scheme.
    fn registrars(&self) -> Vec<(&'static str, Arc<dyn Registrar>)> {
        Vec::new()
    }

    /// Installs this driver's resolvers and registrars in the process-wide scheme
    /// tables. [`use_driver`](crate::use_driver) calls it exactly once.
    fn register_resolver(&self) {
        for (scheme, r) in self.resolvers() {
            resolve::install_resolver(scheme, r);
        }
        for (scheme, r) in self.registrars() {
            resolve::install_registrar(scheme, r);
        }
    }

    /// Registers `endpoint` (usually `host:port`) at `target` and keeps it registered
    /// until the returned handle is deregistered or dropped. An empty target registers
    /// nothing, as in Go.
    async fn register_service(&self, target: &str, endpoint: &str) -> Result<Registration> {
        if target.is_empty() {
            return Ok(Registration::noop(target, endpoint));
        }
        let parsed = Target::parse(target)?;
        let registrars = self.registrars();
        let Some((_, registrar)) = registrars.iter().find(|(s, _)| *s == parsed.scheme()) else {
            let known: Vec<&str> = registrars.iter().map(|(s, _)| *s).collect();
            return Err(Error::Unsupported {
                driver: self.name().to_string(),
                what: "register a service at",
                target: target.to_string(),
                reason: if known.is_empty() {
                    "it registers no services; choose a driver that owns the registry".to_string()
                } else {
                    format!("it registers at the schemes {}", known.join(", "))
                },
            });
        };
        if let Some(warning) = loopback_warning(&parsed, endpoint) {
            tracing::warn!(target = %crate::target::redact(target), endpoint, "{warning}");
        }
        registrar.register(&parsed, endpoint).await
    }

    /// Splits a branch URI into the server to dial and the method to call.
    fn parse_server_method(&self, uri: &str) -> Result<ServerMethod>;
}

/// `driver`'s resolver for the target's scheme; `direct` and `passthrough` (built in,
/// and resolved by no driver) fall back to the installed ones.
pub fn resolver_of(driver: &dyn Driver, target: &Target) -> Result<Arc<dyn Resolver>> {
    match own_resolver(driver, target)? {
        Some(r) => Ok(r),
        None => resolve::resolver_for(target),
    }
}

/// `driver`'s own resolver for the target's scheme, or `None` for the built-in schemes
/// (`direct`, `passthrough`) it does not resolve itself; an error naming the schemes
/// it does resolve otherwise.
pub(crate) fn own_resolver(
    driver: &dyn Driver,
    target: &Target,
) -> Result<Option<Arc<dyn Resolver>>> {
    let resolvers = driver.resolvers();
    if let Some((_, r)) = resolvers.iter().find(|(s, _)| *s == target.scheme()) {
        return Ok(Some(r.clone()));
    }
    if matches!(
        target.scheme(),
        "direct" | crate::target::PASSTHROUGH_SCHEME
    ) {
        return Ok(None);
    }
    let known: Vec<&str> = resolvers.iter().map(|(s, _)| *s).collect();
    Err(Error::Unsupported {
        driver: driver.name().to_string(),
        what: "resolve",
        target: target.to_string(),
        reason: format!("it resolves the schemes: {}", known.join(", ")),
    })
}

/// Fails, naming `what` was to be done with `target`, unless a tokio runtime is
/// running: resolvers and channels spawn tasks.
pub(crate) fn require_runtime(target: &str, what: &'static str) -> Result<()> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Ok(());
    }
    Err(Error::Unsupported {
        driver: "-".into(),
        what,
        target: target.to_string(),
        reason: "no tokio runtime is running; call it from within #[tokio::main] or a runtime"
            .into(),
    })
}

/// A warning when `endpoint` is a loopback address but the registry at `target` lives
/// on another host: clients elsewhere would read an address that only works on this
/// machine (a common mistake with containers). `None` when nothing looks wrong.
///
/// ```
/// use dtmdriver_core::{Target, driver::loopback_warning};
/// let remote = Target::parse("etcd://10.0.0.7:2379/trans").unwrap();
/// assert!(loopback_warning(&remote, "127.0.0.1:9000").is_some());
/// assert!(loopback_warning(&remote, "10.0.0.5:9000").is_none());
/// let local = Target::parse("etcd://127.0.0.1:2379/trans").unwrap();
/// assert!(loopback_warning(&local, "127.0.0.1:9000").is_none());
/// ```
pub fn loopback_warning(target: &Target, endpoint: &str) -> Option<String> {
    // Endpoints may carry a scheme (kratos: grpc://host:port).
    let addr = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    if !is_loopback_host(host_of(addr)) {
        return None;
    }
    let remote = target
        .hosts()
        .iter()
        .find(|h| !is_loopback_host(host_of(h)))?;
    Some(format!(
        "registering loopback address {endpoint} in the registry at {remote}: clients on other \
         hosts will read an address that only works on this machine; register the address \
         they dial (e.g. this host's LAN address, or 0.0.0.0:PORT where the driver supports it)"
    ))
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warn(target: &str, endpoint: &str) -> bool {
        loopback_warning(&Target::parse(target).unwrap(), endpoint).is_some()
    }

    #[test]
    fn loopback_endpoint_in_a_remote_registry_is_flagged() {
        assert!(warn("etcd://10.0.0.7:2379/k", "127.0.0.1:9000"));
        assert!(warn(
            "etcd://127.0.0.1:2379,10.0.0.7:2379/k",
            "localhost:9000"
        ));
        assert!(warn("consul://10.0.0.7:8500/k", "[::1]:9000"));
        assert!(warn(
            "etcd://registry.internal:2379/k",
            "grpc://127.0.0.1:9000"
        ));
    }

    #[test]
    fn routable_or_local_setups_are_not_flagged() {
        assert!(!warn("etcd://10.0.0.7:2379/k", "10.0.0.5:9000"));
        assert!(!warn("etcd://127.0.0.1:2379/k", "127.0.0.1:9000"));
        assert!(!warn("etcd://localhost:2379/k", "localhost:9000"));
        // Hosts in the path (go-zero's new form) are the engine's business: not flagged.
        assert!(!warn("etcd:///10.0.0.7:2379?key=k", "10.0.0.5:9000"));
        assert!(!warn("discovery:///busi", "grpc://127.0.0.1:9000"));
    }
}
