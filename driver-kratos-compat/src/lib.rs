//! `dtm-driver-kratos`: kratos' registry formats on the etcd and consul engines.
//!
//! Contract: a driver name ([`NAME`]), the schemes `discovery`, `etcd` and `consul`, the
//! shared branch-URI rule ([`parse_scheme_url`]) and kratos' formats: the instance JSON
//! and endpoint choice ([`instance`]), the etcd layout ([`KratosEtcdFormat`]) and the
//! consul registration ([`KratosConsulFormat`]). Leases, watches, heartbeats and retries
//! are the engines' (`dtmdriver-etcd`, `dtmdriver-consul`). `discovery:///NAME` lives in
//! the registry of its `?registry=`, its authority's hosts (etcd),
//! [`KratosDriver::with_registry`] or [`REGISTRY_ENV`] ([`RegistryChoice`]). Plaintext
//! clients dial an instance's first plaintext gRPC endpoint, TLS clients
//! ([`KratosDriver::tls_channel`]) its first TLS one. Cargo features `etcd` and `consul`
//! (default); a registry whose feature is off is refused naming it ([`FeatureOff`]).
//! Linking the crate registers the driver (`use dtmdriver_kratos as _;`).
//!
//! Registering, resolving, the branch URIs dtm's Go coordinator accepts, and where we
//! differ from kratos and why: `docs/kratos.md`.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use dtmdriver_kratos::KratosDriver;
//! // Choose the registry of discovery:/// targets in code (or DTM_KRATOS_REGISTRY).
//! dtmdriver_core::register(KratosDriver::default().with_registry("etcd://127.0.0.1:2379")?);
//! dtmdriver_core::use_driver("dtm-driver-kratos")?;
//! let registration = dtmdriver_core::get_driver()
//!     .register_service("discovery:///busi", "grpc://127.0.0.1:9000")
//!     .await?;
//! let channel = dtmdriver_core::connect("discovery:///busi")?;
//! # drop(channel); registration.deregister().await?; Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use dtmdriver_core::feature_off::FeatureOff;
use dtmdriver_core::parse::parse_scheme_url;
use dtmdriver_core::registration_options::RegistrationOptions;
use dtmdriver_core::registry_choice::RegistryChoice;
use dtmdriver_core::resolve::{Registrar, Resolver, SnapshotSender};
use dtmdriver_core::{
    ChannelBuilder, Driver, Error, Registration, Result, ServerMethod, Target, TlsConnector,
};

#[cfg(feature = "consul")]
pub mod consul;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod instance;

#[cfg(feature = "consul")]
pub use consul::KratosConsulFormat;
#[cfg(feature = "etcd")]
pub use etcd::KratosEtcdFormat;
pub use instance::{KratosInstance, Security};

/// The driver's name.
pub const NAME: &str = "dtm-driver-kratos";

/// The schemes the driver serves.
const SCHEMES: [&str; 3] = ["discovery", "etcd", "consul"];

/// The environment variable naming the registry of `discovery:///` targets.
pub const REGISTRY_ENV: &str = "DTM_KRATOS_REGISTRY";

/// The registries of `discovery:///NAME`; the target's other parameters stay with it.
const REGISTRIES: RegistryChoice = RegistryChoice {
    schemes: &[
        ("etcd", "etcd://HOST:2379"),
        ("consul", "consul://HOST:8500"),
    ],
    carry_query: false,
};

/// `dtm-driver-kratos` with its settings; see the [crate docs](crate).
#[derive(Clone, Debug, Default)]
pub struct KratosDriver {
    registry: Option<String>,
    version: String,
    metadata: BTreeMap<String, String>,
}

impl KratosDriver {
    /// The registry of `discovery:///` targets that name none themselves:
    /// `etcd://h1:2379,h2:2379` or `consul://h:8500`. Default: [`REGISTRY_ENV`].
    pub fn with_registry(mut self, registry: &str) -> Result<Self> {
        Target::in_registry(registry, "check", REGISTRIES.schemes, &[])?;
        self.registry = Some(registry.to_string());
        Ok(self)
    }

    /// The version registered instances carry (a target's `?version=` overrides it).
    /// Default: empty, as a kratos app without `kratos.Version`.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Adds a metadata entry to registered instances (a target's `?meta.K=V`
    /// overrides it). Default: none (`"metadata":null`).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// A resolver of this driver's targets for clients with `security`.
    pub fn resolver(&self, security: Security) -> KratosResolver {
        KratosResolver {
            driver: self.clone(),
            security,
        }
    }

    /// A channel builder for `target` that dials the instances' TLS endpoints with `tls`,
    /// checking certificates against the service's name (`busi` for `discovery:///busi`)
    /// as kratos' Go client does, unless `tls` names another.
    pub fn tls_channel(&self, target: &str, tls: TlsConnector) -> Result<ChannelBuilder> {
        let parsed = Target::parse(target)?;
        let tls = match tls.server_name() {
            Some(_) => tls,
            None => tls.with_server_name(parsed.endpoint()),
        };
        Ok(dtmdriver_core::Channel::builder(target)
            .resolver(Arc::new(self.resolver(Security::Tls)))
            .tls(tls))
    }

    /// The engine's target behind `target` (`etcd://hosts/NAME`, `consul://agent/NAME`).
    fn locate(&self, target: &Target) -> Result<Target> {
        self.locate_with_env(target, std::env::var(REGISTRY_ENV).ok())
    }

    fn locate_with_env(&self, target: &Target, env: Option<String>) -> Result<Target> {
        let name = target.endpoint();
        let why = match target.scheme() {
            "etcd" | "consul" => return Ok(target.clone()),
            "discovery" if !name.is_empty() && !name.contains('/') => {
                let env = env.as_deref().map(str::trim).filter(|r| !r.is_empty());
                let defaults = [
                    ("KratosDriver::with_registry", self.registry.as_deref()),
                    (REGISTRY_ENV, env),
                ];
                return REGISTRIES.locate(target, name, &defaults);
            }
            "discovery" => "the service name must be one path segment; write discovery:///NAME",
            other => &format!(
                "scheme `{other}` is not one of {NAME}'s ({})",
                SCHEMES.join(", ")
            ),
        };
        Err(Error::bad_target(target, why))
    }

    /// The registration options kratos' format on `engine` stores: `?weight=` and
    /// `?meta.K=` ([`RegistrationOptions`]), and on etcd `?ttl=`, the lease's.
    fn options(target: &Target, engine: &Target) -> Result<RegistrationOptions> {
        match engine.scheme() {
            "consul" => {
                let format = "kratos' consul registration (its TTL check is kratos' 20 s)";
                RegistrationOptions::carried_by(target, &["weight", "meta"], format)
            }
            _ => {
                let format = "kratos' instance JSON, which has no group";
                RegistrationOptions::carried_by(target, &["weight", "meta", "ttl"], format)
            }
        }
    }

    /// The instance to register at `target` for dtm's `endpoint`, with `options` and
    /// `?version=`.
    fn instance(
        &self,
        target: &Target,
        options: &RegistrationOptions,
        name: &str,
        endpoint: &str,
    ) -> Result<KratosInstance> {
        let mut metadata = self.metadata.clone();
        metadata.extend(options.meta.clone());
        if target.query("weight").is_some() {
            metadata.insert("weight".into(), options.weight.to_string());
        }
        Ok(KratosInstance {
            id: KratosInstance::new_id(),
            name: name.to_string(),
            version: target.query("version").unwrap_or(&self.version).to_string(),
            metadata: (!metadata.is_empty()).then_some(metadata),
            endpoints: instance::endpoint_urls(endpoint)?,
        })
    }
}

/// The refusal of `target`, whose registry (`engine`'s scheme) this build left out.
fn feature_off(engine: &Target, target: &Target, what: &'static str) -> Error {
    let feature = if engine.scheme() == "consul" {
        "consul"
    } else {
        "etcd"
    };
    FeatureOff::new(NAME, env!("CARGO_PKG_NAME"), feature).error(target, what)
}

#[async_trait]
impl Driver for KratosDriver {
    fn name(&self) -> &str {
        NAME
    }

    /// Values with different registries resolve `discovery:///` differently.
    fn resolver_identity(&self) -> String {
        self.registry.clone().unwrap_or_default()
    }

    fn resolvers(&self) -> Vec<(&'static str, Arc<dyn Resolver>)> {
        let r: Arc<dyn Resolver> = Arc::new(self.resolver(Security::Plaintext));
        SCHEMES.map(|s| (s, r.clone())).into()
    }

    fn registrars(&self) -> Vec<(&'static str, Arc<dyn Registrar>)> {
        let r: Arc<dyn Registrar> = Arc::new(self.clone());
        SCHEMES.map(|s| (s, r.clone())).into()
    }

    fn parse_server_method(&self, uri: &str) -> Result<ServerMethod> {
        parse_scheme_url(uri)
    }
}

dtmdriver_core::register_driver!(KratosDriver::default());

/// Resolves kratos targets for plaintext or TLS clients; see the [crate docs](crate).
#[derive(Clone, Debug)]
pub struct KratosResolver {
    driver: KratosDriver,
    security: Security,
}

impl Resolver for KratosResolver {
    fn resolve(&self, target: &Target, updates: SnapshotSender) -> Result<()> {
        let engine = self.driver.locate(target)?;
        match engine.scheme() {
            #[cfg(feature = "etcd")]
            "etcd" => etcd::resolve(&engine, self.security, updates),
            #[cfg(feature = "consul")]
            "consul" => consul::resolve(&engine, self.security, updates),
            _ => Err(feature_off(&engine, target, "resolve")),
        }
    }
}

/// Registers kratos instances; see the [crate docs](crate).
#[async_trait]
impl Registrar for KratosDriver {
    async fn register(&self, target: &Target, endpoint: &str) -> Result<Registration> {
        let engine = self.locate(target)?;
        let options = Self::options(target, &engine)?;
        let instance = |name: &str| self.instance(target, &options, name, endpoint);
        match engine.scheme() {
            #[cfg(feature = "etcd")]
            "etcd" => {
                let label = target.as_str();
                etcd::register(&engine, label, endpoint, options.ttl, instance).await
            }
            #[cfg(feature = "consul")]
            "consul" => consul::register(&engine, target.as_str(), endpoint, instance).await,
            _ => Err(feature_off(&engine, target, "register a service at")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locate(d: &KratosDriver, t: &str) -> Result<String> {
        d.locate(&Target::parse(t).unwrap())
            .map(|t| t.as_str().to_string())
    }

    #[test]
    fn name_and_branch_uris() {
        let d = KratosDriver::default();
        assert_eq!(d.name(), "dtm-driver-kratos");
        let sm = d
            .parse_server_method("discovery:///busi/api.trans.v1.Trans/TransOut")
            .unwrap();
        assert_eq!(
            (sm.server.as_str(), sm.method.as_str()),
            ("discovery:///busi", "/api.trans.v1.Trans/TransOut")
        );
    }

    #[test]
    fn discovery_targets_find_their_registry() {
        let d = KratosDriver::default();
        let configured = d.clone().with_registry("consul://127.0.0.1:8500").unwrap();
        for (driver, target, engine) in [
            (
                &d,
                "discovery:///busi?registry=etcd://127.0.0.1:2379,127.0.0.1:22379",
                "etcd://127.0.0.1:2379,127.0.0.1:22379/busi",
            ),
            (
                &d,
                "discovery:///busi?registry=consul%3A%2F%2F127.0.0.1%3A8500%3Ftoken%3Dt&version=v2",
                "consul://127.0.0.1:8500/busi?token=t",
            ),
            (
                &d,
                "discovery://127.0.0.1:2379/busi?user=u",
                "etcd://127.0.0.1:2379/busi?user=u",
            ),
            (
                &d,
                "discovery://root:pw@127.0.0.1:2379/busi",
                "etcd://root:pw@127.0.0.1:2379/busi",
            ),
            (
                &configured,
                "discovery:///busi",
                "consul://127.0.0.1:8500/busi",
            ),
            (&d, "etcd://h:2379/busi", "etcd://h:2379/busi"),
            (&d, "consul://h:8500/busi", "consul://h:8500/busi"),
        ] {
            assert_eq!(locate(driver, target).unwrap(), engine, "{target}");
        }
    }

    #[test]
    fn missing_or_bad_registries_say_what_to_write() {
        let d = KratosDriver::default();
        let target = Target::parse("discovery:///busi").unwrap();
        let e = d.locate_with_env(&target, None).unwrap_err().to_string();
        assert!(e.contains(REGISTRY_ENV) && e.contains("?registry="), "{e}");
        let t = d
            .locate_with_env(&target, Some(" consul://127.0.0.1:8500 ".into()))
            .unwrap();
        assert_eq!(t.as_str(), "consul://127.0.0.1:8500/busi");
        let e = d
            .locate_with_env(&target, Some("zk://h:1".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains(REGISTRY_ENV) && e.contains("zk"), "{e}");
        let e = locate(&d, "discovery:///busi?registry=zk://h:1").unwrap_err();
        assert!(e.to_string().contains("?registry= is unusable"), "{e}");
        for (registry, needle) in [
            (
                "nacos://h:8848",
                "registry scheme `nacos` is not etcd or consul",
            ),
            ("etcd:///busi", "no registry host"),
            ("etcd://h:2379/busi", "drop `/busi`"),
        ] {
            let e = d.clone().with_registry(registry).unwrap_err().to_string();
            assert!(e.contains(needle), "{registry}: {e}");
        }
        for bad in ["discovery:///", "discovery:///a/b", "zk://h/busi"] {
            let e = locate(&d, bad).unwrap_err().to_string();
            assert!(
                e.contains("discovery:///NAME") || e.contains("not one of"),
                "{e}"
            );
        }
    }

    #[test]
    fn instances_take_version_and_metadata_from_driver_and_target() {
        let d = KratosDriver::default().version("v1").metadata("zone", "a");
        let instance = |d: &KratosDriver, t: &str, endpoint| {
            let t = Target::parse(t).unwrap();
            let options = KratosDriver::options(&t, &t)?;
            d.instance(&t, &options, "busi", endpoint)
        };
        let t = "etcd://h:2379/busi?version=v2&meta.tier=gold&weight=4";
        let i = instance(&d, t, "127.0.0.1:9000").unwrap();
        assert_eq!(i.version, "v2");
        assert_eq!(
            i.metadata.unwrap(),
            BTreeMap::from([
                ("tier".to_string(), "gold".to_string()),
                ("weight".to_string(), "4".to_string()),
                ("zone".to_string(), "a".to_string()),
            ])
        );
        assert_eq!(i.endpoints, ["grpc://127.0.0.1:9000"]);
        let plain = instance(&KratosDriver::default(), "etcd://h:2379/busi", "grpc://h:1");
        let plain = plain.unwrap();
        assert_eq!((plain.version.as_str(), plain.metadata), ("", None));
        let e = instance(&d, "etcd://h:2379/busi?weight=x", "h:1").unwrap_err();
        assert!(e.to_string().contains("weight `x`"), "{e}");
        // What the format cannot store is refused, naming it: group anywhere, the TTL
        // on consul, where kratos' check keeps its own.
        for (t, name) in [
            ("etcd://h:2379/busi?group=blue", "?group="),
            ("consul://h:8500/busi?ttl=30s", "?ttl="),
        ] {
            let e = instance(&d, t, "h:1").unwrap_err().to_string();
            assert!(e.contains(&format!("{name} cannot be registered")), "{e}");
        }
        assert!(instance(&d, "etcd://h:2379/busi?ttl=30s", "h:1").is_ok());
    }
}
