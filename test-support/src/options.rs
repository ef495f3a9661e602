//! What the registration options of a target must mean on every engine (issue #14):
//! one table, run against the native etcd and consul formats by their own tests.

use std::time::Duration;

/// What a registered instance reads back as, through the engine's own decoder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadBack {
    /// The weight a resolver sees.
    pub weight: u32,
    /// The group (empty for none).
    pub group: &'static str,
    /// The TTL the registry keeps the instance for.
    pub ttl: Duration,
    /// Metadata besides `group` and `weight`.
    pub meta: &'static [(&'static str, &'static str)],
}

impl ReadBack {
    /// Whether `endpoint`, read back with `ttl`, is what this says: its weight, its
    /// `group` metadata and its other metadata.
    pub fn matches(&self, endpoint: &dtmdriver_core::Endpoint, ttl: Duration) -> bool {
        let group = endpoint.metadata.get("group").map_or("", String::as_str);
        let meta: Vec<(&str, &str)> = endpoint
            .metadata
            .iter()
            .filter(|(k, _)| *k != "group")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        (endpoint.weight, group, ttl, meta.as_slice())
            == (self.weight, self.group, self.ttl, self.meta)
    }
}

const PLAIN: ReadBack = ReadBack {
    weight: 1,
    group: "",
    ttl: Duration::from_secs(10),
    meta: &[],
};

/// `(query, what it reads back as | a piece of the error)`, for
/// `SCHEME://HOST/svc{query}` registered at `127.0.0.1:9000`.
pub fn registration_option_cases() -> Vec<(&'static str, Result<ReadBack, &'static str>)> {
    vec![
        ("", Ok(PLAIN)),
        ("?weight=3", Ok(ReadBack { weight: 3, ..PLAIN })),
        ("?weight=0", Ok(PLAIN)),
        (
            "?weight=100000",
            Ok(ReadBack {
                weight: 100_000,
                ..PLAIN
            }),
        ),
        (
            "?weight=2147483648",
            Err("weight `2147483648` is not a whole number from 0 to 2147483647"),
        ),
        ("?weight=-1", Err("weight `-1` is not a whole number")),
        ("?ttl=0", Err("ttl `0` is not a duration from 1s to 24h")),
        (
            "?ttl=25h",
            Err("ttl `25h` is not a duration from 1s to 24h"),
        ),
        (
            "?ttl=20s",
            Ok(ReadBack {
                ttl: Duration::from_secs(20),
                ..PLAIN
            }),
        ),
        (
            "?ttl=15",
            Ok(ReadBack {
                ttl: Duration::from_secs(15),
                ..PLAIN
            }),
        ),
        (
            "?group=blue",
            Ok(ReadBack {
                group: "blue",
                ..PLAIN
            }),
        ),
        (
            "?meta.zone=a&meta.tier=gold",
            Ok(ReadBack {
                meta: &[("tier", "gold"), ("zone", "a")],
                ..PLAIN
            }),
        ),
    ]
}

/// Registers at `target?QUERY` through `driver` for each of `queries` and checks each
/// is refused naming its option (`meta.K` for any `meta.*`) as one `format` cannot
/// store: the check for formats that store fewer options than the native ones.
pub async fn refuses_options(
    driver: &dyn dtmdriver_core::Driver,
    target: &str,
    queries: &[&str],
    format: &str,
) {
    for query in queries {
        let e = driver
            .register_service(&format!("{target}?{query}"), "127.0.0.1:9001")
            .await
            .expect_err("the option is refused")
            .to_string();
        let option = query.split('=').next().unwrap_or_default();
        let option = if option.starts_with("meta.") {
            "meta.K"
        } else {
            option
        };
        assert!(
            e.contains(&format!("?{option}= cannot be registered in {format}")),
            "{query}: {e}"
        );
    }
}
