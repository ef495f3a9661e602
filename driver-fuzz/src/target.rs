//! The body for targets: [`Target::parse`] and everything derived from a target.
//!
//! Derived means: the getters, [`Target::query_duration`] with every range the drivers
//! use, [`redact`] and [`redact_message`] (on any string, parsed or not), the etcd and
//! consul cluster settings with their TLS options ([`EtcdTarget`], [`ConsulTarget`],
//! [`HealthQuery`] and its request path), go-zero's [`subset_size`] and consul query
//! ([`GoZeroConsulFormat::query`]: `healthy`, `limit`), the native registrations' options
//! ([`NativeOptions::from_target`], [`NativeEtcdFormat::registration`]: weight, TTL,
//! gRPC check durations), the native etcd `registry://` form ([`to_etcd_target`]), kratos'
//! `?registry=` ([`KratosDriver::with_registry`]) and the loopback warning.
//!
//! Properties, for a target that parses:
//!
//! * a duration read from the query lies in the range asked for;
//! * its display is its redaction, and when that masks just the secrets (not more, as
//!   [`redact`] does for an `@` outside the authority) it parses again to the same
//!   scheme, user, hosts and endpoint;
//! * no password, nor the value of a secret query parameter (`token=`, `password=`, ...,
//!   as [`redact`] defines them), shows in its display, in [`redact_message`] of a
//!   message quoting it, in the `Debug` of the etcd and consul settings, or in the error
//!   of any derived function. A secret is checked when the ideal redaction (the target
//!   as written with each secret replaced by `***`) does not already hold it, e.g.
//!   because it is also the host name.

use std::ops::Range;
use std::time::Duration;

use dtmdriver_consul::watch::WAIT_RANGE;
use dtmdriver_consul::{ConsulTarget, HealthQuery, NativeConsulFormat, NativeOptions};
use dtmdriver_core::Target;
use dtmdriver_core::driver::loopback_warning;
use dtmdriver_core::target::{redact, redact_message};
use dtmdriver_etcd::registry_target::to_etcd_target;
use dtmdriver_etcd::{EtcdTarget, NativeEtcdFormat};
use dtmdriver_gozero::{GoZeroConsulFormat, subset_size};
use dtmdriver_kratos::KratosDriver;

/// What replaces a secret (as [`redact`] writes it).
const MASK: &str = "***";

/// Query names whose values are secrets (as [`redact`] defines them).
fn secret_name(name: &str) -> bool {
    let name = decode(name).to_ascii_lowercase();
    ["password", "passwd", "token", "secret"]
        .iter()
        .any(|s| name.contains(s))
        || name == "pwd"
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// See the [module docs](self).
pub fn target(data: &[u8]) {
    let s = crate::text(data);
    // Any string, parsed or not.
    let shown = redact(&s);
    let _ = redact_message(&format!("cannot use `{s}`"), &s);
    let _ = redact(&shown);
    let Ok(t) = Target::parse(&s) else {
        return;
    };
    getters(&t);
    assert_eq!(t.to_string(), shown);
    let all = outputs(&s, &t);
    let (ideal, secrets) = secrets(&s, &t);
    if shown == ideal {
        // Masking each secret in place keeps the target's shape.
        let again = Target::parse(&shown)
            .unwrap_or_else(|e| panic!("{s:?} parsed but its display {shown:?} does not: {e}"));
        assert_eq!(
            (
                again.scheme(),
                again.user(),
                again.hosts(),
                again.endpoint()
            ),
            (t.scheme(), t.user(), t.hosts(), t.endpoint()),
            "{s:?}"
        );
    }
    // What the outputs hold anyway, whatever the secrets are (fixed text, other parts).
    let expected = match Target::parse(&ideal) {
        Ok(it) => format!("{ideal}\n{}", outputs(&ideal, &it)),
        Err(_) => ideal,
    };
    for secret in secrets {
        if !expected.contains(&secret) {
            assert!(
                !all.contains(&secret),
                "the secret {secret:?} of {s:?} shows:\n{all}"
            );
        }
    }
}

/// Everything shown about `t` (parsed from `s`): its display, a message quoting it
/// through [`redact_message`], and what is derived from it.
fn outputs(s: &str, t: &Target) -> String {
    let mut all = derived(t);
    all.push(t.to_string());
    all.push(redact_message(&format!("cannot use `{s}` ({s})"), s));
    all.join("\n")
}

/// Every getter and every duration the drivers read.
fn getters(t: &Target) {
    let _ = (t.as_str(), t.user(), t.password(), t.endpoint_list());
    assert_eq!(t.scheme(), t.scheme().to_ascii_lowercase());
    for h in t.hosts() {
        assert!(dtmdriver_core::address::check_host(h).is_ok(), "{h:?}");
    }
    let ranges = [
        WAIT_RANGE,
        dtmdriver_core::registration_options::RegistrationOptions::TTL_RANGE,
        NativeConsulFormat::CHECK_RANGE,
        Duration::ZERO..=Duration::MAX,
        Duration::MAX..=Duration::MAX,
    ];
    let keys = ["wait", "ttl", "interval", "timeout"]
        .into_iter()
        .chain(t.query_pairs().iter().map(|(k, _)| k.as_str()));
    for key in keys {
        let _ = t.query(key);
        for range in &ranges {
            if let Ok(Some(d)) = t.query_duration(key, range) {
                assert!(range.contains(&d), "{key}: {d:?} outside {range:?}");
            }
        }
    }
}

/// The outputs (values' `Debug`, errors' `Display`) of everything derived from `t`.
fn derived(t: &Target) -> Vec<String> {
    fn show<T: std::fmt::Debug>(r: dtmdriver_core::Result<T>) -> String {
        match r {
            Ok(v) => format!("{v:?}"),
            Err(e) => e.to_string(),
        }
    }
    let mut out = vec![
        show(EtcdTarget::from_target(t)),
        show(ConsulTarget::from_target(t)),
        show(subset_size(t)),
        show(GoZeroConsulFormat::query(t)),
        // What is registered (`?meta.token=x` is metadata the user publishes): errors only.
        show(NativeOptions::from_target(t).map(|_| ())),
        show(NativeEtcdFormat::registration(t, "127.0.0.1:9000").map(|_| ())),
        show(to_etcd_target(t).map(|e| e.to_string())),
        show(
            KratosDriver::default()
                .with_registry(t.as_str())
                .map(|_| ()),
        ),
        format!("{:?}", loopback_warning(t, "127.0.0.1:9000")),
    ];
    match HealthQuery::from_target(t) {
        Ok(q) => {
            out.push(format!("{q:?}"));
            out.push(q.path(0));
            out.push(q.path(u64::MAX));
        }
        Err(e) => out.push(e.to_string()),
    }
    out
}

/// The ideal redaction of `s` (a target that parsed as `t`: each secret replaced by
/// `***`) and the secrets of at least two characters (as written and decoded) that
/// neither it nor the decoded parts that are no secret (outputs show those decoded)
/// hold.
fn secrets(s: &str, t: &Target) -> (String, Vec<String>) {
    let spans = secret_spans(s);
    let mut ideal = String::new();
    let mut at = 0;
    for span in &spans {
        ideal.push_str(&s[at..span.start]);
        ideal.push_str(MASK);
        at = span.end;
    }
    ideal.push_str(&s[at..]);
    let mut plain = ideal.clone();
    for part in [t.user().unwrap_or_default(), t.endpoint()] {
        plain.push('\n');
        plain.push_str(part);
    }
    for (k, v) in t.query_pairs() {
        plain.push('\n');
        plain.push_str(k);
        if !secret_name(k) {
            plain.push('=');
            plain.push_str(v);
        }
    }
    let mut secrets = Vec::new();
    for span in spans {
        let raw = &s[span];
        for secret in [raw.to_string(), decode(raw), decode(&raw.replace('+', " "))] {
            if secret.chars().count() >= 2
                && !secret.contains('*')
                && !plain.contains(&secret)
                && !secrets.contains(&secret)
            {
                secrets.push(secret);
            }
        }
    }
    (ideal, secrets)
}

/// Where `s` (a target that parsed) writes its secrets: the password of its userinfo,
/// split as `Target::parse` splits it, and the values of secret query parameters.
fn secret_spans(s: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let Some(scheme_end) = s.find("://") else {
        return spans;
    };
    let rest_start = scheme_end + 3;
    let rest = &s[rest_start..];
    let query_start = rest.find('?');
    let before_query = &rest[..query_start.unwrap_or(rest.len())];
    let authority = before_query.split('/').next().unwrap_or_default();
    if let Some(at) = authority.rfind('@')
        && let Some(colon) = authority[..at].find(':')
    {
        spans.push(rest_start + colon + 1..rest_start + at);
    }
    if let Some(q) = query_start {
        let mut pos = rest_start + q + 1;
        for pair in s[pos..].split('&') {
            if let Some((name, value)) = pair.split_once('=')
                && secret_name(name)
                && !value.is_empty()
            {
                let start = pos + name.len() + 1;
                spans.push(start..start + value.len());
            }
            pos += pair.len() + 1;
        }
    }
    spans
}
