//! A kratos style service and client pair on etcd, with `dtm-driver-kratos`.
//!
//! Run it with `cargo run -p examples --example kratos_style`. It starts a private etcd,
//! gives the driver its registry (as a kratos app passes its registry in code), and
//! registers two echo instances the way a kratos app does: key
//! `/microservices/echo/<uuid>`, value the instance JSON with the endpoint
//! `grpc://host:port`, 15 s lease. A client dials `discovery:///echo` — kratos' client
//! target, whose registry comes from the driver (or `?registry=`, or
//! `DTM_KRATOS_REGISTRY`) — calls round robin, calls a dtm branch URI with raw bytes,
//! deregisters and exits.

#![allow(clippy::print_stdout)] // an example talks to its user

use std::collections::BTreeMap;

use dtmdriver_kratos::KratosDriver;
use prost::Message;
use test_support::{EchoClient, EchoServer, EtcdServer, SayReply, SayRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let etcd = EtcdServer::start();
    let registry = format!("etcd://{}", etcd.endpoint());

    // kratos clients bring their registry; here the driver value carries it. Registering
    // the value replaces the link-time one of the same name.
    dtmdriver_core::register(
        KratosDriver::default()
            .with_registry(&registry)?
            .version("v1.0.0"),
    );
    dtmdriver_core::use_driver("dtm-driver-kratos")?;

    let mut servers = Vec::new();
    let mut registrations = Vec::new();
    for name in ["echo-a", "echo-b"] {
        let server = EchoServer::start(name).await;
        let endpoint = format!("grpc://{}", server.addr());
        let registration = dtmdriver_core::get_driver()
            .register_service("discovery:///echo", &endpoint)
            .await?;
        println!("{name} registered as {endpoint} in {registry}");
        registrations.push(registration);
        servers.push(server);
    }
    let mut etcd_client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
    let keys = etcd_client
        .get(
            "/microservices/echo",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await?;
    println!("kratos keys in etcd:");
    for kv in keys.kvs() {
        println!("  {} = {}", kv.key_str()?, kv.value_str()?);
    }

    // Client side: the registry from the driver, then spelled out in the target.
    let mut failures = 0;
    for target in [
        "discovery:///echo".to_string(),
        format!("discovery:///echo?registry={registry}"),
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

    // A dtm branch URI for a kratos service: server `discovery:///echo`.
    let uri = "discovery:///echo/echo.Echo/Say";
    let payload = SayRequest {
        message: "branch payload".into(),
    };
    let reply = dtmdriver_core::invoke(uri, payload.encode_to_vec().into(), &[]).await?;
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
            "/microservices/echo",
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
