//! The balancing channel dials TLS endpoints (rustls) when given a connector.

use std::sync::Arc;
use std::time::{Duration, Instant};

use driver_core::resolve::{Resolver, SnapshotSender};
use driver_core::{Channel, Endpoint, Target, TlsConnector};
use test_support::{EchoServer, TestPki, say};
use tonic::Code;

/// Resolves every target to one fixed address.
struct FixedResolver(String);

impl Resolver for FixedResolver {
    fn resolve(&self, _target: &Target, updates: SnapshotSender) -> driver_core::Result<()> {
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
