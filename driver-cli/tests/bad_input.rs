//! `dtmdriver` given bad input: a usage error (exit 2) naming what is wrong and the
//! allowed values, at once, never a panic (exit 101). The cases of issue #11 items 2, 6
//! and 8; none needs a registry, since all are refused before any request.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::run_bounded;

/// Huge enough to overflow `Duration::from_secs_f64`.
const HUGE: &str = "99999999999999999999s";

/// Runs `dtmdriver ARGS` and checks it is a usage error whose message holds every
/// one of `needles`, reported within a second.
fn refused(args: &[&str], needles: &[&str]) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dtmdriver"));
    command
        .args(args)
        .env_remove("DTM_DRIVER")
        .env_remove("DTM_KRATOS_REGISTRY")
        .env_remove("CONSUL_HTTP_TOKEN")
        .env("RUST_LOG", "warn");
    let started = Instant::now();
    let out = run_bounded(command, "dtmdriver");
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{args:?}: no `{needle}` in: {err}");
    }
    assert!(
        took < Duration::from_secs(2),
        "{args:?}: refused only after {took:?}, not up front"
    );
}

/// Item 2: out-of-range durations in targets panicked in `Duration::from_secs_f64`.
#[test]
fn durations_out_of_range_in_targets_are_usage_errors() {
    let wait = format!("wait `{HUGE}` is not a duration from 1ms to 10m");
    for driver in ["dtm-driver-gozero", "dtm-driver-consul"] {
        refused(
            &[
                "--driver",
                driver,
                "resolve",
                &format!("consul://127.0.0.1:8500/svc?wait={HUGE}"),
            ],
            &[&wait],
        );
    }
    refused(
        &[
            "--driver",
            "dtm-driver-kratos",
            "resolve",
            &format!("discovery:///svc?registry=consul://127.0.0.1:8500?wait={HUGE}"),
        ],
        &[&wait],
    );
    for param in ["interval", "timeout"] {
        refused(
            &[
                "--driver",
                "dtm-driver-consul",
                "register",
                &format!("consul://127.0.0.1:8500/svc?check=grpc&{param}={HUGE}"),
                "127.0.0.1:9000",
            ],
            &[&format!(
                "{param} `{HUGE}` is not a duration from 1ms to 24h"
            )],
        );
    }
    for driver in ["dtm-driver-consul", "dtm-driver-etcd"] {
        refused(
            &[
                "--driver",
                driver,
                "register",
                &format!(
                    "{}://127.0.0.1:1/svc?ttl={HUGE}",
                    driver.rsplit('-').next().unwrap()
                ),
                "127.0.0.1:9000",
            ],
            &[&format!("ttl `{HUGE}` is not a duration from 1s to 24h")],
        );
    }
}

/// Item 2: `--timeout 1.8e19` panicked adding to an `Instant`.
#[test]
fn timeouts_out_of_range_are_usage_errors() {
    let needle = "--timeout `1.8e19` is not a duration from 1ms to 24h";
    refused(
        &["call", "direct:///127.0.0.1:1/a.B/C", "--timeout", "1.8e19"],
        &[needle],
    );
    refused(
        &["resolve", "direct:///127.0.0.1:1", "--timeout", "1.8e19"],
        &[needle],
    );
    refused(
        &["resolve", "direct:///127.0.0.1:1", "--timeout", "0"],
        &["--timeout `0`"],
    );
}

/// Item 6: the three-slash host list and TLS without a CA were found out only when
/// dialling (a 5 s wait, exit 3).
#[test]
fn etcd_hosts_and_tls_are_checked_up_front() {
    refused(
        &[
            "--driver",
            "dtm-driver-gozero",
            "resolve",
            "etcd:///127.0.0.1:99999?key=svc",
        ],
        &["port `99999` is not a number from 1 to 65535"],
    );
    refused(
        &[
            "--driver",
            "dtm-driver-gozero",
            "resolve",
            "etcd://127.0.0.1:2379/svc?tls=true",
        ],
        &["?tls_ca="],
    );
}

/// Item 8: a malformed endpoint exited 1, like a registry failure.
#[test]
fn malformed_endpoints_are_usage_errors() {
    for (driver, scheme) in [
        ("dtm-driver-gozero", "etcd"),
        ("dtm-driver-etcd", "etcd"),
        ("dtm-driver-gozero", "consul"),
        ("dtm-driver-consul", "consul"),
    ] {
        for (endpoint, why) in [
            ("not an address", "white space"),
            ("127.0.0.1:99999", "65535"),
            ("::1:7014", "brackets"),
            ("http://127.0.0.1:7013/x", "scheme"),
        ] {
            refused(
                &[
                    "--driver",
                    driver,
                    "register",
                    &format!("{scheme}://127.0.0.1:1/svc"),
                    endpoint,
                ],
                &["bad endpoint", why],
            );
        }
    }
}

/// Item 8: `--metadata k-bin=!!!` blamed the key (and exited 3, as a failed call).
#[test]
fn binary_metadata_that_is_not_base64_names_the_value() {
    refused(
        &[
            "call",
            "direct:///127.0.0.1:1/a.B/C",
            "--metadata",
            "k-bin=!!!",
        ],
        &["--metadata", "value `!!!` of `k-bin` is not base64"],
    );
}
