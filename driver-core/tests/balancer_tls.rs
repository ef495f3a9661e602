//! The balancing channel dials TLS endpoints (rustls) when given a connector.

use std::sync::Arc;
use std::time::{Duration, Instant};

use driver_core::resolve::{Resolver, SnapshotSender};
use driver_core::{Channel, Endpoint, Target, TlsConnector};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use test_support::echo::pb::echo_server::{Echo, EchoServer as EchoService};
use test_support::{EchoClient, SayReply, SayRequest};
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Code, Request, Response, Status};

/// Resolves every target to one fixed address.
struct FixedResolver(String);

impl Resolver for FixedResolver {
    fn resolve(&self, _target: &Target, updates: SnapshotSender) -> driver_core::Result<()> {
        updates.update(vec![Endpoint::new(self.0.clone())]);
        Ok(())
    }
}

struct TlsEcho;

#[tonic::async_trait]
impl Echo for TlsEcho {
    async fn say(&self, req: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        Ok(Response::new(SayReply {
            message: req.into_inner().message,
            server: "tls".into(),
        }))
    }
}

/// A CA and a `localhost` server certificate it signed: (CA PEM, server identity).
fn certificates() -> (String, Identity) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (
        ca.pem(),
        Identity::from_pem(cert.pem(), key.serialize_pem()),
    )
}

async fn start_tls_server(identity: Identity) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = Server::builder()
        .tls_config(ServerTlsConfig::new().identity(identity))
        .unwrap()
        .add_service(EchoService::new(TlsEcho));
    tokio::spawn(
        server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

async fn say(channel: Channel) -> Result<String, Status> {
    let mut client = EchoClient::new(channel);
    let call = client.say(SayRequest {
        message: "hi".into(),
    });
    tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("a call hung for 20 s")
        .map(|r| r.into_inner().server)
}

#[tokio::test]
async fn tls_channel_talks_to_a_tls_endpoint_and_plaintext_does_not() {
    let (ca_pem, identity) = certificates();
    let addr = start_tls_server(identity).await;
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
        assert_eq!(say(secure.clone()).await.unwrap(), "tls");
    }

    let plain = Channel::builder(&format!("test:///plain-{addr}"))
        .resolver(resolver)
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .unwrap();
    let started = Instant::now();
    let err = say(plain).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains(&addr), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn tls_channel_rejects_an_untrusted_server() {
    let (_, identity) = certificates();
    let (other_ca, _) = certificates();
    let addr = start_tls_server(identity).await;
    let channel = Channel::builder(&format!("test:///untrusted-{addr}"))
        .resolver(Arc::new(FixedResolver(addr.clone())))
        .tls(
            TlsConnector::from_ca_pem(other_ca.as_bytes())
                .unwrap()
                .with_server_name("localhost"),
        )
        .connect()
        .unwrap();
    let err = say(channel).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("TLS"), "{err:?}");
}
