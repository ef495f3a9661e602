//! Masking secrets in targets before they are shown: [`redact`].
//!
//! Contract: whatever string it is given — a target, a branch URI, a half-typed
//! mistake — the result holds no password or token that the string held, written in
//! any of the ways a target can carry one:
//!
//! * the password of `user:password@` in the authority, percent-encoded or not, even
//!   when it holds characters that should have been escaped (`/`, `?`, `#`, `@`);
//! * the value of a query parameter whose name (percent-decoded, any case) speaks of a
//!   secret: `password`, `passwd`, `pwd`, `token`, `secret`, or a name containing one
//!   of them (`acl_token`, `client_secret`);
//! * the same, nested in a parameter whose value is itself a target (kratos'
//!   `?registry=etcd://root:pw@h:2379`), plain or percent-encoded.
//!
//! What is not secret stays readable: user names, hosts, keys, other parameters. When
//! the string is too malformed to tell the authority apart, more is masked rather than
//! less. Every edge that shows a target — `Target`'s `Display`, errors, channel
//! statuses, logs, CLI output — goes through this one function.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// What replaces a secret.
const MASK: &str = "***";

/// Query names whose values are secrets, matched as parts of the decoded,
/// lower-cased name.
const SECRET_NAMES: [&str; 4] = ["password", "passwd", "token", "secret"];

/// Characters kept as they are when a redacted nested target is percent-encoded again.
const NESTED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'*');

/// `target` with secrets masked, for logs, errors and printed output.
///
/// Whatever string it is given, the result holds no password or token the string held:
/// the password of `user:password@` (percent-encoded or not, even holding unescaped `/`,
/// `?`, `#` or `@`), the value of a query parameter whose decoded name speaks of a secret
/// (`password`, `passwd`, `pwd`, `token`, `secret`, or containing one of them), and the
/// same nested in a parameter whose value is itself a target (`?registry=…`, plain or
/// percent-encoded). User names, hosts, keys and other parameters stay readable; when
/// the string is too malformed to tell the authority apart, more is masked, not less.
///
/// ```
/// use dtmdriver_core::target::redact;
/// assert_eq!(
///     redact("consul://u:pw@h:8500/svc?token=s3cret&tag=x"),
///     "consul://u:***@h:8500/svc?token=***&tag=x"
/// );
/// assert_eq!(
///     redact("discovery:///svc?registry=etcd://root:pw@127.0.0.1:2379"),
///     "discovery:///svc?registry=etcd://root:***@127.0.0.1:2379"
/// );
/// ```
pub fn redact(target: &str) -> String {
    redact_at(target, 0)
}

/// `message` (an error's reason about `target`) with every secret of `target` masked,
/// including the pieces a password with unescaped `/`, `?`, `#`, `@` or `&` breaks into
/// when a parser splits it: a message that quotes part of a mistyped target cannot
/// leak what [`redact`] hides.
///
/// ```
/// use dtmdriver_core::target::redact_message;
/// assert_eq!(
///     redact_message("host `root:pa` has no port", "etcd://root:pa/ss@h:1/k"),
///     "host `root:***` has no port"
/// );
/// ```
pub fn redact_message(message: &str, target: &str) -> String {
    let mut secrets = Vec::new();
    collect_secrets(target, 0, &mut secrets);
    secrets.sort_unstable();
    secrets.dedup();
    // Only the secrets are masked: the rest is prose, which `redact` would misread (a
    // hint such as "pass ?token=... on the target" is no query).
    let shown = message;
    // Every byte some secret covers, found in one pass over the text: a
    // replacement made in place would be searched again, and a piece such as `**`
    // would then match in its own mask and grow the text with every copy.
    let mut covered = vec![false; shown.len()];
    for secret in &secrets {
        for (at, _) in shown.match_indices(secret.as_str()) {
            covered[at..at + secret.len()].fill(true);
        }
    }
    // Each run of covered characters becomes one mask.
    let mut out = String::with_capacity(shown.len());
    let mut masking = false;
    for (at, c) in shown.char_indices() {
        if covered[at] {
            if !masking {
                out.push_str(MASK);
            }
            masking = true;
        } else {
            out.push(c);
            masking = false;
        }
    }
    out
}

/// Adds the secrets `target` carries, and the pieces they break into, to `out`.
fn collect_secrets(target: &str, depth: usize, out: &mut Vec<String>) {
    let rest = target.split_once("://").map_or(target, |(_, r)| r);
    let mut add = |secret: &str| {
        for piece in std::iter::once(secret).chain(secret.split(['/', '?', '#', '@', '&'])) {
            // One character is no secret worth a garbled message.
            if piece.len() >= 2 && piece != MASK {
                out.push(piece.to_string());
                let decoded = decode(piece);
                if decoded != piece {
                    out.push(decoded.into_owned());
                }
            }
        }
    };
    if !rest.starts_with('/') {
        let before_query = rest.find('?').map_or(rest, |q| &rest[..q]);
        if let Some(at) = before_query.rfind('@').or_else(|| rest.rfind('@'))
            && let Some((_, password)) = rest[..at].split_once(':')
        {
            add(password);
        }
    }
    let Some((_, query)) = rest.split_once('?') else {
        return;
    };
    let mut nested = Vec::new();
    for pair in query.split('&') {
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        let name = decode(name).to_ascii_lowercase();
        if SECRET_NAMES.iter().any(|s| name.contains(s)) || name == "pwd" {
            add(value);
        } else if depth < 4 && decode(value).contains("://") {
            nested.push(decode(value).into_owned());
        }
    }
    for inner in nested {
        collect_secrets(&inner, depth + 1, out);
    }
}

/// [`redact`] of a target nested `depth` levels deep in others' parameters.
fn redact_at(target: &str, depth: usize) -> String {
    match target.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", redact_after_scheme(rest, depth)),
        None => redact_after_scheme(target, depth),
    }
}

/// Redacts what follows `scheme://` (or a string without a scheme).
fn redact_after_scheme(rest: &str, depth: usize) -> String {
    let (userinfo, tail) = mask_userinfo(rest);
    if userinfo.swallowed_query {
        // The '@' sat inside the query: what follows it are still parameters, and the
        // first of them continues the one the '@' cut (`password=p@ss`): when that one
        // is secret, its continuation is masked too.
        let before = &rest[..rest.len() - tail.len()];
        let query = before.split_once('?').map_or(before, |(_, q)| q);
        let cut = query.rsplit('&').next().unwrap_or_default();
        let pairs: Vec<String> = tail[1..]
            .split('&')
            .enumerate()
            .map(|(i, pair)| {
                let whole = format!("{cut}@{pair}");
                if i == 0 && redact_pair(&whole, depth) != whole {
                    MASK.to_string()
                } else {
                    redact_pair(pair, depth)
                }
            })
            .collect();
        return format!("{}@{}", userinfo.masked, pairs.join("&"));
    }
    format!("{}{}", userinfo.masked, redact_query(tail, depth))
}

/// A userinfo as shown.
struct MaskedUserinfo {
    /// The user name and masked password, or nothing.
    masked: String,
    /// True when the '@' that ends it lies after a '?'.
    swallowed_query: bool,
}

/// Splits `rest` (what follows `://`) into the masked userinfo and the remainder
/// (from the `@` on: hosts, path, query).
fn mask_userinfo(rest: &str) -> (MaskedUserinfo, &str) {
    let none = |rest| {
        let masked = String::new();
        (
            MaskedUserinfo {
                masked,
                swallowed_query: false,
            },
            rest,
        )
    };
    // An empty authority (`scheme:///…`) has no userinfo.
    if rest.starts_with('/') {
        return none(rest);
    }
    // The userinfo ends at an '@'. A password may hold '/', '?' or '@' unescaped, so
    // the last '@' counts, unless an '@' comes before the query (the common case, where
    // a later '@' belongs to a parameter's value).
    let before_query = rest.find('?').map_or(rest, |q| &rest[..q]);
    let Some(at) = before_query.rfind('@').or_else(|| rest.rfind('@')) else {
        return none(rest);
    };
    let (userinfo, tail) = (&rest[..at], &rest[at..]);
    let masked = match userinfo.split_once(':') {
        Some((user, _)) if !user.contains(['/', '?', '&', '=', '#']) => format!("{user}:{MASK}"),
        // A user name alone is no secret.
        None if !userinfo.contains(['/', '?', '&', '=', '#']) => userinfo.to_string(),
        // Too malformed to tell the user name apart: mask it all.
        _ => MASK.to_string(),
    };
    let swallowed_query = userinfo.contains('?');
    (
        MaskedUserinfo {
            masked,
            swallowed_query,
        },
        tail,
    )
}

/// Masks secret parameters in the query of `s` (everything after its first `?`).
fn redact_query(s: &str, depth: usize) -> String {
    let Some((head, query)) = s.split_once('?') else {
        return s.to_string();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| redact_pair(pair, depth))
        .collect();
    format!("{head}?{}", pairs.join("&"))
}

fn redact_pair(pair: &str, depth: usize) -> String {
    let Some((name, value)) = pair.split_once('=') else {
        return pair.to_string();
    };
    let decoded_name = decode(name).to_ascii_lowercase();
    if SECRET_NAMES.iter().any(|s| decoded_name.contains(s)) || decoded_name == "pwd" {
        return format!("{name}={MASK}");
    }
    let decoded = decode(value);
    if depth < 4 && decoded.contains("://") {
        // A nested target: redact it, keeping the encoding it was written in.
        let inner = redact_at(&decoded, depth + 1);
        if inner == decoded {
            return pair.to_string();
        }
        return if decoded.as_ref() != value {
            format!("{name}={}", utf8_percent_encode(&inner, NESTED))
        } else {
            format!("{name}={inner}")
        };
    }
    pair.to_string()
}

fn decode(s: &str) -> Cow<'_, str> {
    percent_decode_str(s).decode_utf8_lossy()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way a credential can be written, and what must remain.
    #[test]
    fn no_credential_survives() {
        let cases: &[(&str, &str)] = &[
            // userinfo
            ("etcd://root:pw@h1,h2/k", "etcd://root:***@h1,h2/k"),
            ("etcd://root:p%40ss@h:2379/k", "etcd://root:***@h:2379/k"),
            ("etcd://root:pa/ss@h:2379/k", "etcd://root:***@h:2379/k"),
            ("etcd://root:pa?ss@h:2379/k", "etcd://root:***@h:2379/k"),
            ("etcd://root:pa@ss@h:2379/k", "etcd://root:***@h:2379/k"),
            ("etcd://root:pa#ss@h:2379/k", "etcd://root:***@h:2379/k"),
            (
                "consul://u:pw@h:8500/svc?tag=a",
                "consul://u:***@h:8500/svc?tag=a",
            ),
            ("etcd://root@h/k", "etcd://root@h/k"),
            // query parameters
            (
                "etcd://h:2379/k?user=root&password=pw",
                "etcd://h:2379/k?user=root&password=***",
            ),
            (
                "etcd:///h:2379?key=k&password=pw",
                "etcd:///h:2379?key=k&password=***",
            ),
            ("consul://h/s?token=t", "consul://h/s?token=***"),
            ("consul://h/s?Token=t", "consul://h/s?Token=***"),
            ("consul://h/s?acl_token=t", "consul://h/s?acl_token=***"),
            ("x://h/s?pass%77ord=t", "x://h/s?pass%77ord=***"),
            ("x://h/s?passwd=t&pwd=u", "x://h/s?passwd=***&pwd=***"),
            ("x://h/s?client_secret=t", "x://h/s?client_secret=***"),
            ("x://h/s?password=a%26b", "x://h/s?password=***"),
            // nested in registry=
            (
                "discovery:///svc?registry=etcd://root:pw@127.0.0.1:2379",
                "discovery:///svc?registry=etcd://root:***@127.0.0.1:2379",
            ),
            (
                "discovery:///svc?registry=etcd%3A%2F%2Froot%3Apw%40127.0.0.1%3A2379",
                "discovery:///svc?registry=etcd%3A%2F%2Froot%3A***%40127.0.0.1%3A2379",
            ),
            (
                "discovery:///svc?registry=consul%3A%2F%2Fh%3A8500%3Ftoken%3Ds3cret",
                "discovery:///svc?registry=consul%3A%2F%2Fh%3A8500%3Ftoken%3D***",
            ),
            // a branch URI
            (
                "etcd://root:pw@h:2379/trans/pb.S/M",
                "etcd://root:***@h:2379/trans/pb.S/M",
            ),
            // nothing to hide
            ("direct:///a:1,b:2", "direct:///a:1,b:2"),
            ("localhost:80", "localhost:80"),
            ("localhost:80/pb.S/M", "localhost:80/pb.S/M"),
            (
                "etcd://h:2379/svc?key=k&tls_key=/k.pem",
                "etcd://h:2379/svc?key=k&tls_key=/k.pem",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(redact(input), *want, "{input}");
        }
        for secret in ["pw", "pa/ss", "pa?ss", "p%40ss", "s3cret", "pa#ss"] {
            for (input, _) in cases {
                if input.contains(&format!(":{secret}@")) || input.contains(&format!("={secret}")) {
                    assert!(!redact(input).contains(secret), "{input}");
                }
            }
        }
    }

    #[test]
    fn malformed_input_masks_more_not_less() {
        for input in [
            "etcd://h:1/k?user=a@b&password=x",
            "etcd://a/b:c@h/k",
            "://u:pw@",
            "u:pw@h:1",
        ] {
            let out = redact(input);
            assert!(
                !out.contains(":pw@") && !out.contains("=x"),
                "{input} -> {out}"
            );
        }
    }

    #[test]
    fn messages_lose_every_piece_of_a_secret() {
        for (message, target, want) in [
            (
                "host `root:s3cret` is bad",
                "etcd://root:s3cret/x@h:1/k",
                "host `root:***` is bad",
            ),
            (
                "port `s3cret` is bad",
                "etcd://root:s3cret?q@h:1/k",
                "port `***` is bad",
            ),
            (
                "value `tok3n` is bad",
                "consul://h/s?token=tok3n",
                "value `***` is bad",
            ),
            (
                "user `p@ss` is bad",
                "etcd://u:p%40ss@h/k",
                "user `***` is bad",
            ),
            (
                "registry etcd://root:pw1@h:1 is down",
                "discovery:///s?registry=etcd%3A%2F%2Froot%3Apw1%40h%3A1",
                "registry etcd://root:***@h:1 is down",
            ),
            ("nothing secret", "etcd://h:1/k", "nothing secret"),
            (
                "refused; pass ?token=... on the target or set CONSUL_HTTP_TOKEN",
                "consul://h/s",
                "refused; pass ?token=... on the target or set CONSUL_HTTP_TOKEN",
            ),
        ] {
            assert_eq!(redact_message(message, target), want, "{target}");
        }
    }

    #[test]
    fn idempotent() {
        for input in [
            "etcd://root:pw@h/k?token=t",
            "discovery:///svc?registry=etcd%3A%2F%2Froot%3Apw%40h%3A1",
        ] {
            let once = redact(input);
            assert_eq!(redact(&once), once);
        }
    }

    /// Found by the `target` fuzz target (fuzz/regressions/target/at-in-secret-value and
    /// at-in-secret-name): an unescaped '@' in a secret parameter made the part after it
    /// look like a new parameter, shown in clear.
    #[test]
    fn an_at_sign_inside_a_secret_parameter_hides_all_of_it() {
        for (input, secret) in [
            ("etcd://h:2379/k?user=root&password=p@ssw0rd", "ssw0rd"),
            ("consul://h/svc?token=abc@def&tag=x", "def"),
            (
                "etcS://h/k?password=p+w&tokencd://\u{fffd}y@h=t%20k",
                "t%20k",
            ),
        ] {
            let shown = redact(input);
            assert!(!shown.contains(secret), "{input} -> {shown}");
        }
        assert_eq!(
            redact("consul://h/svc?token=abc@def&tag=x"),
            "consul://***@***&tag=x"
        );
        assert_eq!(redact("consul://h/svc?x=a@b&tag=x"), "consul://***@b&tag=x");
    }
    /// Found by the `target` fuzz target (fuzz/regressions/target/oom-redact-message):
    /// a secret piece such as `**` matched again in the mask that replaced it, so each
    /// of its copies grew the message by half; a 1 KB target took 2.7 GB.
    #[test]
    fn messages_do_not_grow_with_repeated_secrets() {
        let target = format!("etcd://h/k?{}", "token=x/**&".repeat(24));
        let shown = redact_message("x/** and ** again", &target);
        assert_eq!(shown, "*** and *** again");
    }
}
