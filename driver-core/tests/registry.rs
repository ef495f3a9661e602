//! The process-wide driver registry follows dtmdriver's semantics (WIRE-FORMATS.md §1).
//! One test: the registry is global to this test binary, so the steps run in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dtmdriver_core::{Driver, Error, ServerMethod, parse::parse_plain};

struct Counting {
    name: &'static str,
    hook_calls: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Driver for Counting {
    fn name(&self) -> &str {
        self.name
    }

    fn register_resolver(&self) {
        self.hook_calls.fetch_add(1, Ordering::SeqCst);
    }

    fn parse_server_method(&self, uri: &str) -> Result<ServerMethod, Error> {
        parse_plain(uri)
    }
}

#[test]
fn registry_semantics_match_dtmdriver() {
    // Nothing used yet: the default driver answers.
    assert_eq!(dtmdriver_core::get_driver().name(), "default");
    assert_eq!(dtmdriver_core::current_driver_name(), None);
    assert!(dtmdriver_core::driver_names().contains(&"default".to_string()));

    // Unknown name: an error that lists what is registered and says how to link.
    let err = dtmdriver_core::use_driver("dtm-driver-nosuch").unwrap_err();
    assert!(matches!(err, Error::UnknownDriver { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("dtm-driver-nosuch") && msg.contains("default") && msg.contains("as _"),
        "{msg}"
    );

    let alpha_hook = Arc::new(AtomicUsize::new(0));
    let beta_hook = Arc::new(AtomicUsize::new(0));
    dtmdriver_core::register(Counting {
        name: "alpha",
        hook_calls: alpha_hook.clone(),
    });
    dtmdriver_core::register(Counting {
        name: "beta",
        hook_calls: beta_hook.clone(),
    });

    // Same name twice: the second replaces the first.
    let replacement_hook = Arc::new(AtomicUsize::new(0));
    dtmdriver_core::register(Counting {
        name: "alpha",
        hook_calls: replacement_hook.clone(),
    });
    let names = dtmdriver_core::driver_names();
    assert_eq!(
        names.iter().filter(|n| *n == "alpha").count(),
        1,
        "{names:?}"
    );

    // An unknown scheme's error says whether a driver is in use (the scheme tables
    // know it without asking the driver registry).
    let unknown = || {
        let target = dtmdriver_core::Target::parse("nosuch://h:1/x").unwrap();
        dtmdriver_core::resolve::resolver_for(&target)
            .err()
            .unwrap()
            .to_string()
    };
    assert!(unknown().contains("no driver is in use"), "{}", unknown());

    // First use: becomes current, its hook runs exactly once (the replacement's).
    dtmdriver_core::use_driver("alpha").unwrap();
    assert!(
        unknown().contains("the driver in use, `alpha`, does not handle this scheme"),
        "{}",
        unknown()
    );
    assert_eq!(replacement_hook.load(Ordering::SeqCst), 1);
    assert_eq!(alpha_hook.load(Ordering::SeqCst), 0);
    assert_eq!(dtmdriver_core::get_driver().name(), "alpha");
    assert_eq!(
        dtmdriver_core::current_driver_name().as_deref(),
        Some("alpha")
    );

    // Same driver again: no-op, the hook does not run again.
    dtmdriver_core::use_driver("alpha").unwrap();
    assert_eq!(replacement_hook.load(Ordering::SeqCst), 1);

    // Another driver: an error naming both; the current one stays.
    let err = dtmdriver_core::use_driver("beta").unwrap_err();
    assert!(matches!(err, Error::DriverInUse { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("alpha") && msg.contains("beta"), "{msg}");
    assert_eq!(beta_hook.load(Ordering::SeqCst), 0);
    assert_eq!(dtmdriver_core::get_driver().name(), "alpha");

    // Drivers stay usable as values without the global.
    assert_eq!(dtmdriver_core::find_driver("beta").unwrap().name(), "beta");
    assert!(dtmdriver_core::find_driver("nope").is_err());
}
