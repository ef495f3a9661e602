//! Discovery at scale over consul, side by side with zero-contrib's consul resolver in
//! one run (issue #12).
//!
//! ```sh
//! bash interop/build.sh   # once: builds interop/bin/gozero-consul-watcher and consul-agent
//! cargo bench -p dtmdriver-gozero --bench scale_consul
//! # SCALE_SIZES=1000,10000  SCALE_CHANGES=30  SCALE_ROUNDS=3
//! ```
//!
//! One consul agent (`-dev`); every side is its own process, measured as the etcd scale
//! bench measures them (see `sides`: each side follows a service of its own, and sees
//! its changes while the others idle). The sides, each following a target
//! `consul://AGENT/KEY?wait=55s&near=_agent` (zero-contrib always asks for
//! `near=_agent`; ours is told to, so the agent answers both the same query):
//!
//! - `go-zero`: `interop/bin/gozero-consul-watcher -sizes`, zero-contrib's consul
//!   resolver (what a zrpc client dialling `consul://` uses) pushing to a
//!   `resolver.ClientConn` that counts the addresses it is handed;
//! - `rs-resolver`: `dtm-driver-gozero`'s consul resolver on that target;
//! - `rs-channel`: our balancing `Channel` on it (the resolver plus the balancer's
//!   table, the set a call is picked from).
//!
//! For each N the bench writes N instances of each side's service (zero-contrib's
//! fields) to the catalog of a node the agent does not run, through consul's transaction
//! API; then starts the sides one at a time (each side's time to its full set and its
//! CPU until then; the next starts once the last one has it), then SCALE_ROUNDS rounds in which each
//! side in turn sees SCALE_CHANGES changes (one instance added, then removed again), each
//! timed from the start of the catalog write to the line in which the side reports the
//! new size. Every change wakes the side's blocking query, and the side reads the whole
//! answer again (consul has no delta), so the per-change figures include decoding an
//! answer of about 1 KB an instance.

#![allow(clippy::print_stdout)] // a bench prints its table

mod sides;

use dtmdriver_gozero::GoZeroConsulFormat;
use sides::{Side, env_list, env_num, load, measure, print_table};
use test_support::{ConsulAgent, synthetic_addr as addr};

/// The catalog node the instances live on (not the agent's own node, whose
/// anti-entropy would remove them).
const NODE: &str = "scale-node";

fn main() {
    sides::main(orchestrate);
}

/// zero-contrib's catalog entry of instance `i` of `key`.
fn entry(key: &str, i: usize) -> String {
    let r = GoZeroConsulFormat::registration(key, &addr(i)).expect("format");
    let json = serde_json::json!({
        "ID": r.id, "Service": r.name, "Address": r.address, "Port": r.port,
        "Tags": r.tags, "Meta": r.meta,
    });
    json.to_string()
}

async fn orchestrate() {
    let sizes = env_list("SCALE_SIZES", &[1000, 10_000]);
    let changes = env_num("SCALE_CHANGES", 30);
    let rounds = env_num("SCALE_ROUNDS", 3);
    let agent = ConsulAgent::start();

    println!("# One consul service with N instances; {rounds} rounds of {changes} changes");
    println!("load at start: {}", load());
    let mut table = Vec::new();
    for &n in &sizes {
        // Each side follows its own service of n instances (see `sides::measure`).
        let key = |side: usize| format!("scale{n}-{side}.rpc");
        let target = |side: usize| {
            format!(
                "consul://{}/{}?wait=55s&near=_agent",
                agent.http_addr(),
                key(side)
            )
        };
        for side in 0..3 {
            let all: Vec<String> = (0..n).map(|i| entry(&key(side), i)).collect();
            agent.catalog_services(NODE, "set", &all);
        }
        let (t0, t1, t2) = (target(0), target(1), target(2));
        let sides: [&dyn Fn() -> Side; 3] = [
            &|| {
                Side::go(
                    "go-zero",
                    "gozero-consul-watcher",
                    &["-sizes", "-target", &t0],
                )
            },
            &|| Side::rust("rs-resolver", "resolver", &[&t1], true),
            &|| Side::rust("rs-channel", "channel", &[&t2], true),
        ];
        let agent = &agent;
        table.extend(
            measure(&sides, n, rounds, changes, async |side, c| {
                let extra = entry(&key(side), n);
                if c % 2 == 0 {
                    agent.catalog_services(NODE, "set", std::slice::from_ref(&extra));
                    n + 1
                } else {
                    agent.catalog_services(NODE, "delete", std::slice::from_ref(&extra));
                    n
                }
            })
            .await,
        );
        println!("N = {n} done, load {}", load());
    }
    println!();
    print_table(&table, "go-zero");
    println!("load at end: {}", load());
}
