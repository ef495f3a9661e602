//! A private PKI for TLS tests: a fresh CA and certificates it issued, as PEM text and as
//! files (for etcd, consul and the Go programs, which read files).

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A fresh CA and a server certificate it issued for the given names (DNS names, or IP
/// addresses such as `127.0.0.1`), in a temporary directory removed on drop:
/// `ca.pem`, `server.pem`, `server-key.pem`.
///
/// ```
/// let pki = test_support::TestPki::new(&["localhost", "127.0.0.1"]);
/// assert!(pki.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
/// assert_eq!(std::fs::read_to_string(pki.path("server.pem")).unwrap(), pki.cert_pem);
/// let (cert, _key) = pki.issue("client", &["client"]);
/// assert_eq!(std::fs::read_to_string(pki.path("client.pem")).unwrap(), cert);
/// ```
pub struct TestPki {
    /// The CA certificate.
    pub ca_pem: String,
    /// The server certificate.
    pub cert_pem: String,
    /// The server certificate's private key.
    pub key_pem: String,
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

impl TestPki {
    /// A new CA and a server certificate for `names`.
    ///
    /// # Panics
    ///
    /// Panics if a name is not valid in a certificate or the files cannot be written.
    pub fn new(names: &[&str]) -> Self {
        let ca = new_ca();
        let dir = tempfile::tempdir().expect("create a directory for the certificates");
        let mut pki = Self {
            ca_pem: ca.pem(),
            cert_pem: String::new(),
            key_pem: String::new(),
            ca,
            dir,
        };
        std::fs::write(pki.path("ca.pem"), &pki.ca_pem).expect("write ca.pem");
        (pki.cert_pem, pki.key_pem) = pki.issue("server", names);
        pki
    }

    /// Issues another certificate (a client's, say) for `names`, written to
    /// `STEM.pem` and `STEM-key.pem`: (certificate PEM, key PEM).
    ///
    /// # Panics
    ///
    /// As [`new`](Self::new).
    pub fn issue(&self, stem: &str, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("generate a key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .expect("certificate names")
            .signed_by(&key, &self.ca)
            .expect("sign the certificate");
        let (cert, key) = (cert.pem(), key.serialize_pem());
        std::fs::write(self.path(&format!("{stem}.pem")), &cert).expect("write a certificate");
        std::fs::write(self.path(&format!("{stem}-key.pem")), &key).expect("write a key");
        (cert, key)
    }

    /// Writes the certificate of another, unrelated CA to `NAME` (for tests of an
    /// untrusted server): its path.
    pub fn write_other_ca(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, new_ca().pem()).expect("write the other CA");
        path
    }

    /// The path of a file in the PKI's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The server certificate and key as a tonic server identity.
    pub fn identity(&self) -> tonic::transport::Identity {
        tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem)
    }
}

fn new_ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("generate a key"))
        .expect("self-sign the CA")
}
