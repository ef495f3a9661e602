//! Resolvers, registrars and the scheme tables that find them.
//!
//! A [`Resolver`] turns a [`Target`] into a stream of *snapshots*
//! ([`ResolverState`]): each one the full set of [`Endpoint`]s (a persistent
//! [`EndpointSet`], so publishing costs the change, not the set) with the
//! [`SetChange`]s since the previous one, or an error saying why the registry could not
//! be read. The stream is a [`tokio::sync::watch`] cell, so a resolver never blocks on
//! a slow consumer and the balancer always sees the newest set (full sets make the
//! intermediate ones safe to skip; a consumer that kept up applies only the changes).
//! How a resolver publishes, de-duplication, subsets and holding an emptied set back:
//! [`SnapshotSender`]. A [`Registrar`] writes an instance into a registry and keeps it
//! there.
//!
//! Drivers install theirs by scheme in [`Driver::register_resolver`]; `direct`
//! (a static list, `direct:///10.0.0.1:80,10.0.0.2:80`) and `passthrough` (a plain
//! `host:port`) are built in.
//!
//! [`Driver::register_resolver`]: crate::Driver::register_resolver

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, RwLock};

use crate::address::HostPort;
use crate::error::{Error, Result};
use crate::registration::Registration;
use crate::target::{PASSTHROUGH_SCHEME, Target};
use async_trait::async_trait;

mod sender;
mod set;
mod subset;

/// The hasher of the sender's and the subset's indexes: foldhash, seeded per process
/// (addresses come from the registry; std's SipHash cost a third of a whole-set update
/// at 100,000).
pub(crate) type Fast = foldhash::fast::RandomState;

pub use sender::{ResolverState, SnapshotReceiver, SnapshotSender};
pub use set::{EndpointSet, SetChange};

/// One instance of a service, as the balancer sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Endpoint {
    /// `host:port` to connect to.
    pub addr: String,
    /// Relative weight for weighted policies; 1 when the registry has none.
    pub weight: u32,
    /// Registry metadata (group, version, ...), for display and filtering.
    pub metadata: BTreeMap<String, String>,
}

impl Endpoint {
    /// An endpoint with weight 1 and no metadata.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            weight: 1,
            metadata: BTreeMap::new(),
        }
    }

    /// Sets the weight (0 is taken as 1: an instance in the set is meant to be used).
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }

    /// Adds one metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// Turns a target into endpoint snapshots.
pub trait Resolver: Send + Sync + 'static {
    /// Starts resolving `target`. Invalid targets fail here; everything later is
    /// reported through `updates`. A resolver that watches spawns a task and stops it
    /// once [`SnapshotSender::closed`] completes.
    fn resolve(&self, target: &Target, updates: SnapshotSender) -> Result<()>;
}

/// Writes an instance into a registry and keeps it there.
#[async_trait]
pub trait Registrar: Send + Sync + 'static {
    /// Registers `endpoint` at `target`; returns once the instance is visible.
    async fn register(&self, target: &Target, endpoint: &str) -> Result<Registration>;
}

/// `direct:///a:1,b:2`: a fixed list of addresses.
#[derive(Clone, Copy, Debug, Default)]
pub struct DirectResolver;

impl Resolver for DirectResolver {
    fn resolve(&self, target: &Target, updates: SnapshotSender) -> Result<()> {
        let list = if target.scheme() == PASSTHROUGH_SCHEME {
            vec![target.endpoint()]
        } else if !target.hosts().is_empty() {
            return Err(Error::BadTarget {
                target: target.to_string(),
                reason: "direct targets take the addresses after three slashes: direct:///host:port,host:port"
                    .into(),
            });
        } else {
            target.endpoint_list()
        };
        if list.is_empty() {
            return Err(Error::bad_target(
                target,
                "no address given; write direct:///host:port[,host:port...]",
            ));
        }
        for addr in &list {
            HostPort::parse(addr).map_err(|reason| {
                Error::bad_target(target, format!("address `{addr}`: {reason}"))
            })?;
        }
        updates.update(list.into_iter().map(Endpoint::new).collect());
        Ok(())
    }
}

struct SchemeTables {
    resolvers: BTreeMap<String, Arc<dyn Resolver>>,
    registrars: BTreeMap<String, Arc<dyn Registrar>>,
    /// The driver whose resolvers are installed, for error hints.
    driver: Option<String>,
}

static SCHEMES: LazyLock<RwLock<SchemeTables>> = LazyLock::new(|| {
    let mut resolvers: BTreeMap<String, Arc<dyn Resolver>> = BTreeMap::new();
    resolvers.insert("direct".into(), Arc::new(DirectResolver));
    resolvers.insert(PASSTHROUGH_SCHEME.into(), Arc::new(DirectResolver));
    RwLock::new(SchemeTables {
        resolvers,
        registrars: BTreeMap::new(),
        driver: None,
    })
});

fn tables() -> std::sync::RwLockReadGuard<'static, SchemeTables> {
    SCHEMES.read().unwrap_or_else(|e| e.into_inner())
}

/// Installs the process-wide resolver for `scheme`, replacing any earlier one.
pub fn install_resolver(scheme: &str, resolver: Arc<dyn Resolver>) {
    let mut t = SCHEMES.write().unwrap_or_else(|e| e.into_inner());
    t.resolvers.insert(scheme.to_ascii_lowercase(), resolver);
}

/// Installs the process-wide registrar for `scheme`, replacing any earlier one.
pub fn install_registrar(scheme: &str, registrar: Arc<dyn Registrar>) {
    let mut t = SCHEMES.write().unwrap_or_else(|e| e.into_inner());
    t.registrars.insert(scheme.to_ascii_lowercase(), registrar);
}

/// Notes `driver` as the one whose resolvers and registrars are installed (the driver
/// registry does, on `use_driver`), for the hints of unknown-scheme errors.
pub(crate) fn note_driver_in_use(driver: &str) {
    let mut t = SCHEMES.write().unwrap_or_else(|e| e.into_inner());
    t.driver = Some(driver.to_string());
}

/// The schemes with a resolver installed.
pub fn resolver_schemes() -> Vec<String> {
    tables().resolvers.keys().cloned().collect()
}

fn unknown(role: &'static str, target: &Target, t: &SchemeTables, known: Vec<String>) -> Error {
    let hint = match &t.driver {
        None => format!(
            "; no driver is in use: call dtmdriver_core::use_driver(\"dtm-driver-gozero\") (or the driver \
             that owns `{}`) first, with its crate linked",
            target.scheme()
        ),
        Some(d) => format!("; the driver in use, `{d}`, does not handle this scheme"),
    };
    Error::UnknownScheme {
        role,
        scheme: target.scheme().to_string(),
        target: target.to_string(),
        known: if known.is_empty() {
            "none".into()
        } else {
            known.join(", ")
        },
        hint,
    }
}

/// The installed resolver for the target's scheme.
pub fn resolver_for(target: &Target) -> Result<Arc<dyn Resolver>> {
    let t = tables();
    t.resolvers.get(target.scheme()).cloned().ok_or_else(|| {
        unknown(
            "resolver",
            target,
            &t,
            t.resolvers.keys().cloned().collect(),
        )
    })
}

/// The installed registrar for the target's scheme.
pub fn registrar_for(target: &Target) -> Result<Arc<dyn Registrar>> {
    let t = tables();
    t.registrars.get(target.scheme()).cloned().ok_or_else(|| {
        unknown(
            "registrar",
            target,
            &t,
            t.registrars.keys().cloned().collect(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_direct(target: &str) -> Result<Vec<String>> {
        let (tx, rx) = SnapshotSender::channel();
        DirectResolver.resolve(&Target::parse(target)?, tx)?;
        let state = rx.borrow().clone();
        Ok(state
            .endpoints
            .unwrap()
            .iter()
            .map(|e| e.addr.clone())
            .collect())
    }

    #[test]
    fn direct_lists_and_plain_addresses() {
        assert_eq!(
            resolve_direct("direct:///127.0.0.1:1,127.0.0.1:2").unwrap(),
            ["127.0.0.1:1", "127.0.0.1:2"]
        );
        assert_eq!(
            resolve_direct("direct:///[::1]:5,[::1]:5").unwrap(),
            ["[::1]:5"]
        );
        assert_eq!(resolve_direct("localhost:80").unwrap(), ["localhost:80"]);
        for bad in [
            "direct:///",
            "direct://h:1/x",
            "direct:///nohostport",
            "direct:///[::1]",
        ] {
            assert!(resolve_direct(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_scheme_lists_known_ones_and_says_use_driver() {
        let t = Target::parse("nosuch://h:1/x").unwrap();
        let err = resolver_for(&t).err().unwrap().to_string();
        assert!(err.contains("direct") && err.contains("`nosuch`"), "{err}");
    }
}
