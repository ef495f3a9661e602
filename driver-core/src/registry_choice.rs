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
//! None of them is an error listing all three ways, with the caller's defaults by name
//! and the choice's examples. The target's other
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
/// let engine = choice.locate(&t, "busi", &[]).unwrap();
/// assert_eq!(engine.as_str(), "etcd://h:2379/busi?group=blue");
/// let t = Target::parse("discovery://u:pw@h:2379/busi?user=u").unwrap();
/// assert_eq!(choice.locate(&t, "busi", &[]).unwrap().as_str(), "etcd://u:pw@h:2379/busi?user=u");
/// let t = Target::parse("discovery:///busi").unwrap();
/// let e = choice.locate(&t, "busi", &[("MY_REGISTRY", None)]).unwrap_err().to_string();
/// assert!(e.ends_with("it names no registry; append ?registry=etcd://HOST:2379, \
///     write discovery://HOST:2379/busi for etcd, or set MY_REGISTRY to one"), "{e}");
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
    /// The engine target of service `name` of `target`; the error says how to name a
    /// registry when neither the target nor `defaults` (each `(where it comes from,
    /// registry if set)`, the first set one used) names one.
    pub fn locate(
        &self,
        target: &Target,
        name: &str,
        defaults: &[(&str, Option<&str>)],
    ) -> Result<Target> {
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
                .map_err(|e| unusable("its ?registry=", e));
        }
        if !target.hosts().is_empty() && !target.endpoint().is_empty() {
            let rest = raw.split_once("://").map_or(raw, |(_, rest)| rest);
            let authority = rest.split(['/', '?']).next().unwrap_or_default();
            let registry = format!("{}://{authority}", self.schemes[0].0);
            return Target::in_registry(&registry, name, self.schemes, &others);
        }
        match defaults
            .iter()
            .find_map(|(source, r)| Some((source, (*r)?)))
        {
            Some((source, registry)) => Target::in_registry(registry, name, self.schemes, &[])
                .map_err(|e| unusable(source, e)),
            None => Err(Error::bad_target(
                target,
                self.unnamed(target, name, defaults),
            )),
        }
    }

    /// What to write when nothing names a registry: `?registry=`, hosts in the
    /// authority, then the caller's defaults.
    fn unnamed(&self, target: &Target, name: &str, defaults: &[(&str, Option<&str>)]) -> String {
        let ((scheme, example), others) = self.schemes.split_first().expect("a registry scheme");
        let hosts = example.split_once("://").map_or("HOST:PORT", |(_, h)| h);
        let mut why = format!("it names no registry; append ?registry={example}");
        if !others.is_empty() {
            let others: Vec<&str> = others.iter().map(|(_, e)| *e).collect();
            why += &format!(" (or {})", others.join(", "));
        }
        why += &format!(", write {}://{hosts}/{name} for {scheme}", target.scheme());
        let sources: Vec<&str> = defaults.iter().map(|(source, _)| *source).collect();
        if !sources.is_empty() {
            why += &format!(", or set {} to one", sources.join(" or "));
        }
        why
    }
}
