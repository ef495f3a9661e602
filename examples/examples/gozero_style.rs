//! A go-zero style service and client pair on etcd, with `dtm-driver-gozero`.
//!
//! Run it with `cargo run -p examples --example gozero_style`. It starts a private etcd
//! and two echo instances that register as a go-zero zrpc server does (key
//! `user.rpc/<lease id>`, value `host:port`, 10 s lease): a go-zero client configured
//! with `Etcd: {Hosts: [...], Key: user.rpc}` finds them, and so does this program's
//! client, through both target forms go-zero uses (`etcd://HOST/user.rpc` up to go-zero
//! 1.10.1, `etcd:///HOST?key=user.rpc` from 1.10.2). It then calls a dtm branch URI with
//! raw bytes, as the coordinator does, deregisters and exits.

#![allow(clippy::print_stdout)] // an example talks to its user

use dtmdriver_gozero as _; // links dtm-driver-gozero

use std::collections::BTreeMap;

use prost::Message;
use test_support::{EchoClient, EchoServer, EtcdServer, SayReply, SayRequest};

const KEY: &str = "user.rpc";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let etcd = EtcdServer::start();
    let host = etcd.endpoint();
    dtmdriver_core::use_driver("dtm-driver-gozero")?;

    // Service side: what `zrpc.MustNewServer(c)` does with `Etcd.Key: user.rpc`.
    let register_target = format!("etcd://{host}/{KEY}");
    let mut servers = Vec::new();
    let mut registrations = Vec::new();
    for name in ["user-a", "user-b"] {
        let server = EchoServer::start(name).await;
        let registration = dtmdriver_core::get_driver()
            .register_service(&register_target, &server.addr())
            .await?;
        println!("{name} ({}) registered at {register_target}", server.addr());
        registrations.push(registration);
        servers.push(server);
    }
    let mut etcd_client = etcd_client::Client::connect([host.clone()], None).await?;
    let keys = etcd_client
        .get(
            format!("{KEY}/"),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await?;
    println!("go-zero keys in etcd:");
    for kv in keys.kvs() {
        println!("  {} = {}", kv.key_str()?, kv.value_str()?);
    }

    // Client side: both target forms go-zero emits.
    let mut failures = 0;
    for target in [
        format!("etcd://{host}/{KEY}"),
        format!("etcd:///{host}?key={KEY}"),
    ] {
        let mut client = EchoClient::new(dtmdriver_core::connect(&target)?);
        let mut served = BTreeMap::<String, u32>::new();
        for i in 0..10 {
            let request = SayRequest {
                message: format!("call {i}"),
            };
            match client.say(request).await {
                Ok(reply) => *served.entry(reply.into_inner().server).or_default() += 1,
                Err(status) => {
                    failures += 1;
                    println!("call {i} through {target} failed: {status}");
                }
            }
        }
        println!("{target}: calls served per instance {served:?}");
    }

    // A dtm branch URI: server `etcd://HOST/user.rpc`, method `/echo.Echo/Say`.
    let uri = format!("etcd://{host}/{KEY}/echo.Echo/Say");
    let payload = SayRequest {
        message: "branch payload".into(),
    };
    let reply = dtmdriver_core::invoke(
        &uri,
        payload.encode_to_vec().into(),
        &[("dtm-gid", "gid-example"), ("dtm-op", "action")],
    )
    .await?;
    let reply = SayReply::decode(reply)?;
    println!(
        "invoke {uri}: {} answered {:?}",
        reply.server, reply.message
    );

    for registration in registrations {
        registration.deregister().await?;
    }
    let left = etcd_client
        .get(
            format!("{KEY}/"),
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await?
        .count();
    println!("keys left after deregistering: {left}");
    if failures > 0 || left != 0 {
        return Err(format!("{failures} calls failed, {left} keys left").into());
    }
    Ok(())
}
