//! What a user's first program does with the drivers, built outside the workspace: pick
//! a driver, parse a target, call a gRPC server through a `direct:///` channel, and (in
//! a build without one of the engines) find that engine's schemes refused naming the
//! cargo feature to turn on. Exits non-zero, saying what failed, on any failure.

use std::time::Duration;

use dtmdriver_core::{Channel, Target};
use dtmdriver_gozero as _;
use dtmdriver_kratos as _;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

type Error = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    dtmdriver_core::use_driver("dtm-driver-gozero")?;
    let target = Target::parse("etcd:///127.0.0.1:2379?key=trans.rpc")?;
    check(target.query("key") == Some("trans.rpc"), "Target::parse lost ?key=")?;
    #[cfg(feature = "engines")]
    {
        let etcd = dtmdriver_etcd::EtcdTarget::from_target(&target)?;
        check(etcd.key == "trans.rpc", "EtcdTarget::from_target")?;
        let consul = Target::parse("consul://127.0.0.1:8500/trans")?;
        let consul = dtmdriver_consul::ConsulTarget::from_target(&consul)?;
        check(consul.service == "trans", "ConsulTarget::from_target")?;
    }

    // A gRPC server on a loopback port this program opens, called through our channel.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (_reporter, health) = tonic_health::server::health_reporter();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming),
    );
    let channel = dtmdriver_core::connect(&format!("direct:///{addr}"))?;
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        HealthClient::new(channel).check(request),
    )
    .await??;
    check(
        reply.into_inner().status() == ServingStatus::Serving,
        "the health check through direct:/// did not answer SERVING",
    )?;

    let kratos = dtmdriver_core::find_driver("dtm-driver-kratos")?;
    for (feature, on) in [("etcd", cfg!(feature = "etcd")), ("consul", cfg!(feature = "consul"))] {
        let target = format!("{feature}://127.0.0.1:1/svc");
        for (package, driver) in [
            ("dtmdriver-gozero", dtmdriver_core::get_driver()),
            ("dtmdriver-kratos", kratos.clone()),
        ] {
            let channel = Channel::builder(&target)
                .driver(driver.as_ref())
                .and_then(|b| b.connect());
            let want = format!("built without the `{feature}` feature of {package}");
            match (on, channel) {
                (true, Ok(_)) => {}
                (true, Err(e)) => return Err(format!("{package}: {target}: {e}").into()),
                (false, Ok(_)) => {
                    return Err(format!("{package} resolved {target} without `{feature}`").into());
                }
                (false, Err(e)) => check(e.to_string().contains(&want), &format!("{e}"))?,
            }
            if !on {
                let registered = driver.register_service(&target, "127.0.0.1:1").await;
                let e = registered.err().ok_or(format!("{package} registered at {target}"))?;
                check(e.to_string().contains(&want), &format!("{e}"))?;
            }
        }
    }
    println!(
        "outside build ok: direct:/// call answered; etcd {}, consul {}",
        if cfg!(feature = "etcd") { "in" } else { "refused naming its feature" },
        if cfg!(feature = "consul") { "in" } else { "refused naming its feature" },
    );
    Ok(())
}

fn check(ok: bool, what: &str) -> Result<(), Error> {
    if ok { Ok(()) } else { Err(what.to_string().into()) }
}
