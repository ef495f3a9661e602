//! A complete driver in one file: a registry kept in a directory.
//!
//! `dir:///var/run/registry/trans` names the service `trans`; each instance is a file
//! in that directory whose name and content are its `host:port`. Registering writes
//! the file and removes it when the [`Registration`] ends; resolving lists the
//! directory every 200 ms and publishes the set when it changes. It shows every piece
//! a driver needs: a [`Resolver`], a [`Registrar`], a parse rule and link-time
//! registration with [`register_driver!`](dtmdriver_core::register_driver).
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use examples as _; // links the driver
//! dtmdriver_core::use_driver("example-dir")?;
//! let registration = dtmdriver_core::get_driver()
//!     .register_service("dir:///tmp/registry/trans", "127.0.0.1:50051")
//!     .await?;
//! let channel = dtmdriver_core::connect("dir:///tmp/registry/trans")?;
//! # drop(channel); registration.deregister().await?; Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dtmdriver_core::resolve::{Registrar, Resolver, SnapshotSender};
use dtmdriver_core::{Driver, Endpoint, Error, Registration, ServerMethod, Target, parse};

/// The driver's name for [`use_driver`](dtmdriver_core::use_driver).
pub const NAME: &str = "example-dir";

/// How often the resolver lists the directory.
const POLL: Duration = Duration::from_millis(200);

/// The directory driver. See the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct DirDriver;

dtmdriver_core::register_driver!(DirDriver);

#[async_trait]
impl Driver for DirDriver {
    fn name(&self) -> &str {
        NAME
    }

    fn resolvers(&self) -> Vec<(&'static str, Arc<dyn Resolver>)> {
        vec![("dir", Arc::new(DirRegistry))]
    }

    fn registrars(&self) -> Vec<(&'static str, Arc<dyn Registrar>)> {
        vec![("dir", Arc::new(DirRegistry))]
    }

    fn parse_server_method(&self, uri: &str) -> Result<ServerMethod, Error> {
        // dir:///a/b/trans/pkg.S/M: the service directory ends before the method.
        let Some(rest) = uri.strip_prefix("dir://") else {
            return parse::parse_plain(uri);
        };
        let segments: Vec<&str> = rest.rsplitn(3, '/').collect();
        if segments.len() < 3 {
            return Err(Error::BadUri {
                uri: uri.into(),
                reason: "write dir:///path/to/service/package.Service/Method".into(),
            });
        }
        let server = format!("dir://{}", segments[2]);
        let method = format!("/{}/{}", segments[1], segments[0]);
        Ok(ServerMethod { server, method })
    }
}

/// Both roles of the directory registry.
struct DirRegistry;

fn service_dir(target: &Target) -> Result<PathBuf, Error> {
    if !target.hosts().is_empty() || target.endpoint().is_empty() {
        return Err(Error::BadTarget {
            target: target.to_string(),
            reason: "write dir:///absolute/path/to/service (three slashes)".into(),
        });
    }
    Ok(PathBuf::from(format!("/{}", target.endpoint())))
}

fn registry_error(target: &Target, e: impl std::fmt::Display) -> Error {
    Error::Registry {
        target: target.to_string(),
        message: e.to_string(),
    }
}

#[async_trait]
impl Registrar for DirRegistry {
    async fn register(&self, target: &Target, endpoint: &str) -> Result<Registration, Error> {
        if endpoint.contains('/') || !endpoint.contains(':') {
            return Err(Error::BadEndpoint {
                endpoint: endpoint.into(),
                reason: "expected host:port".into(),
            });
        }
        let dir = service_dir(target)?;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| registry_error(target, e))?;
        let file = dir.join(endpoint);
        tokio::fs::write(&file, endpoint)
            .await
            .map_err(|e| registry_error(target, e))?;
        let target_name = target.to_string();
        Ok(Registration::spawn(
            target.as_str(),
            endpoint,
            move |stop| async move {
                stop.cancelled().await;
                tokio::fs::remove_file(&file)
                    .await
                    .map_err(|e| Error::Registry {
                        target: target_name,
                        message: e.to_string(),
                    })
            },
        ))
    }
}

impl Resolver for DirRegistry {
    fn resolve(&self, target: &Target, updates: SnapshotSender) -> Result<(), Error> {
        let dir = service_dir(target)?;
        tokio::spawn(async move {
            let mut last: Option<Vec<String>> = None;
            while !updates.is_closed() {
                match list(&dir).await {
                    Ok(addrs) if last.as_ref() != Some(&addrs) => {
                        updates.update(addrs.iter().map(Endpoint::new).collect());
                        last = Some(addrs);
                    }
                    Ok(_) => {}
                    Err(e) => updates.error(format!("cannot list {}: {e}", dir.display())),
                }
                tokio::select! {
                    _ = updates.closed() => return,
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
        });
        Ok(())
    }
}

async fn list(dir: &PathBuf) -> std::io::Result<Vec<String>> {
    let mut addrs = Vec::new();
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(e) => e,
        // No instance registered yet: an empty set, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(addrs),
        Err(e) => return Err(e),
    };
    while let Some(entry) = entries.next_entry().await? {
        if let Some(name) = entry.file_name().to_str() {
            addrs.push(name.to_string());
        }
    }
    addrs.sort();
    Ok(addrs)
}
