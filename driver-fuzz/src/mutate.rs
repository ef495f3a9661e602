//! Seeded random inputs for the stable-toolchain run: mutations of the kept corpus.
//!
//! Contract: [`run`] feeds a body exactly `cases` inputs, each derived from `seed` alone
//! (the same seed gives the same inputs on every machine), and on a panic reports the
//! input that caused it (escaped, and where to keep it as a regression) before
//! re-raising the panic.
//!
//! Why mutations rather than uniform bytes: a uniform random string almost never gets
//! past `scheme://` or a JSON brace; a corpus input with a few bytes flipped, tokens
//! spliced in or parts of another input pasted over reaches the deep branches, as
//! libFuzzer does (without its coverage feedback, which the nightly runs add).

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use crate::Body;

/// Pieces of the grammars the bodies parse, spliced into inputs.
const TOKENS: &[&str] = &[
    "://",
    ":///",
    "@",
    ":",
    "/",
    "?",
    "&",
    "=",
    ",",
    "[",
    "]",
    "%",
    "%2F",
    "%40",
    "%3F",
    "%25",
    "%FF",
    "+",
    "#",
    "*",
    "***",
    "etcd://",
    "consul://",
    "discovery:///",
    "direct:///",
    "registry://",
    "grpc://",
    "grpcs://",
    "http://",
    "127.0.0.1",
    "[::1]",
    "::1",
    ":2379",
    ":0",
    ":65535",
    ":65536",
    ":99999",
    "user:pw@",
    "root:p%40ss@",
    "?token=",
    "&password=",
    "?registry=",
    "etcd%3A%2F%2Froot%3Apw%40h",
    "?wait=",
    "?ttl=",
    "&interval=",
    "&timeout=",
    "99999999999999999999s",
    "1.8e19",
    "-1s",
    "1h2m3.5s",
    "NaN",
    "inf",
    "0.000000001ms",
    "?tls=true",
    "&tls_ca=",
    "&tls_cert=",
    "&tls_key=",
    "&tls_server_name=",
    "?subset=",
    "?key=",
    "&group=",
    "&weight=",
    "&meta.",
    "&check=grpc",
    "&grpc_tls=",
    "?healthy=",
    "&limit=",
    "/pb.Busi/TransOut",
    "/trans.TransSvc/TransOut",
    "{",
    "}",
    "[]",
    "[{",
    "}]",
    "\"",
    "\":",
    ",\"",
    "null",
    "true",
    "-1",
    "4294967296",
    "1e400",
    "\\u0000",
    "\\ud800",
    "\"Address\":",
    "\"Port\":",
    "\"Service\":",
    "\"Node\":",
    "\"Meta\":",
    "\"Tags\":",
    "\"TaggedAddresses\":",
    "\"Weights\":",
    "\"Checks\":",
    "\"Status\":",
    "\"name\":",
    "\"endpoints\":",
    "\"metadata\":",
    "\"isSecure=true\"",
    "\"Weight\":",
    "\"Group\":",
    "\"weight\":",
    "MicroService:",
    "\n  Driver: ",
    "\n  Target: ",
    "\n  EndPoint: ",
    "&a",
    "*a",
    "!!binary",
    "- ",
    "\t",
    " ",
    "\n",
    "\0",
    "\u{7f}",
    "é",
    "\u{feff}",
];

/// A small, fixed pseudo-random generator (SplitMix64): the inputs depend on the seed
/// only, not on a library's version.
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// One mutated input: a seed input (or nothing) with one to eight edits.
pub fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut input = if seeds.is_empty() || rng.below(16) == 0 {
        Vec::new()
    } else {
        seeds[rng.below(seeds.len())].clone()
    };
    for _ in 0..=rng.below(8) {
        let at = rng.below(input.len() + 1);
        match rng.below(8) {
            // Insert a token.
            0 | 1 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                input.splice(at..at, token.iter().copied());
            }
            // Insert random bytes.
            2 => {
                let n = 1 + rng.below(4);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                input.splice(at..at, bytes);
            }
            // Delete a range.
            3 => {
                let end = (at + 1 + rng.below(8)).min(input.len());
                input.drain(at.min(end)..end);
            }
            // Overwrite one byte.
            4 if at < input.len() => input[at] = rng.next_u64() as u8,
            // Paste part of another seed.
            5 if !seeds.is_empty() => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                let to = (from + rng.below(other.len() - from + 1)).min(other.len());
                input.splice(at..at, other[from..to].iter().copied());
            }
            // Repeat a range (long hosts, deep nesting).
            6 => {
                let end = (at + 1 + rng.below(16)).min(input.len());
                let piece = input[at.min(end)..end].to_vec();
                for _ in 0..rng.below(64) {
                    input.splice(at..at, piece.iter().copied());
                }
            }
            // Cut the input short.
            _ => input.truncate(at),
        }
    }
    input
}

/// Feeds `body` `cases` mutations of `seeds` drawn from `seed`; see the
/// [module docs](self).
pub fn run(name: &str, body: Body, seeds: &[Vec<u8>], cases: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    for case in 0..cases {
        let input = mutate(&mut rng, seeds);
        check(
            name,
            body,
            &input,
            &format!("random case {case} of seed {seed}"),
        );
    }
}

/// Runs `body` on `input`; on a panic reports the input, then re-raises the panic.
pub fn check(name: &str, body: Body, input: &[u8], what: &str) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| body(input))) {
        let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
        tracing_free_report(&format!(
            "fuzz body `{name}` panicked on {what}: {:?}\n  hex: {hex}\n  keep it: \
             echo {hex} | xxd -r -p > fuzz/regressions/{name}/<short-name>",
            String::from_utf8_lossy(input),
        ));
        resume_unwind(panic);
    }
}

/// Reports to the test's output (this crate runs only in tests and fuzz targets).
fn tracing_free_report(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{message}");
}
