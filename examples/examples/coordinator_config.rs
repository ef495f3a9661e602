//! Registering the way the dtm coordinator does, from dtm's YAML `MicroService` section.
//!
//! Run it with `cargo run -p examples --example coordinator_config`. It starts a private
//! etcd, reads `examples/conf/dtm.yml` with [`MicroService::from_yaml_file`], points its
//! `Target` at the private etcd (the file says `localhost:2379`), applies the environment
//! overrides (`MICRO_SERVICE_DRIVER`, `MICRO_SERVICE_TARGET`, `MICRO_SERVICE_END_POINT`)
//! and registers as dtm does at start: `use_driver(Driver)` then
//! `register_service(Target, EndPoint)`. It prints the key in etcd and what a client
//! resolves, deregisters, shows the key gone and exits.

#![allow(clippy::print_stdout)] // an example talks to its user

use dtmdriver_gozero as _; // links dtm-driver-gozero, the driver the file names

use std::time::Duration;

use dtmdriver_core::MicroService;
use test_support::EtcdServer;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/dtm.yml");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let etcd = EtcdServer::start();
    println!("private etcd at {}", etcd.endpoint());

    let sample = MicroService::from_yaml_file(SAMPLE)?;
    println!("{SAMPLE}: {sample:?}");

    // The coordinator's own copy of the file, pointing at the private etcd.
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("conf.yml");
    let text = std::fs::read_to_string(SAMPLE)?.replace("localhost:2379", &etcd.endpoint());
    std::fs::write(&conf, text)?;

    let config = MicroService::from_yaml_file(&conf)?.with_env();
    println!("{} with the environment: {config:?}", conf.display());
    let registration = config.register().await?;
    println!(
        "registered {} at {} with {}",
        registration.endpoint(),
        registration.target(),
        config.driver
    );
    let key = config
        .target
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    print_keys(&etcd, &key, "while registered").await?;

    // What a client of the coordinator (a dtm SDK) sees through the same driver.
    let channel = dtmdriver_core::connect(&config.target)?;
    let mut updates = channel.updates();
    for _ in 0..50 {
        if !channel.status().endpoints.is_empty() {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), updates.changed()).await;
    }
    let resolved: Vec<String> = channel
        .status()
        .endpoints
        .iter()
        .map(|e| e.endpoint.addr.clone())
        .collect();
    println!("a client of {} resolves {resolved:?}", config.target);

    registration.deregister().await?;
    let left = print_keys(&etcd, &key, "after deregistering").await?;
    if resolved != [config.endpoint.as_str()] || left != 0 {
        return Err(format!("expected {} resolved and no key left", config.endpoint).into());
    }
    Ok(())
}

/// Prints the keys under `key/` straight from etcd; returns how many there are.
async fn print_keys(
    etcd: &EtcdServer,
    key: &str,
    when: &str,
) -> Result<usize, Box<dyn std::error::Error>> {
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
    let reply = client
        .get(
            format!("{key}/"),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await?;
    println!("etcd keys under {key}/ {when}: {}", reply.kvs().len());
    for kv in reply.kvs() {
        println!("  {} = {}", kv.key_str()?, kv.value_str()?);
    }
    Ok(reply.kvs().len())
}
