//! HTTPS to a consul agent: the connector (`hyper-rustls`) over the rustls
//! configuration of the target's TLS files ([`dtmdriver_core::tls_files`], the loader every
//! engine shares) and what a failed handshake means.
//!
//! Contract: every error names the file or name at fault and the query parameter that
//! fixes it (`?tls_ca=`, `?tls_cert=`, `?tls_key=`, `?tls_server_name=`); a handshake
//! failure is told apart from an unreachable agent.
//!
//! Why `hyper-rustls`: it is the well-kept HTTPS connector for hyper 1's pooled client
//! and uses the same rustls (ring) as dtmdriver-core's endpoint connections, so the process
//! has one TLS stack. dtmdriver-core's own connector speaks HTTP/2 over its `h2`
//! transport and cannot drive hyper's HTTP/1.1 pool.

use std::io;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio_rustls::rustls::{self, CertificateError, pki_types::ServerName};

use dtmdriver_core::TlsFiles;

/// The HTTPS connector for `tls` over `http`, reading the TLS files now. The error says
/// which file or name is unusable and the parameter that fixes it.
pub(crate) fn connector(
    http: HttpConnector,
    tls: &TlsFiles,
) -> Result<HttpsConnector<HttpConnector>, String> {
    let mut builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.client_config()?)
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

/// What a failed handshake means and which parameter fixes it; `name` is the name the
/// agent's certificate was checked against.
pub(crate) fn explain_handshake(e: &rustls::Error, tls: &TlsFiles, name: &str) -> String {
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

/// The explanation of an alert the agent sent about our (missing) client certificate,
/// or of a TLS connection it closed before answering.
pub(crate) fn client_certificate_hint(reason: &str) -> String {
    format!(
        "the agent refused the TLS connection ({reason}); an agent with verify_incoming = true \
         wants a client certificate signed by its CA: pass ?tls_cert=FILE&tls_key=FILE"
    )
}

/// Whether a request failed because its connection ended before any answer came
/// (hyper: canceled, or an incomplete message).
pub(crate) fn closed_early(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && (h.is_canceled() || h.is_incomplete_message())
        {
            return true;
        }
        source = s.source();
    }
    false
}
