//! Bodies for the small parsers: `host:port`, branch URIs and dtm's `MicroService` YAML.

use dtmdriver_core::address::{HostPort, check_host};
use dtmdriver_core::{DefaultDriver, Driver, MicroService, Target};
use dtmdriver_etcd::EtcdDriver;
use dtmdriver_gozero::GoZeroDriver;
use dtmdriver_kratos::KratosDriver;

/// [`HostPort::parse`], [`HostPort::new`], [`HostPort::canonical`] and [`check_host`]: an
/// accepted address has a port from 1 to 65535, prints back to itself, and is what `new`
/// builds from its parts; `canonical` gives what `parse` and printing give, errors
/// alike; `check_host` accepts whatever `parse` accepts.
pub fn host_port(data: &[u8]) {
    let s = crate::text(data);
    assert_eq!(
        HostPort::canonical(&s),
        HostPort::parse(&s).map(|a| a.to_string()),
        "{s:?}"
    );
    if let Ok(a) = HostPort::parse(&s) {
        assert_ne!(a.port(), 0, "{s:?}");
        let shown = a.to_string();
        let again = HostPort::parse(&shown)
            .unwrap_or_else(|e| panic!("{s:?} parsed but its display {shown:?} does not: {e}"));
        assert_eq!(again, a, "{s:?}");
        assert_eq!(HostPort::new(a.host(), a.port()).as_ref(), Ok(&a), "{s:?}");
        assert!(check_host(&s).is_ok(), "{s:?}");
        assert!(HostPort::parse_endpoint(&s).is_ok(), "{s:?}");
    } else {
        let _ = check_host(&s);
        let _ = HostPort::parse_endpoint(&s);
    }
    // consul's Address and Port, given apart.
    if let Some((host, port)) = s.rsplit_once(':')
        && let Ok(port) = port.parse::<u16>()
        && let Ok(a) = HostPort::new(host, port)
    {
        let shown = a.to_string();
        assert_eq!(
            HostPort::parse(&shown).as_ref(),
            Ok(&a),
            "HostPort::new({host:?}, {port}) printed {shown:?}"
        );
    }
}

/// Every driver's `parse_server_method` (default, go-zero, kratos, native etcd and
/// consul): the method is a gRPC path `/service/method`, the server is not empty, and
/// (where no query is dropped) server and method put together give the URI back. A
/// server that parses as a target does so without panicking.
pub fn server_method(data: &[u8]) {
    let uri = crate::text(data);
    let drivers: [(&dyn Driver, bool); 5] = [
        (&DefaultDriver, true),
        // go-zero drops a consul or nacos query before the method.
        (&GoZeroDriver, !uri.contains('?')),
        (&KratosDriver::default(), true),
        (&EtcdDriver, true),
        (&dtmdriver_consul::ConsulDriver, true),
    ];
    for (driver, concatenates) in drivers {
        let Ok(sm) = driver.parse_server_method(&uri) else {
            continue;
        };
        let name = driver.name();
        assert!(
            !sm.server.is_empty(),
            "{name}: {uri:?} gave an empty server"
        );
        let shape = sm
            .method
            .strip_prefix('/')
            .and_then(|m| m.split_once('/'))
            .is_some_and(|(svc, m)| !svc.is_empty() && !m.is_empty() && !m.contains('/'));
        assert!(shape, "{name}: {uri:?} gave method {:?}", sm.method);
        if concatenates {
            assert_eq!(
                format!("{}{}", sm.server, sm.method),
                *uri,
                "{name}: server and method do not give the URI back"
            );
        }
        let _ = Target::parse(&sm.server);
    }
}

/// [`MicroService::from_yaml_str`]: no panic on any document; an accepted one is
/// unchanged by an empty override set, and its target parses without panicking.
pub fn micro_service(data: &[u8]) {
    let yaml = crate::text(data);
    let Ok(ms) = MicroService::from_yaml_str(&yaml) else {
        return;
    };
    assert_eq!(ms.clone().with_overrides(|_| None), ms);
    let _ = Target::parse(&ms.target);
    let _ = HostPort::parse(&ms.endpoint);
}
