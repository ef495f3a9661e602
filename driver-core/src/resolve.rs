//! Resolvers, registrars and the scheme tables that find them.
//!
//! A [`Resolver`] turns a [`Target`] into a stream of *snapshots*: each one the full
//! set of [`Endpoint`]s, or an error saying why the registry could not be read. The
//! stream is a [`tokio::sync::watch`] cell, so a resolver never blocks on a slow
//! consumer and the balancer always sees the newest set (full snapshots make the
//! intermediate ones safe to skip). A [`Registrar`] writes an instance into a registry
//! and keeps it there.
//!
//! Drivers install theirs by scheme in [`Driver::register_resolver`]; `direct`
//! (a static list, `direct:///10.0.0.1:80,10.0.0.2:80`) and `passthrough` (a plain
//! `host:port`) are built in.
//!
//! [`Driver::register_resolver`]: crate::Driver::register_resolver

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, RwLock};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::address::HostPort;
use crate::error::{Error, Result};
use crate::registration::Registration;
use crate::target::{PASSTHROUGH_SCHEME, Target};

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

/// What a resolver has said so far.
#[derive(Clone, Debug, Default)]
pub struct ResolverState {
    /// The newest endpoint set; `None` until the first successful resolution.
    pub endpoints: Option<Arc<Vec<Endpoint>>>,
    /// The newest error, cleared by the next successful resolution.
    pub last_error: Option<String>,
    /// Counts updates, so readers can tell one snapshot from the next.
    pub version: u64,
}

/// The sending side a resolver publishes snapshots into. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SnapshotSender {
    tx: Arc<watch::Sender<ResolverState>>,
    subset: Option<Arc<std::sync::Mutex<Subset>>>,
}

/// A sticky random subset: at most `limit` endpoints of each set, keeping the ones
/// chosen before while they last and filling up at random.
#[derive(Debug)]
struct Subset {
    limit: usize,
    chosen: std::collections::HashSet<String>,
}

impl Subset {
    fn apply(&mut self, endpoints: Vec<Endpoint>) -> Vec<Endpoint> {
        if endpoints.len() <= self.limit {
            self.chosen = endpoints.iter().map(|e| e.addr.clone()).collect();
            return endpoints;
        }
        // `keep` holds at most `limit` (it is part of the last choice).
        let (keep, fresh): (Vec<usize>, Vec<usize>) =
            (0..endpoints.len()).partition(|&i| self.chosen.contains(&endpoints[i].addr));
        let room = self.limit - keep.len();
        let picked = rand::seq::index::sample(&mut rand::rng(), fresh.len(), room.min(fresh.len()));
        let mut take: Vec<usize> = keep;
        take.extend(picked.iter().map(|j| fresh[j]));
        take.sort_unstable();
        self.chosen = take.iter().map(|&i| endpoints[i].addr.clone()).collect();
        let mut take = take.into_iter().peekable();
        endpoints
            .into_iter()
            .enumerate()
            .filter_map(|(i, e)| take.next_if_eq(&i).map(|_| e))
            .collect()
    }
}

/// `endpoints` with each address once (its first entry), in order. The addresses are
/// hashed where they lie: no address is copied, and a set without duplicates (the usual
/// case) is returned as it came.
fn dedup_by_addr(endpoints: Vec<Endpoint>) -> Vec<Endpoint> {
    let mut seen = std::collections::HashSet::with_capacity(endpoints.len());
    let keep: Vec<bool> = endpoints
        .iter()
        .map(|e| seen.insert(e.addr.as_str()))
        .collect();
    drop(seen);
    if keep.iter().all(|&k| k) {
        return endpoints;
    }
    endpoints
        .into_iter()
        .zip(keep)
        .filter_map(|(e, k)| k.then_some(e))
        .collect()
}

/// The receiving side of a resolver's snapshots.
pub type SnapshotReceiver = watch::Receiver<ResolverState>;

impl SnapshotSender {
    /// A new sender/receiver pair with nothing resolved yet.
    pub fn channel() -> (Self, SnapshotReceiver) {
        let (tx, rx) = watch::channel(ResolverState::default());
        (
            Self {
                tx: Arc::new(tx),
                subset: None,
            },
            rx,
        )
    }

    /// This sender, publishing at most `limit` endpoints of each set (0: no limit), as
    /// go-zero's clients keep a random subset of at most 32 servers. Unlike go-zero,
    /// which reshuffles on every change, the subset is sticky: endpoints chosen before
    /// stay while they are in the set, and only the places of vanished ones are filled,
    /// at random, so a change elsewhere in a large set moves no connection. The limit
    /// holds for this sender and its clones.
    ///
    /// ```
    /// use dtmdriver_core::resolve::{Endpoint, SnapshotSender};
    /// let (tx, rx) = SnapshotSender::channel();
    /// let tx = tx.with_subset(2);
    /// tx.update((1..=5).map(|i| Endpoint::new(format!("10.0.0.{i}:80"))).collect());
    /// let first = rx.borrow().endpoints.clone().unwrap();
    /// assert_eq!(first.len(), 2);
    /// // A sixth endpoint appears: the two chosen ones stay.
    /// tx.update((1..=6).map(|i| Endpoint::new(format!("10.0.0.{i}:80"))).collect());
    /// assert_eq!(rx.borrow().endpoints.as_deref(), Some(&*first));
    /// ```
    pub fn with_subset(mut self, limit: usize) -> Self {
        self.subset = (limit > 0).then(|| {
            Arc::new(std::sync::Mutex::new(Subset {
                limit,
                chosen: Default::default(),
            }))
        });
        self
    }

    /// Publishes a full endpoint set. Duplicate addresses keep their first entry.
    pub fn update(&self, endpoints: Vec<Endpoint>) {
        let mut endpoints = dedup_by_addr(endpoints);
        if let Some(subset) = &self.subset {
            endpoints = subset
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .apply(endpoints);
        }
        self.tx.send_modify(|s| {
            s.endpoints = Some(Arc::new(endpoints));
            s.last_error = None;
            s.version += 1;
        });
    }

    /// Reports an error; the last endpoint set stays in service.
    pub fn error(&self, error: impl std::fmt::Display) {
        let message = error.to_string();
        self.tx.send_modify(|s| {
            s.last_error = Some(message);
            s.version += 1;
        });
    }

    /// A new receiver of this sender's snapshots.
    pub fn subscribe(&self) -> SnapshotReceiver {
        self.tx.subscribe()
    }

    /// True once every receiver is gone: the resolver should stop.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Completes once every receiver is gone.
    pub async fn closed(&self) {
        self.tx.closed().await
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

    fn set(ports: impl IntoIterator<Item = u16>) -> Vec<Endpoint> {
        ports
            .into_iter()
            .map(|p| Endpoint::new(format!("10.0.0.1:{p}")))
            .collect()
    }

    fn published(rx: &SnapshotReceiver) -> Vec<String> {
        let state = rx.borrow();
        state
            .endpoints
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.addr.clone())
            .collect()
    }

    #[test]
    fn subset_is_random_bounded_and_sticky() {
        let (tx, rx) = SnapshotSender::channel();
        let tx = tx.with_subset(32);
        tx.update(set(1..=40));
        let first = published(&rx);
        assert_eq!(first.len(), 32);
        let all: Vec<String> = set(1..=40).into_iter().map(|e| e.addr).collect();
        assert!(first.is_sorted_by_key(|a| all.iter().position(|b| b == a)));

        // An endpoint outside the subset leaves: nothing changes.
        let outside: u16 = (1..=40)
            .find(|p| !first.contains(&format!("10.0.0.1:{p}")))
            .unwrap();
        tx.update(set((1..=40).filter(|&p| p != outside)));
        assert_eq!(published(&rx), first);

        // A chosen one leaves: the other 31 stay, one newcomer fills its place.
        let gone = first[0].clone();
        let rest: Vec<Endpoint> = set(1..=40)
            .into_iter()
            .filter(|e| e.addr != gone && e.addr != format!("10.0.0.1:{outside}"))
            .collect();
        tx.update(rest);
        let second = published(&rx);
        assert_eq!(second.len(), 32);
        assert!(!second.contains(&gone));
        assert_eq!(second.iter().filter(|a| first.contains(a)).count(), 31);

        // The set shrinks under the limit: all of it.
        tx.update(set(1..=5));
        assert_eq!(published(&rx).len(), 5);

        // Another client picks another subset (the chance of the same 32 of 100 is
        // 1 in C(100, 32) ≈ 1.4e26).
        let picks: Vec<Vec<String>> = (0..2)
            .map(|_| {
                let (tx, rx) = SnapshotSender::channel();
                tx.with_subset(32).update(set(1..=100));
                published(&rx)
            })
            .collect();
        assert_ne!(picks[0], picks[1]);

        // Without a limit (or limit 0) every endpoint is published.
        let (tx, rx) = SnapshotSender::channel();
        tx.with_subset(0).update(set(1..=100));
        assert_eq!(published(&rx).len(), 100);
    }

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

    #[test]
    fn duplicates_keep_their_first_entry_in_order() {
        let set = vec![
            Endpoint::new("a:1").with_weight(2),
            Endpoint::new("b:1"),
            Endpoint::new("a:1").with_weight(9),
            Endpoint::new("c:1"),
            Endpoint::new("b:1"),
        ];
        let kept = dedup_by_addr(set);
        let shown: Vec<(&str, u32)> = kept.iter().map(|e| (e.addr.as_str(), e.weight)).collect();
        assert_eq!(shown, [("a:1", 2), ("b:1", 1), ("c:1", 1)]);
    }

    #[test]
    fn errors_keep_the_last_set() {
        let (tx, rx) = SnapshotSender::channel();
        tx.update(vec![Endpoint::new("a:1")]);
        tx.error("registry down");
        let s = rx.borrow().clone();
        assert_eq!(s.endpoints.unwrap()[0].addr, "a:1");
        assert_eq!(s.last_error.as_deref(), Some("registry down"));
        tx.update(vec![]);
        assert!(rx.borrow().last_error.is_none());
    }
}
