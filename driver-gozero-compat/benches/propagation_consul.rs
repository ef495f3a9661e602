//! How fast a consul registration change reaches a client's endpoint set: the Rust
//! channel through `dtm-driver-gozero` beside zero-contrib's consul resolver (what a
//! go-zero zrpc client dialling `consul://` uses; interop/bin/gozero-consul-watcher runs
//! it against a printing `resolver.ClientConn`, so it measures what gRPC's balancer
//! would be handed), on the same agent, in the same run, for the same changes.
//!
//! Each change is one agent call made here: register an instance in go-zero's format
//! (`PUT /v1/agent/service/register`) or deregister the oldest. Both sides hold blocking
//! health queries with `wait=14s`.
//!
//! `cargo bench -p dtmdriver-gozero --bench propagation_consul` prints median and p99
//! of the time from the start of each agent call to each side seeing the new set.

#![allow(clippy::print_stdout)] // a bench prints its table

mod stats;

use std::collections::BTreeSet;
use std::time::Instant;

use dtmdriver_gozero::GoZeroConsulFormat;
use stats::{channel_sets, read_sets, report, time_to};
use test_support::{ConsulAgent, InteropProcess};

const CHANGES: usize = 200;
const KEY: &str = "prop.rpc";

#[tokio::main]
async fn main() {
    let agent = ConsulAgent::start();
    let target = format!("consul://{}/{KEY}?wait=14s", agent.http_addr());

    let mut go = InteropProcess::start_piped("gozero-consul-watcher", &["-target", &target]);
    let go_sets = read_sets(go.child().stdout.take().expect("stdout"));
    time_to(&go_sets, &BTreeSet::new(), Instant::now());

    dtmdriver_core::use_driver("dtm-driver-gozero").expect("driver linked");
    let rust_sets = channel_sets(dtmdriver_core::connect(&target).expect("connect"));
    time_to(&rust_sets, &BTreeSet::new(), Instant::now());

    let mut expected = BTreeSet::new();
    let (mut rust, mut gozero) = (Vec::new(), Vec::new());
    for i in 0..CHANGES {
        // Alternate: add an instance, then (every other step) remove the newest but one.
        let start = Instant::now();
        let addr = |i: usize| format!("127.0.0.1:{}", 20000 + i);
        let call = if i % 2 == 0 || expected.is_empty() {
            let registration = GoZeroConsulFormat::registration(KEY, &addr(i)).expect("format");
            let body = GoZeroConsulFormat::extras(KEY)
                .register_body(&registration)
                .expect("body");
            expected.insert(addr(i));
            (
                "PUT",
                "/v1/agent/service/register".to_string(),
                body.to_string(),
            )
        } else {
            expected.remove(&addr(i - 1));
            let id = GoZeroConsulFormat::id(KEY, "127.0.0.1", 20000 + (i - 1) as u16);
            (
                "PUT",
                format!("/v1/agent/service/deregister/{id}"),
                String::new(),
            )
        };
        let (code, body) = agent.api(call.0, &call.1, &call.2);
        assert_eq!(code, 200, "{} {}: {body}", call.0, call.1);
        rust.push(time_to(&rust_sets, &expected, start));
        gozero.push(time_to(&go_sets, &expected, start));
    }
    println!(
        "consul registration change -> client endpoint set, {CHANGES} changes, same agent, same run"
    );
    report("rust channel (dtm-driver-gozero)", rust);
    report("zero-contrib consul resolver (go-zero)", gozero);
    drop(go);
}
