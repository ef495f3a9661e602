//! The seed registry's own target form, `registry://NAME`, in `dtm-driver-etcd`.
//!
//! Contract: these name the instances of `etcd://h1:2379,h2:2379/NAME` (the native
//! format), the registry chosen as for `discovery:///` in `dtm-driver-kratos`
//! ([`RegistryChoice`], etcd only, first match wins):
//!
//! 1. `?registry=etcd://[user:pw@]h1:2379,h2:2379[?q]` on the target (percent-encode it
//!    inside a dtm branch URI: `registry=etcd%3A%2F%2F127.0.0.1%3A2379`), with the
//!    service as `registry://NAME` (the seed's spelling) or `registry:///NAME`;
//! 2. hosts in the authority: `registry://h1:2379,h2:2379/NAME`.
//!
//! Every other query parameter of the target (`group`, `weight`, `ttl`, `meta.K`,
//! `user`, `tls_*`…) and the registry's own query carry over unchanged.
//!
//! Why: the seed's Go clients dial `registry://NAME` with the registry handed to their
//! resolver in code; a target string has to carry it, and kratos users already spell it
//! `?registry=`.

use dtmdriver_core::registry_choice::RegistryChoice;
use dtmdriver_core::{Error, Result, Target};

/// The seed's scheme.
pub const REGISTRY_SCHEME: &str = "registry";

/// The `etcd://hosts/NAME?…` target a `registry://` target stands for; see the
/// [module docs](self).
///
/// ```
/// use dtmdriver_core::Target;
/// use dtmdriver_etcd::registry_target::to_etcd_target;
/// let t = Target::parse("registry://seed?registry=etcd://127.0.0.1:2379&group=blue").unwrap();
/// assert_eq!(to_etcd_target(&t).unwrap().as_str(), "etcd://127.0.0.1:2379/seed?group=blue");
/// ```
pub fn to_etcd_target(target: &Target) -> Result<Target> {
    let name = match (target.hosts(), target.endpoint()) {
        ([name], "") => name.as_str(),
        ([], name) => name,
        (_, name) if !name.contains(['/', ',']) => name,
        _ => {
            return Err(Error::bad_target(
                target,
                "write registry://NAME?registry=etcd://HOST:2379 or registry://HOST:2379/NAME",
            ));
        }
    };
    if name.is_empty() {
        return Err(Error::bad_target(
            target,
            "the service name is empty; write registry://NAME?registry=etcd://HOST:2379",
        ));
    }
    let choice = RegistryChoice {
        schemes: &[("etcd", "etcd://HOST:2379")],
        carry_query: true,
    };
    choice.locate(target, name, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etcd(target: &str) -> std::result::Result<String, String> {
        let t = Target::parse(target).map_err(|e| e.to_string())?;
        to_etcd_target(&t)
            .map(|t| t.as_str().to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_form_names_the_same_etcd_target() {
        let want = "etcd://127.0.0.1:2379,127.0.0.1:22379/seed";
        for form in [
            "registry://seed?registry=etcd://127.0.0.1:2379,127.0.0.1:22379",
            "registry:///seed?registry=etcd://127.0.0.1:2379,127.0.0.1:22379/",
            "registry:///seed?registry=etcd%3A%2F%2F127.0.0.1%3A2379%2C127.0.0.1%3A22379",
            "registry://127.0.0.1:2379,127.0.0.1:22379/seed",
        ] {
            assert_eq!(etcd(form).unwrap(), want, "{form}");
        }
    }

    #[test]
    fn the_query_parameters_carry_over() {
        assert_eq!(
            etcd("registry://seed?group=blue&registry=etcd://root:pw@h:2379&tls_ca=%2Fca.pem")
                .unwrap(),
            "etcd://root:pw@h:2379/seed?group=blue&tls_ca=%2Fca.pem"
        );
        assert_eq!(
            etcd("registry://seed?registry=etcd%3A%2F%2Fh%3A2379%3Fuser%3Droot&weight=3").unwrap(),
            "etcd://h:2379/seed?user=root&weight=3"
        );
        // Credentials in the authority go with its hosts (they were dropped).
        assert_eq!(
            etcd("registry://root:pw@h:2379/seed?group=blue").unwrap(),
            "etcd://root:pw@h:2379/seed?group=blue"
        );
        // ?registry= wins over hosts in the authority, as in dtm-driver-kratos.
        assert_eq!(
            etcd("registry://a:2379/seed?registry=etcd://b:2379").unwrap(),
            "etcd://b:2379/seed"
        );
    }

    #[test]
    fn errors_say_how_to_write_it() {
        for (form, says) in [
            ("registry://seed", "append ?registry=etcd://HOST:2379"),
            (
                "registry:///seed?registry=consul://h:8500",
                "registry scheme `consul` is not etcd; write etcd://HOST:2379",
            ),
            (
                "registry:///seed?registry=etcd://h:2379/x",
                "a registry names no service; drop `/x`",
            ),
            (
                "registry:///?registry=etcd://h:2379",
                "service name is empty",
            ),
            (
                "registry://a,b?registry=etcd://h:2379",
                "registry://NAME?registry=",
            ),
        ] {
            let err = etcd(form).unwrap_err();
            assert!(err.contains(says), "{form}: {err}");
        }
    }
}
