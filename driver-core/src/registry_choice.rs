//! Which registry a name-only target lives in: [`RegistryChoice`].
//!
//! Contract: a target whose scheme names no registry (kratos' `discovery:///NAME`, the
//! seed's `registry://NAME`) stands for the engine target `REGISTRY/NAME[?q]` of the
//! first registry named by, in order:
//!
//! 1. the target's `?registry=etcd://h1:2379,h2:2379[?q]` (percent-encoded inside a dtm
//!    branch URI), any of the choice's schemes; the error says it is `?registry=`;
//! 2. hosts in the target's authority, when a path names the service:
//!    `SCHEME://[user:pw@]h1:2379,h2:2379/NAME` is the choice's first scheme there;
//! 3. the first of the caller's defaults (a driver value, an environment variable),
//!    named in the error when it is unusable.
//!
//! None of them is `Ok(None)`: the caller says how to name one. The target's other
//! query parameters go with the service to its registry from the authority, and from
//! `?registry=` when [`carry_query`](RegistryChoice::carry_query) is set.
//!
//! Why here: the drivers of both name-only forms take the registry the same way
//! (kratos users spell it `?registry=`), and one rule keeps them alike.

use crate::error::{Error, Result};
use crate::target::Target;

/// How a driver's name-only targets find their registry; see the [module docs](self).
///
/// ```
/// use dtmdriver_core::Target;
/// use dtmdriver_core::registry_choice::RegistryChoice;
/// let choice = RegistryChoice { schemes: &[("etcd", "etcd://HOST:2379")], carry_query: true };
/// let t = Target::parse("registry:///busi?registry=etcd://h:2379&group=blue").unwrap();
/// let engine = choice.locate(&t, "busi", &[]).unwrap().unwrap();
/// assert_eq!(engine.as_str(), "etcd://h:2379/busi?group=blue");
/// let t = Target::parse("discovery://u:pw@h:2379/busi?user=u").unwrap();
/// assert_eq!(choice.locate(&t, "busi", &[]).unwrap().unwrap().as_str(), "etcd://u:pw@h:2379/busi?user=u");
/// let t = Target::parse("discovery:///busi").unwrap();
/// assert!(choice.locate(&t, "busi", &[]).unwrap().is_none());
/// let e = choice.locate(&t, "busi", &[("MY_REGISTRY", Some("zk://h:1"))]).unwrap_err().to_string();
/// assert!(e.contains("MY_REGISTRY is unusable") && e.contains("`zk` is not etcd"), "{e}");
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RegistryChoice<'a> {
    /// The registry schemes, each with an example to write; hosts in a target's
    /// authority are the first one.
    pub schemes: &'a [(&'a str, &'a str)],
    /// Whether the target's other query parameters go to the registry `?registry=`
    /// names (they always go with authority hosts).
    pub carry_query: bool,
}

impl RegistryChoice<'_> {
    /// The engine target of service `name` of `target`, or `None` when neither the
    /// target nor `defaults` (each `(where it comes from, registry if set)`, the first
    /// set one used) names a registry.
    pub fn locate(
        &self,
        target: &Target,
        name: &str,
        defaults: &[(&str, Option<&str>)],
    ) -> Result<Option<Target>> {
        let raw = target.as_str();
        let others: Vec<&str> = raw
            .split_once('?')
            .map(|(_, q)| q.split('&'))
            .into_iter()
            .flatten()
            .filter(|p| !p.is_empty() && p.split('=').next() != Some("registry"))
            .collect();
        let unusable = |source: &str, e: Error| {
            Error::bad_target(target, format!("{source} is unusable: {e}"))
        };
        if let Some(registry) = target.query("registry") {
            let extra = if self.carry_query { &others[..] } else { &[] };
            return Target::in_registry(registry, name, self.schemes, extra)
                .map(Some)
                .map_err(|e| unusable("its ?registry=", e));
        }
        if !target.hosts().is_empty() && !target.endpoint().is_empty() {
            let rest = raw.split_once("://").map_or(raw, |(_, rest)| rest);
            let authority = rest.split(['/', '?']).next().unwrap_or_default();
            let registry = format!("{}://{authority}", self.schemes[0].0);
            return Target::in_registry(&registry, name, self.schemes, &others).map(Some);
        }
        match defaults
            .iter()
            .find_map(|(source, r)| Some((source, (*r)?)))
        {
            Some((source, registry)) => Target::in_registry(registry, name, self.schemes, &[])
                .map(Some)
                .map_err(|e| unusable(source, e)),
            None => Ok(None),
        }
    }
}
