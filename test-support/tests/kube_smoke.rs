//! Smoke test of the private kube-apiserver: TLS, static tokens, RBAC, EndpointSlices,
//! restart.

use std::time::Instant;

use test_support::{KubeApiServer, KubeUser};

#[test]
fn serves_rbac_and_endpointslices_and_restarts_on_its_port() {
    let started = Instant::now();
    let mut server = KubeApiServer::start();
    eprintln!("kube-apiserver ready in {:?}", started.elapsed());
    let list = "/apis/discovery.k8s.io/v1/namespaces/smoke/endpointslices";
    server.create_namespace("smoke");
    server.put_slice(
        "smoke",
        "web-1",
        "web",
        "IPv4",
        &[("10.0.0.1", true)],
        &[80],
    );
    let (code, body) = server.get(list, KubeUser::Admin).unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("10.0.0.1") && body.contains("\"ready\":true"),
        "{body}"
    );
    // The limited identity is authenticated but granted nothing.
    let (code, body) = server.get(list, KubeUser::Limited).unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("User \\\"limited\\\" cannot list resource"),
        "{body}"
    );

    let port = server.port();
    server.kill();
    assert!(server.get("/readyz", KubeUser::Admin).is_none());
    let restarted = Instant::now();
    server.restart();
    eprintln!("kube-apiserver restarted in {:?}", restarted.elapsed());
    assert_eq!(server.port(), port);
    let (code, body) = server.get(list, KubeUser::Admin).unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("web-1"), "etcd kept the slice: {body}");
    server.delete_slice("smoke", "web-1");
    let (_, body) = server.get(list, KubeUser::Admin).unwrap();
    assert!(!body.contains("web-1"), "{body}");
}
