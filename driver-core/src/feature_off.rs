//! A scheme a driver crate was built without: [`FeatureOff`].
//!
//! Contract: resolving or registering a target through a [`FeatureOff`] fails with
//! [`Error::Unsupported`] saying which cargo feature of which package serves the scheme
//! ("built without the `consul` feature of dtmdriver-gozero") and how to turn it on.
//! Nothing is spawned and no registry is contacted.
//!
//! Why: driver crates put each registry engine behind a cargo feature, so that a service
//! links only the engines it uses. Their drivers keep the schemes of the engines left
//! out, served by a [`FeatureOff`], so that such a target is refused naming the feature
//! rather than as an unknown scheme.

use async_trait::async_trait;

use crate::driver::Registration;
use crate::error::{Error, Result};
use crate::resolve::{Registrar, Resolver, SnapshotSender};
use crate::target::Target;

/// Serves the schemes of an engine a driver crate was built without; see the
/// [module docs](self).
///
/// ```
/// use dtmdriver_core::feature_off::FeatureOff;
/// use dtmdriver_core::resolve::{Resolver, SnapshotSender};
/// let off = FeatureOff::new("dtm-driver-gozero", "dtmdriver-gozero", "consul");
/// let (updates, _snapshots) = SnapshotSender::channel();
/// let target = dtmdriver_core::Target::parse("consul://127.0.0.1:8500/svc").unwrap();
/// let err = off.resolve(&target, updates).unwrap_err().to_string();
/// assert!(err.contains("built without the `consul` feature of dtmdriver-gozero"), "{err}");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureOff {
    driver: &'static str,
    package: &'static str,
    feature: &'static str,
}

impl FeatureOff {
    /// The schemes of `feature` in `driver`, whose crate is the package `package`
    /// (`env!("CARGO_PKG_NAME")`).
    pub const fn new(driver: &'static str, package: &'static str, feature: &'static str) -> Self {
        Self {
            driver,
            package,
            feature,
        }
    }

    /// The error for `what` (e.g. "resolve") on `target`.
    pub fn error(&self, target: &Target, what: &'static str) -> Error {
        let (package, feature) = (self.package, self.feature);
        Error::Unsupported {
            driver: self.driver.to_string(),
            what,
            target: target.to_string(),
            reason: format!(
                "built without the `{feature}` feature of {package}; turn it on in \
                 Cargo.toml: {package} = {{ version = \"…\", features = [\"{feature}\"] }}"
            ),
        }
    }
}

impl Resolver for FeatureOff {
    fn resolve(&self, target: &Target, _updates: SnapshotSender) -> Result<()> {
        Err(self.error(target, "resolve"))
    }
}

#[async_trait]
impl Registrar for FeatureOff {
    async fn register(&self, target: &Target, _endpoint: &str) -> Result<Registration> {
        Err(self.error(target, "register a service at"))
    }
}

/// `Arc::new($engine)` when the calling crate's cargo feature `$feature` is on, else an
/// `Arc` of a [`FeatureOff`] of driver `$driver` refusing the scheme naming the feature:
/// the one way a driver crate lists the engines behind its features.
///
/// ```
/// use std::sync::Arc;
/// use dtmdriver_core::resolve::{DirectResolver, Resolver};
/// // In a crate without a `consul` feature this is the FeatureOff.
/// let r: Arc<dyn Resolver> = dtmdriver_core::engine_or_feature_off!("my-driver", "consul", DirectResolver);
/// # drop(r);
/// ```
#[macro_export]
macro_rules! engine_or_feature_off {
    ($driver:expr, $feature:literal, $engine:expr) => {{
        #[cfg(feature = $feature)]
        let engine = ::std::sync::Arc::new($engine);
        #[cfg(not(feature = $feature))]
        let engine = ::std::sync::Arc::new($crate::feature_off::FeatureOff::new(
            $driver,
            env!("CARGO_PKG_NAME"),
            $feature,
        ));
        engine
    }};
}
