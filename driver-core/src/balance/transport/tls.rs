//! TLS for endpoint connections (rustls, HTTP/2 by ALPN).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, pki_types::ServerName};

/// How to dial endpoints with TLS. Two connectors are the same connector when they
/// share the same `rustls` configuration and server name, which lets equal channels
/// share connections.
///
/// ```
/// # let pem = std::fs::read("/nonexistent").unwrap_or_default();
/// use dtmdriver_core::{Channel, TlsConnector};
/// if let Ok(tls) = TlsConnector::from_ca_pem(&pem) {
///     let _builder = Channel::builder("direct:///127.0.0.1:8443").tls(tls.with_server_name("localhost"));
/// }
/// ```
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<String>,
}

impl TlsConnector {
    /// Uses `config` as given, adding the `h2` ALPN protocol if it lacks it.
    pub fn new(config: rustls::ClientConfig) -> Self {
        let mut config = config;
        if !config.alpn_protocols.iter().any(|p| p == b"h2") {
            config.alpn_protocols.push(b"h2".to_vec());
        }
        Self {
            config: Arc::new(config),
            server_name: None,
        }
    }

    /// Trusts the CA certificates in `pem` (and only those).
    pub fn from_ca_pem(pem: &[u8]) -> Result<Self, crate::Error> {
        Self::from_pem(pem, None)
    }

    /// Trusts the CA certificates in `ca_pem` (and only those) and, given a client
    /// certificate chain and its private key (PEM: PKCS#8, PKCS#1 or SEC1), presents
    /// them to servers that ask (etcd's `--client-cert-auth`, say).
    pub fn from_pem(ca_pem: &[u8], identity: Option<(&[u8], &[u8])>) -> Result<Self, crate::Error> {
        use crate::tls_files::{Pem, client_config};
        let identity = identity.map(|(cert, key)| {
            (
                Pem::new(cert, "client certificate PEM"),
                Pem::new(key, "client key PEM"),
            )
        });
        client_config(Pem::new(ca_pem, "CA PEM"), identity)
            .map(Self::new)
            .map_err(|message| crate::Error::Tls { message })
    }

    /// Verifies the server certificate against `name` instead of the endpoint's host.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// The name set by [`with_server_name`](Self::with_server_name), if any.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// Performs the TLS handshake over `tcp`. The flag says whether the server asked
    /// for a client certificate this connector does not have (see [`NoteRequest`]).
    pub(crate) async fn connect(
        &self,
        addr: &str,
        tcp: TcpStream,
    ) -> Result<(TlsStream<TcpStream>, Arc<AtomicBool>), String> {
        let host = match &self.server_name {
            Some(n) => n.clone(),
            None => crate::address::host_of(addr).to_string(),
        };
        let name = ServerName::try_from(host.clone())
            .map_err(|e| format!("TLS server name `{host}`: {e}"))?;
        let asked = Arc::new(AtomicBool::new(false));
        let config = if self.config.client_auth_cert_resolver.has_certs() {
            self.config.clone()
        } else {
            let mut config = (*self.config).clone();
            config.client_auth_cert_resolver = Arc::new(NoteRequest(asked.clone()));
            Arc::new(config)
        };
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(format!("TLS peer {addr} did not agree to HTTP/2 (ALPN h2)"));
        }
        Ok((stream, asked))
    }
}

/// A client certificate resolver that has none and notes that the server asked for
/// one: a server that requires client certificates turns the connection away only
/// after our side of a TLS 1.3 handshake is done, and what reaches us then is often a
/// bare "broken pipe" or "connection reset", its alert lost.
#[derive(Debug)]
struct NoteRequest(Arc<AtomicBool>);

impl rustls::client::ResolvesClientCert for NoteRequest {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.store(true, Ordering::Relaxed);
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for TlsConnector {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.server_name == other.server_name
    }
}

impl Eq for TlsConnector {}

impl std::hash::Hash for TlsConnector {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.config) as usize).hash(state);
        self.server_name.hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PEM block that parses but holds no certificate rustls can use.
    const UNUSABLE: &str =
        "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n";

    #[test]
    fn a_bundle_with_unusable_certificates_keeps_the_usable_ones() {
        let ca = test_support::TestPki::new(&["localhost"]).ca_pem.clone();
        let bundle = format!("{UNUSABLE}{ca}");
        assert!(TlsConnector::from_ca_pem(bundle.as_bytes()).is_ok());
        let err = TlsConnector::from_ca_pem(UNUSABLE.as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("none of the 1 certificates"),
            "{err}"
        );
        let err = TlsConnector::from_ca_pem(b"no pem here").unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn a_client_identity_must_match_its_key() {
        let pki = test_support::TestPki::new(&["localhost"]);
        let (cert, key) = pki.issue("client", &["client"]);
        let ca = pki.ca_pem.as_bytes();
        assert!(TlsConnector::from_pem(ca, Some((cert.as_bytes(), key.as_bytes()))).is_ok());
        let err = TlsConnector::from_pem(ca, Some((cert.as_bytes(), pki.key_pem.as_bytes())))
            .unwrap_err();
        assert!(err.to_string().contains("cannot be used together"), "{err}");
        let err = TlsConnector::from_pem(ca, Some((cert.as_bytes(), b"nothing"))).unwrap_err();
        assert!(err.to_string().contains("no usable private key"), "{err}");
    }
}
