//! TLS to a registry, as its target's query gives it: [`TlsFiles`], shared by every
//! engine (etcd, consul), and the one PEM loader behind it and
//! [`TlsConnector::from_pem`](crate::TlsConnector::from_pem).
//!
//! | parameter | meaning |
//! |---|---|
//! | `tls` | `true`/`1` turns TLS on, `false`/`0` off (whatever else is given) |
//! | `tls_ca` | PEM file of the CA (or CAs) that signed the registry's certificate; required |
//! | `tls_cert` + `tls_key` | PEM files of a client certificate and its key (PKCS#8, PKCS#1 or SEC1), both or neither |
//! | `tls_server_name` | the name the certificate is checked against (and sent as SNI), when not the host |
//!
//! Any `tls_*` parameter turns TLS on unless `?tls=false`. The system's roots are never
//! read: registries usually run their own CA, and for a publicly trusted certificate
//! the system's bundle can be passed (`tls_ca=/etc/ssl/certs/ca-certificates.crt`).
//! An engine may name fallbacks for absent parameters (consul reads `CONSUL_CACERT` and
//! friends); a fallback for `tls` alone turns TLS on.
//!
//! Every error names the file and the parameter that fixes it (`?tls_ca=`, ...); the
//! files are read when the first connection is made ([`TlsFiles::client_config`]), so
//! a fixed file is picked up by the next attempt.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::{
    self, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

use crate::Target;

/// The query parameters of [`TlsFiles`], the on/off switch first.
pub const PARAMS: [&str; 5] = ["tls", "tls_ca", "tls_cert", "tls_key", "tls_server_name"];

/// TLS file settings of a registry target; see the [module docs](self).
///
/// ```
/// use dtmdriver_core::{Target, tls_files::TlsFiles};
/// let t = Target::parse("etcd://h:2379/k?tls_ca=/ca.pem&tls_server_name=etcd-0").unwrap();
/// let tls = TlsFiles::from_target(&t).unwrap().unwrap();
/// assert_eq!(tls.ca.as_deref(), Some(std::path::Path::new("/ca.pem")));
/// assert!(TlsFiles::from_target(&Target::parse("etcd://h:2379/k").unwrap()).unwrap().is_none());
/// let err = tls.client_config().unwrap_err();
/// assert!(err.contains("/ca.pem") && err.contains("?tls_ca="), "{err}");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlsFiles {
    /// PEM file of the CA (or CAs) that signed the registry's certificate (`?tls_ca=`).
    pub ca: Option<PathBuf>,
    /// PEM files of a client certificate and its key (`?tls_cert=&tls_key=`).
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name the certificate is checked against, when not the host
    /// (`?tls_server_name=`).
    pub server_name: Option<String>,
}

impl TlsFiles {
    /// The settings of `target`'s query, `None` when it asks for no TLS. The error says
    /// which parameter is wrong and how to write it.
    pub fn from_target(target: &Target) -> Result<Option<Self>, String> {
        Self::from_target_or(target, &[], |_| None)
    }

    /// [`from_target`](Self::from_target) where an absent (or empty) parameter `p` is
    /// read from the environment variable `fallbacks` names for it, with `env`.
    pub fn from_target_or(
        target: &Target,
        fallbacks: &[(&str, &str)],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, String> {
        let query = |key: &str| target.query(key).filter(|v| !v.is_empty());
        let setting = |key: &str| -> Option<(String, String)> {
            if let Some(v) = query(key) {
                return Some((format!("?{key}="), v.to_string()));
            }
            let (_, var) = fallbacks.iter().find(|(p, _)| *p == key)?;
            env(var)
                .filter(|v| !v.is_empty())
                .map(|v| (format!("{var}="), v))
        };
        // The query's own `tls` first, then any other TLS parameter, then a fallback.
        let switch = match query("tls") {
            Some(v) => Some((String::from("?tls="), v.to_string())),
            None if PARAMS[1..].iter().any(|k| query(k).is_some()) => None,
            None => Some(setting("tls").unwrap_or_default()),
        };
        match switch.as_ref().map(|(from, v)| (from, v.as_str())) {
            None | Some((_, "true" | "1")) => {}
            Some((_, "false" | "0" | "")) => return Ok(None),
            Some((from, v)) => return Err(format!("{from}`{v}`: write tls=true or tls=false")),
        }
        let file = |key: &str| setting(key).map(|(_, v)| PathBuf::from(v));
        let identity = match (file("tls_cert"), file("tls_key")) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err("tls_cert and tls_key go together: give both files".into()),
        };
        let tls = Self {
            ca: file("tls_ca"),
            identity,
            server_name: setting("tls_server_name").map(|(_, v)| v),
        };
        if tls.ca.is_none() {
            return Err(match fallbacks.iter().find(|(p, _)| *p == "tls_ca") {
                Some((_, var)) => format!("{NO_CA}; or set {var}"),
                None => NO_CA.into(),
            });
        }
        Ok(Some(tls))
    }

    /// The rustls configuration (ring, no ALPN) from the files, read now.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        let Some(ca) = &self.ca else {
            return Err(NO_CA.into());
        };
        let ca_pem = read(ca, "CA", "tls_ca")?;
        let files = match &self.identity {
            None => None,
            Some((cert, key)) => Some((
                read(cert, "client certificate", "tls_cert")?,
                read(key, "client key", "tls_key")?,
            )),
        };
        let named = |path: &Path, what: &str, param: &str| {
            format!("{what} file {} (?{param}=)", path.display())
        };
        let identity = match (&self.identity, &files) {
            (Some((cert, key)), Some((cert_pem, key_pem))) => Some((
                Pem::new(cert_pem, named(cert, "client certificate", "tls_cert")),
                Pem::new(key_pem, named(key, "client key", "tls_key")),
            )),
            _ => None,
        };
        client_config(Pem::new(&ca_pem, named(ca, "CA", "tls_ca")), identity)
    }
}

/// Why TLS without a CA is refused.
const NO_CA: &str = "no CA to check the registry's certificate with: pass the CA that signed it \
                     as ?tls_ca=FILE (PEM); the system's roots are not used (for a publicly \
                     trusted certificate pass the system's bundle, e.g. \
                     tls_ca=/etc/ssl/certs/ca-certificates.crt)";

fn read(path: &Path, what: &str, param: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!(
            "cannot read the {what} file {} (?{param}=): {e}",
            path.display()
        )
    })
}

/// PEM text and how errors name it (`CA file /x/ca.pem (?tls_ca=)`, `CA PEM`).
pub(crate) struct Pem<'a> {
    bytes: &'a [u8],
    name: String,
}

impl<'a> Pem<'a> {
    pub(crate) fn new(bytes: &'a [u8], name: impl Into<String>) -> Self {
        Self {
            bytes,
            name: name.into(),
        }
    }

    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, String> {
        let certs = CertificateDer::pem_slice_iter(self.bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the {} is not valid PEM: {e}", self.name))?;
        if certs.is_empty() {
            return Err(format!(
                "the {} holds no PEM certificate (no -----BEGIN CERTIFICATE----- block)",
                self.name
            ));
        }
        Ok(certs)
    }
}

/// The one loader: a rustls configuration (ring, no ALPN) trusting the CA certificates
/// of `ca` only and presenting `identity` (certificate chain, key) to servers that ask.
pub(crate) fn client_config(
    ca: Pem<'_>,
    identity: Option<(Pem<'_>, Pem<'_>)>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    // A bundle (the system's, say) may hold certificates rustls cannot use; the others
    // still count.
    let (added, rejected) = roots.add_parsable_certificates(ca.certificates()?);
    if added == 0 {
        return Err(format!(
            "none of the {rejected} certificates in the {} is usable as a CA: pass the PEM \
             certificate of the CA that signed the server's certificate",
            ca.name
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots);
    let Some((cert, key)) = identity else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = cert.certificates()?;
    let key_der = PrivateKeyDer::from_pem_slice(key.bytes).map_err(|e| {
        format!(
            "no usable private key in the {}: {e}; give the PEM key (PKCS#8, PKCS#1 or SEC1) \
             of the {}",
            key.name, cert.name
        )
    })?;
    builder.with_client_auth_cert(chain, key_der).map_err(|e| {
        format!(
            "the {} and the {} cannot be used together: {e}; check that the key belongs to \
             the certificate",
            cert.name, key.name
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str, vars: &[(&str, &str)]) -> Result<Option<TlsFiles>, String> {
        let fallbacks = [
            ("tls", "SSL"),
            ("tls_ca", "CA"),
            ("tls_server_name", "NAME"),
        ];
        TlsFiles::from_target_or(&Target::parse(t).unwrap(), &fallbacks, |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn parameters_fallbacks_and_their_errors() {
        assert_eq!(parse("etcd://h/s", &[]).unwrap(), None);
        assert_eq!(
            parse(
                "etcd://h/s?tls_ca=/ca.pem&tls_cert=/c.pem&tls_key=/k.pem&tls_server_name=n",
                &[]
            )
            .unwrap(),
            Some(TlsFiles {
                ca: Some("/ca.pem".into()),
                identity: Some(("/c.pem".into(), "/k.pem".into())),
                server_name: Some("n".into()),
            })
        );
        // `tls=false` wins over every other parameter and fallback.
        assert_eq!(
            parse("etcd://h/s?tls=false&tls_ca=/ca.pem", &[]).unwrap(),
            None
        );
        let env = [("SSL", "true"), ("CA", "/env.pem"), ("NAME", "env-name")];
        let t = parse("etcd://h/s", &env).unwrap().unwrap();
        assert_eq!(
            (t.ca, t.server_name),
            (Some("/env.pem".into()), Some("env-name".into()))
        );
        let t = parse("etcd://h/s?tls_ca=/ca.pem", &env).unwrap().unwrap();
        assert_eq!(t.ca, Some("/ca.pem".into()));
        // Fallback files alone do not turn TLS on.
        assert_eq!(parse("etcd://h/s", &[("CA", "/ca.pem")]).unwrap(), None);
        for (t, vars, needle) in [
            ("etcd://h/s?tls=true", &[][..], "?tls_ca=FILE"),
            ("etcd://h/s?tls_server_name=x", &[], "?tls_ca=FILE"),
            (
                "etcd://h/s?tls=yes",
                &[],
                "?tls=`yes`: write tls=true or tls=false",
            ),
            ("etcd://h/s", &[("SSL", "on")], "SSL=`on`: write tls=true"),
            (
                "etcd://h/s?tls_ca=/a&tls_cert=/c",
                &[],
                "tls_cert and tls_key go together",
            ),
        ] {
            let e = parse(t, vars).unwrap_err();
            assert!(e.contains(needle), "{t}: {e}");
        }
    }

    /// Issue #14: every unusable file is named with its parameter.
    #[test]
    fn every_unusable_file_is_named_with_its_parameter() {
        let pki = test_support::TestPki::new(&["localhost"]);
        let (client_cert, client_key) = pki.issue("client", &["client"]);
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let ca = file("ca.pem", &pki.ca_pem);
        let cert = file("client.pem", &client_cert);
        let key = file("client-key.pem", &client_key);
        let other_key = file("other-key.pem", &pki.key_pem);
        let garbage = file("garbage.pem", "not pem");
        let unusable = file(
            "unusable.pem",
            "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n",
        );
        let missing = dir.path().join("missing.pem");
        let tls = |ca: &Path, identity: Option<(&Path, &Path)>| TlsFiles {
            ca: Some(ca.to_path_buf()),
            identity: identity.map(|(c, k)| (c.to_path_buf(), k.to_path_buf())),
            server_name: None,
        };
        assert!(tls(&ca, Some((&cert, &key))).client_config().is_ok());
        for (settings, needles) in [
            (
                tls(&missing, None),
                ["missing.pem", "?tls_ca=", "cannot read"],
            ),
            (
                tls(&garbage, None),
                ["garbage.pem", "?tls_ca=", "no PEM certificate"],
            ),
            (
                tls(&unusable, None),
                ["unusable.pem", "?tls_ca=", "none of the 1"],
            ),
            (
                tls(&ca, Some((&missing, &key))),
                ["missing.pem", "?tls_cert=", "cannot read"],
            ),
            (
                tls(&ca, Some((&garbage, &key))),
                ["garbage.pem", "?tls_cert=", "no PEM certificate"],
            ),
            (
                tls(&ca, Some((&cert, &missing))),
                ["missing.pem", "?tls_key=", "cannot read"],
            ),
            (
                tls(&ca, Some((&cert, &garbage))),
                ["garbage.pem", "?tls_key=", "no usable private key"],
            ),
            (
                tls(&ca, Some((&cert, &other_key))),
                ["other-key.pem", "?tls_key=", "cannot be used together"],
            ),
            (
                TlsFiles::default(),
                ["?tls_ca=FILE", "system's roots", "CA"],
            ),
        ] {
            let e = settings.client_config().unwrap_err();
            for needle in needles {
                assert!(e.contains(needle), "{settings:?}: {e}");
            }
        }
    }
}
