//! A custom driver at work: the one-file directory registry of
//! [`examples::custom_driver`], chosen by name.
//!
//! Run it with `cargo run -p examples --example custom_driver`. The driver registers
//! itself at link time (`register_driver!`); this program only keeps the crate linked
//! (`use examples as _;`) and calls `use_driver("example-dir")`. It registers an echo
//! server in a temporary registry directory, dials `dir:///…/echo` through a balanced
//! channel, calls it (with a generated client, then a dtm-style branch URI with raw
//! bytes), deregisters and exits.

#![allow(clippy::print_stdout)] // an example talks to its user

use examples as _; // links the example-dir driver

use std::time::Duration;

use prost::Message;
use test_support::{EchoClient, EchoServer, SayReply, SayRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("linked drivers: {:?}", dtmdriver_core::driver_names());
    dtmdriver_core::use_driver("example-dir")?;
    let driver = dtmdriver_core::get_driver();

    let registry = tempfile::tempdir()?;
    let target = format!("dir://{}/echo", registry.path().display());
    let server = EchoServer::start("dir-echo").await;
    let registration = driver.register_service(&target, &server.addr()).await?;
    println!("registered {} at {target}", server.addr());
    println!(
        "registry directory: {:?}",
        list(&registry.path().join("echo"))?
    );

    let channel = dtmdriver_core::connect(&target)?;
    let reply = EchoClient::new(channel)
        .say(SayRequest {
            message: "hello through example-dir".into(),
        })
        .await?
        .into_inner();
    println!("reply from {}: {}", reply.server, reply.message);

    // The branch-URI form dtm uses: the driver's parse rule splits server and method.
    let uri = format!("{target}/echo.Echo/Say");
    let request = SayRequest {
        message: "raw bytes".into(),
    };
    let bytes = dtmdriver_core::invoke(&uri, request.encode_to_vec().into(), &[]).await?;
    let raw = SayReply::decode(bytes)?;
    println!("invoke {uri}: reply from {}: {}", raw.server, raw.message);

    registration.deregister().await?;
    let dir = registry.path().join("echo");
    let mut left = list(&dir)?;
    for _ in 0..20 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = list(&dir)?;
    }
    println!("after deregistering: {left:?}");
    if !left.is_empty() {
        return Err(format!("instance files left: {left:?}").into());
    }
    Ok(())
}

fn list(dir: &std::path::Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}
