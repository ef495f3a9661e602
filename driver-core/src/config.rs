//! The coordinator's `MicroService` configuration, as dtm reads it.
//!
//! ```yaml
//! MicroService:
//!   Driver: 'dtm-driver-gozero'        # default: 'default'
//!   Target: 'etcd://localhost:2379/dtmservice'
//!   EndPoint: 'localhost:36790'
//! ```
//!
//! The environment overrides the file: `MICRO_SERVICE_DRIVER`, `MICRO_SERVICE_TARGET`,
//! `MICRO_SERVICE_END_POINT`. Other top-level sections of dtm's config are ignored;
//! unknown keys inside `MicroService` are errors, since dtm would silently ignore a
//! misspelt `Endpoint`.
//!
//! ```
//! use dtmdriver_core::MicroService;
//! let ms = MicroService::from_yaml_str(
//!     "Store:\n  Driver: boltdb\nMicroService:\n  Driver: dtm-driver-gozero\n  Target: etcd://127.0.0.1:2379/dtmservice\n  EndPoint: 127.0.0.1:36790\n",
//! ).unwrap();
//! assert_eq!(ms.driver, "dtm-driver-gozero");
//! assert_eq!(ms.endpoint, "127.0.0.1:36790");
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::registration::Registration;

/// dtm's `MicroService` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MicroService {
    /// The driver name, e.g. `dtm-driver-gozero`. Default `default`.
    #[serde(rename = "Driver", default = "default_driver")]
    pub driver: String,
    /// Where to register, e.g. `etcd://localhost:2379/dtmservice`. Empty: nowhere.
    #[serde(rename = "Target", default)]
    pub target: String,
    /// The address to register, e.g. `localhost:36790`.
    #[serde(rename = "EndPoint", default)]
    pub endpoint: String,
}

impl Default for MicroService {
    fn default() -> Self {
        Self {
            driver: default_driver(),
            target: String::new(),
            endpoint: String::new(),
        }
    }
}

fn default_driver() -> String {
    crate::default_driver::NAME.to_string()
}

#[derive(Deserialize)]
struct TopLevel {
    #[serde(rename = "MicroService", default)]
    micro_service: Option<MicroService>,
}

impl MicroService {
    /// Reads the `MicroService` section of a YAML document (defaults if absent).
    pub fn from_yaml_str(yaml: &str) -> Result<Self> {
        Self::parse(yaml, "<string>")
    }

    /// Reads the `MicroService` section of a YAML file.
    pub fn from_yaml_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            source_name: path.display().to_string(),
            message: format!("cannot read the file: {e}"),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(yaml: &str, source_name: &str) -> Result<Self> {
        if yaml.trim().is_empty() {
            return Ok(Self::default());
        }
        let top: TopLevel = serde_norway::from_str(yaml).map_err(|e| Error::Config {
            source_name: source_name.to_string(),
            message: match e.location() {
                Some(l) => format!("line {} column {}: {e}", l.line(), l.column()),
                None => e.to_string(),
            },
        })?;
        Ok(top.micro_service.unwrap_or_default())
    }

    /// Applies `MICRO_SERVICE_DRIVER`, `MICRO_SERVICE_TARGET`, `MICRO_SERVICE_END_POINT`.
    pub fn with_env(self) -> Self {
        self.with_overrides(|k| std::env::var(k).ok())
    }

    /// Applies overrides from any lookup (the environment in [`with_env`](Self::with_env)).
    pub fn with_overrides(mut self, lookup: impl Fn(&str) -> Option<String>) -> Self {
        if let Some(v) = lookup("MICRO_SERVICE_DRIVER") {
            self.driver = v;
        }
        if let Some(v) = lookup("MICRO_SERVICE_TARGET") {
            self.target = v;
        }
        if let Some(v) = lookup("MICRO_SERVICE_END_POINT") {
            self.endpoint = v;
        }
        self
    }

    /// What a coordinator does at start: [`use_driver`](crate::use_driver) then
    /// register `endpoint` at `target`. Either error is returned (dtm makes both fatal).
    pub async fn register(&self) -> Result<Registration> {
        crate::use_driver(&self.driver)?;
        if !self.target.is_empty() && self.endpoint.is_empty() {
            return Err(Error::Config {
                source_name: "MicroService".into(),
                message: format!(
                    "Target `{}` is set but EndPoint is empty; set EndPoint (or MICRO_SERVICE_END_POINT) \
                     to the address other services should call, e.g. 10.0.0.5:36790",
                    self.target
                ),
            });
        }
        crate::get_driver()
            .register_service(&self.target, &self.endpoint)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtm_shape_and_defaults() {
        let ms = MicroService::from_yaml_str("MicroService:\n  Driver: 'dtm-driver-kratos'\n  Target: 'etcd://127.0.0.1:2379/dtmservice'\n  EndPoint: 'grpc://localhost:36790'\n").unwrap();
        assert_eq!(ms.driver, "dtm-driver-kratos");
        assert_eq!(ms.target, "etcd://127.0.0.1:2379/dtmservice");
        assert_eq!(ms.endpoint, "grpc://localhost:36790");
        assert_eq!(
            MicroService::from_yaml_str("Store:\n  Driver: boltdb\n").unwrap(),
            MicroService::default()
        );
        assert_eq!(MicroService::from_yaml_str("").unwrap().driver, "default");
        let partial = MicroService::from_yaml_str("MicroService:\n  Target: t\n").unwrap();
        assert_eq!(
            (partial.driver.as_str(), partial.endpoint.as_str()),
            ("default", "")
        );
    }

    #[test]
    fn env_overrides_each_key() {
        let ms =
            MicroService::from_yaml_str("MicroService:\n  Driver: a\n  Target: b\n  EndPoint: c\n")
                .unwrap()
                .with_overrides(|k| match k {
                    "MICRO_SERVICE_DRIVER" => Some("dtm-driver-gozero".into()),
                    "MICRO_SERVICE_END_POINT" => Some("10.0.0.5:36790".into()),
                    _ => None,
                });
        assert_eq!(ms.driver, "dtm-driver-gozero");
        assert_eq!(ms.target, "b");
        assert_eq!(ms.endpoint, "10.0.0.5:36790");
    }

    #[test]
    fn bad_yaml_names_the_line() {
        let err = MicroService::from_yaml_str("MicroService:\n  Driver: a\n   Target: [\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        let err = MicroService::from_yaml_str("MicroService:\n  Driver: a\n  Endpoint: x\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Endpoint") && err.contains("EndPoint") && err.contains("line 3"),
            "{err}"
        );
    }
}
