//! The balancing channel dials TLS endpoints (rustls) when given a connector.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dtmdriver_core::resolve::{Resolver, SnapshotSender};
use dtmdriver_core::{Channel, Endpoint, Target, TlsConnector};
use test_support::{EchoServer, TestPki, say};
use tonic::Code;

/// Resolves every target to one fixed address.
struct FixedResolver(String);

impl Resolver for FixedResolver {
    fn resolve(&self, _target: &Target, updates: SnapshotSender) -> dtmdriver_core::Result<()> {
        updates.update(vec![Endpoint::new(self.0.clone())]);
        Ok(())
    }
}

/// A TLS echo server answering "tls" with a `localhost` certificate: (server, CA PEM).
async fn start_tls_server() -> (EchoServer, String) {
    let pki = TestPki::new(&["localhost"]);
    (EchoServer::start_tls("tls", &pki).await, pki.ca_pem.clone())
}

#[tokio::test]
async fn tls_channel_talks_to_a_tls_endpoint_and_plaintext_does_not() {
    let (server, ca_pem) = start_tls_server().await;
    let addr = server.addr();
    let resolver: Arc<dyn Resolver> = Arc::new(FixedResolver(addr.clone()));

    let tls = TlsConnector::from_ca_pem(ca_pem.as_bytes())
        .unwrap()
        .with_server_name("localhost");
    let secure = Channel::builder(&format!("test:///tls-{addr}"))
        .resolver(resolver.clone())
        .tls(tls)
        .connect()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(say(&secure).await.unwrap(), "tls");
    }

    let plain = Channel::builder(&format!("test:///plain-{addr}"))
        .resolver(resolver)
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .unwrap();
    let started = Instant::now();
    let err = say(&plain).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains(&addr), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn tls_channel_rejects_an_untrusted_server() {
    let (server, _) = start_tls_server().await;
    let other_ca = TestPki::new(&["localhost"]).ca_pem.clone();
    let addr = server.addr();
    let channel = Channel::builder(&format!("test:///untrusted-{addr}"))
        .resolver(Arc::new(FixedResolver(addr.clone())))
        .tls(
            TlsConnector::from_ca_pem(other_ca.as_bytes())
                .unwrap()
                .with_server_name("localhost"),
        )
        .connect()
        .unwrap();
    let err = say(&channel).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("TLS"), "{err:?}");
}

/// A server that requires client certificates turns a TLS 1.3 client away only after
/// the client's side of the handshake is done; the channel still says why, and a
/// connector with an identity gets through.
#[tokio::test]
async fn a_server_requiring_client_certificates_is_explained_and_served() {
    let pki = TestPki::new(&["localhost"]);
    let server = EchoServer::start_tls_client_auth("mtls", &pki).await;
    let addr = server.addr();
    let resolver = Arc::new(FixedResolver(addr.clone()));
    let without = Channel::builder(&format!("test:///no-identity-{addr}"))
        .resolver(resolver.clone())
        .tls(
            TlsConnector::from_ca_pem(pki.ca_pem.as_bytes())
                .unwrap()
                .with_server_name("localhost"),
        )
        .connect()
        .unwrap();
    let err = say(&without).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("client certificate"),
        "{}",
        err.message()
    );

    let (cert, key) = pki.issue("client", &["client"]);
    let identity = Some((cert.as_bytes(), key.as_bytes()));
    let with = Channel::builder(&format!("test:///identity-{addr}"))
        .resolver(resolver)
        .tls(
            TlsConnector::from_pem(pki.ca_pem.as_bytes(), identity)
                .unwrap()
                .with_server_name("localhost"),
        )
        .connect()
        .unwrap();
    assert_eq!(say(&with).await.unwrap(), "mtls");
}
