//! `dtmdriver resolve k8s://…` with `dtm-driver-gozero` and a kubeconfig, against a real
//! kube-apiserver.

mod common;

use common::{Running, run_bounded};

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use test_support::{KubeApiServer, KubeUser};

fn addrs(line: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let mut addrs: Vec<String> = v["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["addr"].as_str().unwrap().to_string())
        .collect();
    addrs.sort();
    addrs
}

#[test]
fn resolve_watch_follows_endpointslices_with_a_kubeconfig() {
    let server = KubeApiServer::start();
    server.create_namespace("cli");
    server.put_slice(
        "cli",
        "trans-1",
        "trans",
        "IPv4",
        &[("10.8.0.1", true)],
        &[80],
    );
    let kubeconfig = server.kubeconfig(KubeUser::Admin);
    let kubeconfig = kubeconfig.to_str().unwrap();
    let target = "k8s://cli/trans:8080";
    let running = Running::start_with_env(
        &[
            "--driver",
            "dtm-driver-gozero",
            "resolve",
            target,
            "--watch",
        ],
        &[("KUBECONFIG", kubeconfig), ("KUBERNETES_SERVICE_HOST", "")],
    );
    let (_, line) = running.next_line(Duration::from_secs(10));
    assert_eq!(addrs(&line), ["10.8.0.1:8080"]);
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["target"], target);

    let two = [("10.8.0.1", true), ("10.8.0.2", true)];
    server.put_slice("cli", "trans-1", "trans", "IPv4", &two, &[80]);
    let (_, line) = running.next_line(Duration::from_secs(10));
    assert_eq!(addrs(&line), ["10.8.0.1:8080", "10.8.0.2:8080"]);
    assert!(running.signal("INT"));

    // Without any credentials the error says what was tried and what to set.
    let home = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_dtmdriver"));
    command
        .args([
            "--driver",
            "dtm-driver-gozero",
            "resolve",
            target,
            "--timeout",
            "3",
        ])
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", home.path());
    let out = run_bounded(command, "dtmdriver resolve without credentials");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("KUBERNETES_SERVICE_HOST is not set") && stderr.contains("set KUBECONFIG"),
        "{stderr}"
    );
}
