//! The fuzz bodies: one function per fuzz target, each taking arbitrary bytes.
//!
//! Contract: a body returns normally for every input. It panics only when the code under
//! test panics or breaks one of the properties the body asserts (a parsed address
//! prints back to itself, a redacted target holds no password of the target, a decoded
//! endpoint is a dialable `host:port`, ...). Bodies do no I/O, no network and no logging
//! set-up, so millions of inputs a minute go through them.
//!
//! Why one crate: the cargo-fuzz targets under `fuzz/` (nightly, libFuzzer) and the
//! stable-toolchain run inside `cargo test` (`tests/fuzz_replay.rs`: every kept corpus
//! and regression input, then seeded random mutations, see [`mutate`]) call these same
//! functions, so what the long runs explore is what the test command checks.
//!
//! [`TARGETS`] lists every body under the name of its cargo-fuzz target and of its
//! corpus folder `fuzz/corpus/<name>/`. See `docs/fuzzing.md`.

pub mod decoders;
pub mod mutate;
pub mod parsers;
pub mod target;

/// A fuzz body: takes any bytes, panics only on a bug.
pub type Body = fn(&[u8]);

/// Every fuzz body by target name (the cargo-fuzz binary and the corpus folder).
pub const TARGETS: &[(&str, Body)] = &[
    ("target", target::target),
    ("host_port", parsers::host_port),
    ("server_method", parsers::server_method),
    ("micro_service", parsers::micro_service),
    ("gozero_etcd_value", decoders::gozero_etcd_value),
    ("gozero_consul_entries", decoders::gozero_consul_entries),
    ("kratos_etcd_value", decoders::kratos_etcd_value),
    ("kratos_consul_entries", decoders::kratos_consul_entries),
    ("native_etcd_value", decoders::native_etcd_value),
    ("native_consul_entries", decoders::native_consul_entries),
];

/// The body named `name`, if any.
pub fn body(name: &str) -> Option<Body> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// The input as text, invalid UTF-8 replaced: every string parser sees every input.
pub(crate) fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}
