//! Kubernetes failures under load: the kube-apiserver restarted while a channel follows
//! a service's EndpointSlices (`k8s://`, go-zero's format). The instances are go-zero
//! echo servers on loopback addresses of their own and one port; nothing registers
//! them: in a cluster the EndpointSlice controller writes the slices, here the scenario
//! does (an FQDN slice: the apiserver refuses loopback addresses in IPv4 ones).

use std::time::{Duration, Instant};

use dtmdriver_gozero::GoZeroDriver;
use dtmdriver_k8s::{Credentials, use_credentials};
use test_support::{InteropProcess, KubeApiServer, KubeUser, free_port};

use super::registry::{RECOVERY_BOUND, registry_row};
use super::{Kind, WORKERS, blocking, channel, ready_count, until, wait_ready};
use crate::load::Load;
use crate::report::Row;

/// The namespace and service of the scenario.
const NAMESPACE: &str = "faults";
const SERVICE: &str = "echo";

/// The instances' addresses: three in the slice from the start, the fourth put in once
/// the apiserver is back.
const HOSTS: [&str; 4] = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"];

/// The kube-apiserver SIGKILLed under load and started again a second later (its etcd
/// keeps running, as when the apiserver's pod or process is replaced), then a fourth
/// instance put in the service's slice: no call may fail, and the channel must list the
/// fourth instance ready within [`RECOVERY_BOUND`] of the write, through the resumed
/// watch.
pub async fn k8s_apiserver_restart() -> Row {
    let mut server = blocking(KubeApiServer::start);
    let port = free_port();
    let _instances: Vec<InteropProcess> = HOSTS
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let listen = format!("{host}:{port}");
            let name = format!("k{i}");
            InteropProcess::start("gozero-echo-server", &["-listen", &listen, "-name", &name])
        })
        .collect();
    let slice = |n: usize| -> Vec<(&str, bool)> { HOSTS[..n].iter().map(|h| (*h, true)).collect() };
    blocking(|| {
        server.create_namespace(NAMESPACE);
        server.put_slice(NAMESPACE, "echo-1", SERVICE, "FQDN", &slice(3), &[]);
    });
    use_credentials(Credentials::Kubeconfig(Some(
        server.kubeconfig(KubeUser::Admin),
    )));
    let target = format!("k8s://{NAMESPACE}/{SERVICE}:{port}");
    let channel = channel(&target, &GoZeroDriver, 3).await;
    wait_ready(&channel, 3).await;

    let load = Load::start(&channel, WORKERS);
    tokio::time::sleep(Duration::from_secs(1)).await;
    blocking(|| server.kill());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let down = Instant::now();
    blocking(|| server.restart());
    let restart = down.elapsed();
    let written = Instant::now();
    blocking(|| server.put_slice(NAMESPACE, "echo-1", SERVICE, "FQDN", &slice(4), &[]));
    let recovery = until(Duration::from_secs(10), || async {
        ready_count(&channel) == 4
    })
    .await
    .map(|_| written.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;
    registry_row(
        "k8s-apiserver-restart",
        Kind::GoZero.name(),
        load.stop().await,
        "a 4th instance written after the restart ready in the channel",
        recovery,
        format!(
            "apiserver down 1 s, {} ms to ready again; {WORKERS} callers",
            restart.as_millis()
        ),
        RECOVERY_BOUND,
    )
}
