//! Quickstart: three echo instances registered in etcd, one balanced channel, one
//! instance killed, no failed call.
//!
//! Run it with `bash scripts/demo.sh` (or `cargo run -p examples --example quickstart`).
//! It needs nothing running: it starts a private etcd on a free loopback port, starts
//! three in-process tonic echo servers and registers each with `dtm-driver-gozero`
//! (go-zero's layout: `echo.rpc/<lease id>` = `host:port`), then dials
//! `etcd://127.0.0.1:PORT/echo.rpc` and calls round robin. In the middle it kills one
//! instance in two steps, so both effects show:
//!
//! 1. the server stops but its registration stays: the channel ejects the dead endpoint
//!    and sends the calls to the others;
//! 2. the registration is dropped (its lease revoked): the key leaves etcd and the
//!    endpoint leaves the channel.
//!
//! The channel's endpoint set is printed whenever it changes. The program ends on its
//! own and exits non-zero if any call failed.

#![allow(clippy::print_stdout)] // an example talks to its user

use dtmdriver_gozero as _; // links dtm-driver-gozero

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use dtmdriver_core::Channel;
use test_support::{EchoClient, EchoServer, EtcdServer, SayRequest};

const SERVICE: &str = "echo.rpc";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let etcd = EtcdServer::start();
    let target = format!("etcd://{}/{SERVICE}", etcd.endpoint());
    println!("private etcd at {}; target {target}", etcd.endpoint());

    dtmdriver_core::use_driver("dtm-driver-gozero")?;
    let driver = dtmdriver_core::get_driver();

    let mut servers = Vec::new();
    let mut registrations = Vec::new();
    for name in ["echo-a", "echo-b", "echo-c"] {
        let server = EchoServer::start(name).await;
        registrations.push(Some(
            driver.register_service(&target, &server.addr()).await?,
        ));
        servers.push(server);
    }
    let names: HashMap<String, String> = servers
        .iter()
        .map(|s| (s.addr(), s.name().to_string()))
        .collect();
    print_keys(&etcd, "registered").await?;

    let channel = dtmdriver_core::connect(&target)?;
    let watcher = tokio::spawn(print_changes(channel.clone(), names));
    let mut caller = Caller::new(channel.clone());

    caller.calls(30).await;
    caller.report("three instances");

    let victim = &mut servers[1];
    println!(
        "\n>>> stopping {} ({}); its registration stays in etcd",
        victim.name(),
        victim.addr()
    );
    victim.stop().await;
    caller.calls(30).await;
    caller.report("after the stop: the dead endpoint is ejected");

    println!("\n>>> dropping the registration of {}", servers[1].name());
    if let Some(registration) = registrations[1].take() {
        registration.deregister().await?;
    }
    print_keys(&etcd, "after deregistering").await?;
    // Keep calling until the removal reaches the channel (bounded: 10 s of calls).
    for _ in 0..100 {
        if channel.status().endpoints.len() == 2 {
            break;
        }
        caller.calls(5).await;
    }
    caller.calls(30).await;
    caller.report("after the removal: two instances");

    let endpoints = channel.status().endpoints.len();
    watcher.abort();
    for registration in registrations.into_iter().flatten() {
        registration.deregister().await?;
    }

    println!(
        "\n{} calls, {} failed; the channel ended with {endpoints} endpoints",
        caller.total, caller.failures
    );
    if caller.failures > 0 {
        return Err(format!("{} calls failed", caller.failures).into());
    }
    if endpoints != 2 {
        return Err(format!("expected 2 endpoints after the removal, saw {endpoints}").into());
    }
    Ok(())
}

/// Makes echo calls and counts who served them.
struct Caller {
    client: EchoClient<Channel>,
    served: BTreeMap<String, u32>,
    total: u32,
    failures: u32,
}

impl Caller {
    fn new(channel: Channel) -> Self {
        Self {
            client: EchoClient::new(channel),
            served: BTreeMap::new(),
            total: 0,
            failures: 0,
        }
    }

    async fn calls(&mut self, n: u32) {
        for _ in 0..n {
            self.total += 1;
            let mut request = tonic::Request::new(SayRequest {
                message: format!("call {}", self.total),
            });
            request.set_timeout(Duration::from_secs(5));
            match self.client.say(request).await {
                Ok(reply) => *self.served.entry(reply.into_inner().server).or_default() += 1,
                Err(status) => {
                    self.failures += 1;
                    println!("call {} failed: {status}", self.total);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Prints and resets the per-instance counts.
    fn report(&mut self, phase: &str) {
        println!(
            "{phase}: calls served per instance {:?}, failed so far {}",
            std::mem::take(&mut self.served),
            self.failures
        );
    }
}

/// Prints the channel's endpoints and their states each time they change.
async fn print_changes(channel: Channel, names: HashMap<String, String>) {
    let mut updates = channel.updates();
    let mut last = String::new();
    loop {
        let status = channel.status();
        let line = status
            .endpoints
            .iter()
            .map(|e| {
                let name = names.get(&e.endpoint.addr).map_or("?", String::as_str);
                format!("{name}@{}={}", e.endpoint.addr, e.state)
            })
            .collect::<Vec<_>>()
            .join("  ");
        if line != last {
            println!("  [channel] {} endpoints: {line}", status.endpoints.len());
            last = line;
        }
        // `updates` ticks when the set changes; connection states change without a
        // tick, so look again at least every 50 ms. Ends when the channel is gone.
        if let Ok(Err(_)) = tokio::time::timeout(Duration::from_millis(50), updates.changed()).await
        {
            return;
        }
    }
}

/// Prints the instances' keys under the service, read straight from etcd.
async fn print_keys(etcd: &EtcdServer, when: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
    let prefix = format!("{SERVICE}/");
    let reply = client
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await?;
    println!("etcd keys {when}:");
    for kv in reply.kvs() {
        println!("  {} = {}", kv.key_str()?, kv.value_str()?);
    }
    Ok(())
}
