//! How fast an EndpointSlice change reaches a client's endpoint set: the Rust channel
//! through `dtm-driver-gozero`'s `k8s://` beside go-zero's own k8s resolver (registered
//! as a zrpc client registers it; interop/bin/gozero-consul-watcher runs it against a
//! printing `resolver.ClientConn`), on the same kube-apiserver, in the same run, for the
//! same changes.
//!
//! go-zero's resolver only takes in-cluster credentials (`rest.InClusterConfig`: a token
//! and CA at /var/run/secrets/kubernetes.io/serviceaccount). The Go side therefore runs
//! in a private mount namespace (`unshare -m`, needs root) with a tmpfs on /run holding
//! the admin's token and the CA there, and `KUBERNETES_SERVICE_HOST/PORT` pointing at the
//! apiserver; nothing outside that namespace changes. The Rust side reads a kubeconfig.
//!
//! Each change is one server-side apply of the service's one slice (an instance added, or
//! every other step the newest but one removed), as the EndpointSlice controller writes.
//!
//! `cargo bench -p dtmdriver-gozero --bench propagation_k8s` prints median and p99 of
//! the time from the start of each apply to each side seeing the new set.

#![allow(clippy::print_stdout)] // a bench prints its table

mod stats;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Instant;

use dtmdriver_gozero as _;
use dtmdriver_k8s::{Credentials, use_credentials};
use stats::{channel_sets, read_sets, report, time_to};
use test_support::{KubeApiServer, KubeUser, interop_binary};

const CHANGES: usize = 200;
const PORT: u16 = 8080;

#[tokio::main]
async fn main() {
    let server = KubeApiServer::start();
    server.create_namespace("prop");
    let target = format!("k8s://prop/prop:{PORT}");

    let sa = server.service_account_dir(KubeUser::Admin);
    let mut go = KillOnDrop(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(
                "set -e; mount -t tmpfs tmpfs /run; \
             d=/run/secrets/kubernetes.io/serviceaccount; mkdir -p $d; cp \"$1\"/* $d/; \
             exec \"$2\" -target \"$3\"",
            )
            .arg("sh")
            .arg(&sa)
            .arg(interop_binary("gozero-consul-watcher"))
            .arg(&target)
            .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
            .env("KUBERNETES_SERVICE_PORT", server.port().to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run unshare (util-linux; needs root for a mount namespace)"),
    );
    let go_sets = read_sets(go.0.stdout.take().expect("stdout"));

    let addr = |i: usize| format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256 + 1);
    let mut live: Vec<String> = vec![addr(0)];
    let apply = |live: &[String]| {
        let endpoints: Vec<(&str, bool)> = live.iter().map(|a| (a.as_str(), true)).collect();
        server.put_slice("prop", "prop-1", "prop", "IPv4", &endpoints, &[PORT]);
    };
    let expected = |live: &[String]| -> BTreeSet<String> {
        live.iter().map(|a| format!("{a}:{PORT}")).collect()
    };
    // go-zero's resolver fails its dial while the service has no slice; start with one.
    apply(&live);
    time_to(&go_sets, &expected(&live), Instant::now());

    use_credentials(Credentials::Kubeconfig(Some(
        server.kubeconfig(KubeUser::Admin),
    )));
    dtmdriver_core::use_driver("dtm-driver-gozero").expect("driver linked");
    let rust_sets = channel_sets(dtmdriver_core::connect(&target).expect("connect"));
    time_to(&rust_sets, &expected(&live), Instant::now());

    let (mut rust, mut gozero) = (Vec::new(), Vec::new());
    for i in 1..=CHANGES {
        if i % 2 == 1 || live.len() < 2 {
            live.push(addr(i));
        } else {
            live.remove(live.len() - 2);
        }
        let start = Instant::now();
        apply(&live);
        rust.push(time_to(&rust_sets, &expected(&live), start));
        gozero.push(time_to(&go_sets, &expected(&live), start));
    }
    println!(
        "EndpointSlice change -> client endpoint set, {CHANGES} changes, same apiserver, same run"
    );
    report("rust channel (dtm-driver-gozero k8s)", rust);
    report("go-zero k8s resolver (informer)", gozero);
}

/// The Go side, killed however the bench ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
