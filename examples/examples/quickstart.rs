//! Quickstart: three echo instances, one balanced channel, one instance killed, no
//! failed call.
//!
//! Run it with `bash scripts/demo.sh` (or `cargo run -p examples --example quickstart`).
//! It starts three in-process tonic echo servers, dials them through one
//! `direct:///a,b,c` target, makes round-robin calls, stops one server in the middle
//! and keeps calling: the channel ejects the dead endpoint and no call fails. The
//! channel's endpoint states are printed as they change. It ends on its own.

#![allow(clippy::print_stdout)] // an example talks to its user

use std::collections::BTreeMap;
use std::time::Duration;

use test_support::{EchoClient, EchoServer, SayRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut servers = Vec::new();
    for name in ["echo-a", "echo-b", "echo-c"] {
        servers.push(EchoServer::start(name).await);
    }
    let addrs: Vec<String> = servers.iter().map(EchoServer::addr).collect();
    let target = format!("direct:///{}", addrs.join(","));
    println!("target: {target}");

    driver_core::use_driver("default")?;
    let channel = driver_core::connect(&target)?;
    let mut client = EchoClient::new(channel.clone());

    let mut served: BTreeMap<String, u32> = BTreeMap::new();
    let mut failures = 0;
    for i in 0..60 {
        if i == 30 {
            println!("stopping {} ({})", servers[1].name(), servers[1].addr());
            servers[1].stop().await;
        }
        let mut request = tonic::Request::new(SayRequest {
            message: format!("call {i}"),
        });
        request.set_timeout(Duration::from_secs(2));
        match client.say(request).await {
            Ok(reply) => *served.entry(reply.into_inner().server).or_default() += 1,
            Err(status) => {
                failures += 1;
                println!("call {i} failed: {status}");
            }
        }
        if i % 15 == 14 {
            let states: Vec<String> = channel
                .status()
                .endpoints
                .iter()
                .map(|e| format!("{}={}", e.endpoint.addr, e.state))
                .collect();
            println!("after {} calls, endpoints: {}", i + 1, states.join(" "));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("calls served per instance: {served:?}");
    println!("failed calls: {failures}");
    if failures > 0 {
        return Err(format!("{failures} calls failed").into());
    }
    Ok(())
}
