//! The one error type of this crate.
//!
//! Every message names the input that was wrong and, where there is one, the fix.
//! Targets in messages are [redacted](crate::target::redact): no password or token.

/// Errors returned by the driver framework.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `use_driver` was given a name nobody registered.
    #[error(
        "no dtm driver with name `{name}` has been registered (registered: {registered}); \
         link the driver's crate and add `use <driver_crate> as _;` to your code so the linker keeps it"
    )]
    UnknownDriver {
        /// The name asked for.
        name: String,
        /// Names of the registered drivers, comma separated.
        registered: String,
    },

    /// `use_driver` was called with a second, different driver.
    #[error(
        "use_driver was called previously with `{current}`, cannot switch to `{requested}`: \
         a process uses one global driver; use the driver value directly \
         (e.g. `Channel::builder(target).driver(&driver)`) to run several side by side"
    )]
    DriverInUse {
        /// The driver in use.
        current: String,
        /// The driver that was asked for.
        requested: String,
    },

    /// A dtm branch URI could not be split into server and method.
    #[error(
        "bad url `{}`: {}",
        crate::redact::redact(.uri),
        crate::redact::redact_message(.reason, .uri)
    )]
    BadUri {
        /// The URI as given.
        uri: String,
        /// What is wrong with it and how to write it.
        reason: String,
    },

    /// A dial or registration target could not be parsed.
    #[error(
        "bad target `{}`: {}",
        crate::redact::redact(.target),
        crate::redact::redact_message(.reason, .target)
    )]
    BadTarget {
        /// The target as given.
        target: String,
        /// Which part is wrong.
        reason: String,
    },

    /// No resolver or registrar is installed for a scheme.
    #[error(
        "no {role} for scheme `{scheme}` in target `{}` (known schemes: {known}){hint}",
        crate::redact::redact(.target)
    )]
    UnknownScheme {
        /// "resolver" or "registrar".
        role: &'static str,
        /// The scheme.
        scheme: String,
        /// The full target.
        target: String,
        /// Schemes that are known, comma separated.
        known: String,
        /// A sentence about what to do, starting with "; ".
        hint: String,
    },

    /// A driver does not support an operation for this target.
    #[error(
        "driver `{driver}` cannot {what} `{}`: {}",
        crate::redact::redact(.target),
        crate::redact::redact_message(.reason, .target)
    )]
    Unsupported {
        /// The driver's name.
        driver: String,
        /// The operation, e.g. "register a service at".
        what: &'static str,
        /// The target.
        target: String,
        /// Why and what to do instead.
        reason: String,
    },

    /// A setting given by name (a balancing policy, say) has a value nobody knows.
    #[error("unknown {setting} `{value}`: {reason}")]
    BadSetting {
        /// What the value is for, e.g. "balancing policy".
        setting: &'static str,
        /// The value as given.
        value: String,
        /// The values that are known, or how to write one.
        reason: String,
    },

    /// TLS material (a CA, a client certificate or key) is not usable; the message
    /// names the file or PEM and the parameter that fixes it.
    #[error("TLS: {message}")]
    Tls {
        /// What is wrong and what to give instead.
        message: String,
    },

    /// An endpoint address given for registration is not usable.
    #[error("bad endpoint `{endpoint}`: {reason}")]
    BadEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },

    /// The coordinator configuration could not be read.
    #[error("config {source_name}: {message}")]
    Config {
        /// The file name or `"<string>"`.
        source_name: String,
        /// What is wrong, with the line where known.
        message: String,
    },

    /// A registry (etcd, consul, ...) operation failed.
    #[error(
        "registry at `{}`: {}",
        crate::redact::redact(.target),
        crate::redact::redact_message(.message, .target)
    )]
    Registry {
        /// The target being served.
        target: String,
        /// What failed.
        message: String,
    },
}

impl Error {
    /// [`Error::BadTarget`] about `target` (a [`Target`](crate::Target), shown
    /// redacted, or the text as given): `reason` says which part is wrong and how to
    /// write it.
    pub fn bad_target(target: impl ToString, reason: impl Into<String>) -> Self {
        Self::BadTarget {
            target: target.to_string(),
            reason: reason.into(),
        }
    }

    /// [`Error::BadUri`] about the branch URI `uri`.
    pub fn bad_uri(uri: impl ToString, reason: impl Into<String>) -> Self {
        Self::BadUri {
            uri: uri.to_string(),
            reason: reason.into(),
        }
    }

    /// [`Error::BadEndpoint`] about the endpoint `endpoint`.
    pub fn bad_endpoint(endpoint: impl ToString, reason: impl Into<String>) -> Self {
        Self::BadEndpoint {
            endpoint: endpoint.to_string(),
            reason: reason.into(),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How much of an input an error message quotes.
const QUOTED_CHARS: usize = 64;

/// `s` cut to its first 64 characters for a message, saying how long it was: a value
/// read from a registry or typed by a user can be megabytes long.
pub(crate) fn shorten(s: &str) -> String {
    match s.char_indices().nth(QUOTED_CHARS) {
        None => s.to_string(),
        Some((end, _)) => format!("{}… ({} bytes)", &s[..end], s.len()),
    }
}
