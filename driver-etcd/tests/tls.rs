//! etcd over TLS: a registry serving HTTPS with a certificate from a private CA, reached
//! with `?tls_ca=` on the target, for registration and resolution alike.

use std::time::{Duration, Instant};

use dtmdriver_core::{Channel, Driver};
use dtmdriver_etcd::EtcdDriver;
use test_support::{EchoServer, EtcdServer, TestPki, say};

/// A CA and a server certificate for 127.0.0.1 / localhost.
fn certificates() -> TestPki {
    TestPki::new(&["localhost", "127.0.0.1"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_resolve_over_tls_with_a_private_ca() {
    let certs = certificates();
    let etcd = EtcdServer::start_with_tls(&certs.path("server.pem"), &certs.path("server-key.pem"));
    let tls_ep = etcd.tls_endpoint().unwrap();
    let ca = certs.path("ca.pem");
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
    assert_eq!(say(&channel).await.unwrap(), "over-tls");
    registration.deregister().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_errors_name_the_problem() {
    let certs = certificates();
    let etcd = EtcdServer::start_with_tls(&certs.path("server.pem"), &certs.path("server-key.pem"));
    let tls_ep = etcd.tls_endpoint().unwrap();

    // A missing CA file is named in the error.
    let missing = certs.path("nope.pem");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_for_an_etcd_that_verifies_clients() {
    let certs = certificates();
    certs.issue("client", &["client"]);
    let etcd = EtcdServer::start_with_tls_client_auth(
        &certs.path("server.pem"),
        &certs.path("server-key.pem"),
        &certs.path("ca.pem"),
    );
    let tls_ep = etcd.tls_endpoint().unwrap();
    let ca = certs.path("ca.pem");
    let base = format!("etcd://{tls_ep}/mtls?tls_ca={}", ca.display());

    // Without a client certificate etcd refuses the handshake.
    let err = EtcdDriver
        .register_service(&base, "127.0.0.1:9")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("tls_cert"), "{err}");
    assert!(
        !err.contains("attempt"),
        "TLS failures are not retried: {err}"
    );

    let with_identity = format!(
        "{base}&tls_cert={}&tls_key={}",
        certs.path("client.pem").display(),
        certs.path("client-key.pem").display()
    );
    let echo = EchoServer::start("mtls").await;
    let registration = EtcdDriver
        .register_service(&with_identity, &echo.addr())
        .await
        .expect("register with a client certificate");
    let channel = Channel::builder(&with_identity)
        .driver(&EtcdDriver)
        .unwrap()
        .connect()
        .unwrap();
    assert_eq!(say(&channel).await.unwrap(), "mtls");
    registration.deregister().await.unwrap();

    // A key that is not the certificate's is refused up front, naming the problem.
    let err = EtcdDriver
        .register_service(
            &format!(
                "{base}&tls_cert={}&tls_key={}",
                certs.path("client.pem").display(),
                certs.path("server-key.pem").display()
            ),
            "127.0.0.1:9",
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("key"), "{err}");
}
