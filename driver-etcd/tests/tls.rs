//! etcd over TLS: a registry serving HTTPS with a certificate from a private CA, reached
//! with `?tls_ca=` on the target, for registration and resolution alike.

use std::path::Path;
use std::time::{Duration, Instant};

use driver_core::{Channel, Driver};
use driver_etcd::EtcdDriver;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use test_support::{EchoClient, EchoServer, EtcdServer, SayRequest};

/// Writes a CA and a server certificate for 127.0.0.1 / localhost into `dir`.
fn write_certificates(dir: &Path) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server-key.pem"), key.serialize_pem()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_resolve_over_tls_with_a_private_ca() {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let etcd = EtcdServer::start_with_tls(
        &certs.path().join("server.pem"),
        &certs.path().join("server-key.pem"),
    );
    let tls_ep = etcd.tls_endpoint().unwrap();
    let ca = certs.path().join("ca.pem");
    let target = format!("etcd://{tls_ep}/secure?tls_ca={}", ca.display());

    let echo = EchoServer::start("over-tls").await;
    let registration = EtcdDriver
        .register_service(&target, &echo.addr())
        .await
        .expect("register over TLS");
    let channel = Channel::builder(&target)
        .driver(&EtcdDriver)
        .unwrap()
        .connect()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while channel.status().endpoints.is_empty() {
        assert!(
            Instant::now() < deadline,
            "not resolved over TLS: {:?}",
            channel.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = EchoClient::new(channel)
        .say(SayRequest {
            message: "hi".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.server, "over-tls");
    registration.deregister().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_errors_name_the_problem() {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let etcd = EtcdServer::start_with_tls(
        &certs.path().join("server.pem"),
        &certs.path().join("server-key.pem"),
    );
    let tls_ep = etcd.tls_endpoint().unwrap();

    // A missing CA file is named in the error.
    let missing = certs.path().join("nope.pem");
    let err = EtcdDriver
        .register_service(
            &format!("etcd://{tls_ep}/s?tls_ca={}", missing.display()),
            "127.0.0.1:9",
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.pem"), "{err}");

    // Without the private CA, etcd's certificate is not trusted: registration fails.
    let err = EtcdDriver
        .register_service(&format!("etcd://{tls_ep}/s?tls=true"), "127.0.0.1:9")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("certificate") && err.contains("tls_ca"),
        "{err}"
    );

    // Half a client identity is refused up front.
    let err = EtcdDriver
        .register_service(&format!("etcd://{tls_ep}/s?tls_cert=/a.pem"), "127.0.0.1:9")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("tls_cert and tls_key"), "{err}");
}
