//! The process-wide driver registry: [`register`], [`use_driver`], [`get_driver`].
//!
//! It has the shape of the `log` crate's logger: set once, read cheaply everywhere, a
//! clear error when set twice. Semantics follow `dtmdriver` (v0.0.6):
//!
//! * registering a name twice replaces the first driver (a warning is logged);
//! * [`use_driver`] with an unknown name fails, listing the registered names;
//! * the first [`use_driver`] makes the driver current and runs its
//!   [`register_resolver`](crate::Driver::register_resolver) hook exactly once;
//! * [`use_driver`] with the current name again does nothing; with another name it fails;
//! * [`get_driver`] before any [`use_driver`] returns the built-in `default` driver.
//!
//! # Link-time registration
//!
//! A driver crate registers itself with [`register_driver!`](crate::register_driver);
//! linking the crate is then enough, the Rust analogue of Go's
//! `import _ "github.com/dtm-labs/driver-gozero"`. Rust only links a dependency the code
//! mentions, so a program that never names the driver crate adds one line:
//!
//! ```no_run
//! # mod dtmdriver_gozero {} // stands in for the real crate in this doctest
//! use dtmdriver_gozero as _; // keeps the driver linked
//! # fn main() -> Result<(), dtmdriver_core::Error> {
//! dtmdriver_core::use_driver("dtm-driver-gozero")?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, RwLock};

use crate::default_driver::DefaultDriver;
use crate::driver::Driver;
use crate::error::{Error, Result};

/// A driver submitted at link time by [`register_driver!`](crate::register_driver).
#[doc(hidden)]
pub struct DriverSubmission {
    make: fn() -> Arc<dyn Driver>,
}

impl DriverSubmission {
    #[doc(hidden)]
    pub const fn new(make: fn() -> Arc<dyn Driver>) -> Self {
        Self { make }
    }
}

inventory::collect!(DriverSubmission);

/// Registers a driver when its crate is linked. The argument is an expression that
/// builds the driver; it runs when the registry is first used.
///
/// ```
/// # use std::sync::Arc;
/// # use dtmdriver_core::{Driver, Error, ServerMethod};
/// #[derive(Default)]
/// struct Mine;
/// #[async_trait::async_trait]
/// impl Driver for Mine {
///     fn name(&self) -> &str { "mine" }
///     fn parse_server_method(&self, uri: &str) -> Result<ServerMethod, Error> {
///         dtmdriver_core::parse::parse_plain(uri)
///     }
/// }
/// dtmdriver_core::register_driver!(Mine::default());
/// assert!(dtmdriver_core::driver_names().contains(&"mine".to_string()));
/// ```
#[macro_export]
macro_rules! register_driver {
    ($make:expr) => {
        $crate::__private::inventory::submit! {
            $crate::registry::DriverSubmission::new(|| ::std::sync::Arc::new($make))
        }
    };
}

struct Registry {
    drivers: BTreeMap<String, Arc<dyn Driver>>,
    current: Option<Arc<dyn Driver>>,
}

static REGISTRY: LazyLock<RwLock<Registry>> = LazyLock::new(|| {
    let mut drivers: BTreeMap<String, Arc<dyn Driver>> = BTreeMap::new();
    let default: Arc<dyn Driver> = Arc::new(DefaultDriver);
    drivers.insert(default.name().to_string(), default);
    for submission in inventory::iter::<DriverSubmission> {
        let driver = (submission.make)();
        drivers.insert(driver.name().to_string(), driver);
    }
    RwLock::new(Registry {
        drivers,
        current: None,
    })
});

fn read() -> std::sync::RwLockReadGuard<'static, Registry> {
    // A panic while holding the lock cannot leave the maps half-written (every write
    // is a single insert or assignment), so a poisoned lock is safe to keep using.
    REGISTRY.read().unwrap_or_else(|e| e.into_inner())
}

fn write() -> std::sync::RwLockWriteGuard<'static, Registry> {
    REGISTRY.write().unwrap_or_else(|e| e.into_inner())
}

/// Registers `driver` under its name, replacing a driver of the same name.
pub fn register<D: Driver>(driver: D) {
    register_shared(Arc::new(driver));
}

/// [`register`] for a driver that is already shared.
pub fn register_shared(driver: Arc<dyn Driver>) {
    let name = driver.name().to_string();
    if write().drivers.insert(name.clone(), driver).is_some() {
        tracing::warn!(driver = %name, "a driver with this name was registered before; replaced it");
    }
}

/// Makes the driver called `name` the current one and installs its resolvers.
/// See the [module docs](self) for the rules.
pub fn use_driver(name: &str) -> Result<()> {
    let driver = {
        let mut reg = write();
        let Some(driver) = reg.drivers.get(name).cloned() else {
            return Err(Error::UnknownDriver {
                name: name.to_string(),
                registered: reg.drivers.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        };
        match &reg.current {
            Some(current) if current.name() == name => return Ok(()),
            Some(current) => {
                return Err(Error::DriverInUse {
                    current: current.name().to_string(),
                    requested: name.to_string(),
                });
            }
            None => reg.current = Some(driver.clone()),
        }
        driver
    };
    // Outside the lock: the hook may look at the registry itself.
    crate::resolve::note_driver_in_use(name);
    driver.register_resolver();
    tracing::info!(driver = name, "dtm driver in use");
    Ok(())
}

/// The current driver, or the `default` driver if [`use_driver`] was never called.
pub fn get_driver() -> Arc<dyn Driver> {
    let reg = read();
    match &reg.current {
        Some(d) => d.clone(),
        None => reg
            .drivers
            .get(crate::default_driver::NAME)
            .cloned()
            .unwrap_or_else(|| Arc::new(DefaultDriver)),
    }
}

/// The name of the driver made current by [`use_driver`], if any.
pub fn current_driver_name() -> Option<String> {
    read().current.as_ref().map(|d| d.name().to_string())
}

/// The names of all registered drivers, sorted; always includes `default`.
pub fn driver_names() -> Vec<String> {
    read().drivers.keys().cloned().collect()
}

/// A registered driver by name, without making it current: for programs that use
/// several drivers side by side.
pub fn find_driver(name: &str) -> Result<Arc<dyn Driver>> {
    let reg = read();
    reg.drivers
        .get(name)
        .cloned()
        .ok_or_else(|| Error::UnknownDriver {
            name: name.to_string(),
            registered: reg.drivers.keys().cloned().collect::<Vec<_>>().join(", "),
        })
}
