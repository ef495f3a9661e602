//! HTTPS to a consul agent: the rustls configuration from a target's TLS files, the
//! connector (`hyper-rustls`) and what a failed handshake means.
//!
//! Contract: every error names the file or name at fault and the query parameter that
//! fixes it (`?tls_ca=`, `?tls_cert=`, `?tls_key=`, `?tls_server_name=`); a handshake
//! failure is told apart from an unreachable agent.
//!
//! Why `hyper-rustls`: it is the well-kept HTTPS connector for hyper 1's pooled client
//! and uses the same rustls (ring) as driver-core's endpoint connections, so the process
//! has one TLS stack. driver-core's own connector speaks HTTP/2 over its `h2`
//! transport and cannot drive hyper's HTTP/1.1 pool.

use std::io;
use std::path::Path;
use std::sync::Arc;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio_rustls::rustls::{
    self, CertificateError, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};

use crate::target::ConsulTls;

/// The HTTPS connector for `tls` over `http`, reading the TLS files now. The error says
/// which file or name is unusable and the parameter that fixes it.
pub(crate) fn connector(
    http: HttpConnector,
    tls: &ConsulTls,
) -> Result<HttpsConnector<HttpConnector>, String> {
    let mut builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(rustls_config(tls)?)
        .https_only();
    if let Some(name) = &tls.server_name {
        let server_name = ServerName::try_from(name.clone()).map_err(|e| {
            format!(
                "`{name}` is not a valid TLS server name ({e}): pass the name on the agent's \
                 certificate as ?tls_server_name=NAME"
            )
        })?;
        builder = builder.with_server_name_resolver(FixedServerNameResolver::new(server_name));
    }
    Ok(builder.enable_http1().wrap_connector(http))
}

/// The rustls error behind a failed connection, if the failure was TLS: hyper-rustls
/// wraps it in `io::Error`s, whose `source()` skips them, so each is opened by hand.
pub(crate) fn rustls_error<'a>(
    mut e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    for _ in 0..8 {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        e = match e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(inner) => inner,
            None => e.source()?,
        };
    }
    None
}

fn read_file(path: &Path, what: &str, param: &str) -> std::result::Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!(
            "cannot read the {what} file {} (?{param}=): {e}",
            path.display()
        )
    })
}

fn pem_certificates(
    path: &Path,
    what: &str,
    param: &str,
) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file(path, what, param)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "the {what} file {} (?{param}=) is not valid PEM: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "the {what} file {} (?{param}=) holds no PEM certificate (no -----BEGIN CERTIFICATE----- block)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The rustls config for `tls` (ring), from its files.
pub(crate) fn rustls_config(tls: &ConsulTls) -> std::result::Result<rustls::ClientConfig, String> {
    let Some(ca) = &tls.ca else {
        return Err(
            "no CA to check the agent's certificate with: pass ?tls_ca=FILE (PEM); the system's \
             roots are not used"
                .into(),
        );
    };
    let mut roots = RootCertStore::empty();
    let (added, rejected) = roots.add_parsable_certificates(pem_certificates(ca, "CA", "tls_ca")?);
    if added == 0 {
        return Err(format!(
            "none of the {rejected} certificates in the CA file {} (?tls_ca=) is usable as a CA: \
             pass the PEM certificate of the CA that signed the agent's certificate",
            ca.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots);
    let config = match &tls.identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = pem_certificates(cert, "client certificate", "tls_cert")?;
            let key_pem = read_file(key, "client key", "tls_key")?;
            let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                format!(
                    "no usable private key in the client key file {} (?tls_key=): {e}; pass the \
                     PEM key (PKCS#8, PKCS#1 or SEC1) of the certificate in ?tls_cert=",
                    key.display()
                )
            })?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                format!(
                    "the client certificate {} (?tls_cert=) and key {} (?tls_key=) cannot be used \
                     together: {e}; check that the key belongs to the certificate",
                    cert.display(),
                    key.display()
                )
            })?
        }
    };
    Ok(config)
}

/// What a failed handshake means and which parameter fixes it; `name` is the name the
/// agent's certificate was checked against.
pub(crate) fn explain_handshake(e: &rustls::Error, tls: &ConsulTls, name: &str) -> String {
    let ca = tls
        .ca
        .as_ref()
        .map_or_else(|| "none".to_string(), |p| p.display().to_string());
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "the agent's certificate is not signed by the CA in {ca} ({e}): pass the CA \
                 certificate that signed the agent's certificate as ?tls_ca=FILE (PEM)"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "the agent's certificate is not issued for `{name}` ({e}): pass a name it is \
                     issued for as ?tls_server_name=NAME"
                )
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => format!(
                "the agent's certificate is outside its validity period ({e}): renew it or check \
                 this machine's clock"
            ),
            _ => format!(
                "the agent's certificate was rejected ({e}); it must be signed by the CA in \
                 ?tls_ca= ({ca}) and issued for `{name}` (?tls_server_name=)"
            ),
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            format!(
                "the agent did not answer with TLS ({e}): is this its HTTPS port \
                 (`ports {{ https = ... }}` in consul's config)? The HTTP port speaks plain HTTP: \
                 drop the tls parameters for it"
            )
        }
        rustls::Error::AlertReceived(_) => client_certificate_hint(&e.to_string()),
        _ => format!("TLS handshake: {e}"),
    }
}

/// The explanation of an alert the agent sent about our (missing) client certificate.
pub(crate) fn client_certificate_hint(reason: &str) -> String {
    format!(
        "the agent refused the TLS connection ({reason}); an agent with verify_incoming = true \
         wants a client certificate signed by its CA: pass ?tls_cert=FILE&tls_key=FILE"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_tls_files_are_named() {
        let dir = std::env::temp_dir().join(format!("consul-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not pem").unwrap();
        let missing = dir.join("missing.pem");
        for (tls, needles) in [
            (
                ConsulTls {
                    ca: Some(missing.clone()),
                    ..ConsulTls::default()
                },
                vec!["missing.pem", "?tls_ca="],
            ),
            (
                ConsulTls {
                    ca: Some(empty.clone()),
                    ..ConsulTls::default()
                },
                vec!["empty.pem", "no PEM certificate"],
            ),
            (ConsulTls::default(), vec!["?tls_ca=FILE"]),
        ] {
            let e = rustls_config(&tls).unwrap_err();
            for needle in needles {
                assert!(e.contains(needle), "{tls:?}: {e}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
