//! Why a request to a consul agent failed: [`ConsulError`]. Every message names the
//! agent, the operation and what to do.

use std::time::Duration;

use dtmdriver_core::Error;

/// Why a request to consul failed. Every message names the agent and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsulError {
    /// No connection: the agent is down or the address is wrong.
    #[error(
        "cannot reach the consul agent at {addr} ({what}): {reason}; is the agent running there?"
    )]
    Unreachable {
        /// The agent.
        addr: String,
        /// The operation.
        what: String,
        /// The transport error.
        reason: String,
    },
    /// HTTPS to the agent failed: a TLS file is unusable, the agent's certificate is not
    /// trusted, or the agent does not speak TLS on that port.
    #[error("TLS to the consul agent at {addr} failed ({what}): {reason}")]
    Tls {
        /// The agent.
        addr: String,
        /// The operation.
        what: String,
        /// The problem and the parameter that fixes it.
        reason: String,
    },
    /// No answer in time.
    #[error("the consul agent at {addr} did not answer {what} within {after:?}")]
    Timeout {
        /// The agent.
        addr: String,
        /// The operation.
        what: String,
        /// The bound.
        after: Duration,
    },
    /// HTTP 403: the ACL token is missing, unknown or lacks a permission.
    #[error(
        "the consul agent at {addr} refused {what}: {message}; the ACL token was {token}: pass a \
         token with the needed permission as ?token=... on the target or set CONSUL_HTTP_TOKEN"
    )]
    Refused {
        /// The agent.
        addr: String,
        /// The operation.
        what: String,
        /// consul's message.
        message: String,
        /// "missing" or "refused".
        token: &'static str,
    },
    /// Any other non-success status.
    #[error(
        "the consul agent at {addr} answered {what} with HTTP {code}: {message}{}",
        status_hint(*code, message)
    )]
    Status {
        /// The agent.
        addr: String,
        /// The operation.
        what: String,
        /// The HTTP status code.
        code: u16,
        /// consul's message.
        message: String,
    },
    /// A success status with a body larger than the client reads
    /// ([`HealthQuery::max_answer`](crate::HealthQuery::max_answer), else
    /// [`MAX_ANSWER`](crate::MAX_ANSWER)).
    #[error(
        "the consul agent at {addr} answered {what} with more than {limit} bytes, more than \
         this client reads; ask for less (e.g. ?tag= or ?healthy=true on the target) or split \
         the service"
    )]
    TooLarge {
        /// The agent.
        addr: String,
        /// The operation.
        what: String,
        /// The limit, in bytes.
        limit: usize,
        /// The answer's `X-Consul-Index` (0 if none): a watcher waits on it for a change
        /// rather than reading the same answer again.
        index: u64,
    },
    /// A success status with a body we cannot read.
    #[error(
        "the consul agent at {addr} answered {what} with a body that is not what consul sends: {reason}"
    )]
    Decode {
        /// The agent.
        addr: String,
        /// The operation.
        what: String,
        /// The parse error.
        reason: String,
    },
}

impl ConsulError {
    /// True for HTTP 404, and for the 500 "unknown check / service" answers of older
    /// agents: the thing addressed does not exist (e.g. the agent restarted).
    pub fn is_not_found(&self) -> bool {
        match self {
            Self::Status { code, message, .. } => {
                *code == 404
                    || (*code == 500 && {
                        let m = message.to_ascii_lowercase();
                        m.contains("unknown check")
                            || m.contains("unknown service")
                            || m.contains("does not have")
                    })
            }
            _ => false,
        }
    }

    /// True when the agent could not be reached or did not answer.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Timeout { .. })
    }

    /// As a [`dtmdriver_core::Error`] about `target`.
    pub fn into_registry_error(self, target: &str) -> Error {
        Error::Registry {
            target: target.to_string(),
            message: self.to_string(),
        }
    }
}

/// What to do about a status consul answers in a known situation (after `; `), or
/// nothing.
fn status_hint(code: u16, message: &str) -> &'static str {
    if code == 429 {
        "; the agent takes at most `limits.http_max_conns_per_client` connections (200 by \
         default) from one client address, and this address holds that many: a watched \
         service holds one for its blocking query, in this process and in every other on \
         the host. Raise the limit in the agent's configuration (limits { \
         http_max_conns_per_client = 1000 }), or spread the services over more agents"
    } else if code == 500 && message.contains("No cluster leader") {
        "; the consul servers have no leader (an election under way, or too few servers \
         for a quorum: `consul operator raft list-peers` shows them)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaderless_cluster_and_a_connection_limit_are_named() {
        let status = |code, message: &str| ConsulError::Status {
            addr: "a".into(),
            what: "w".into(),
            code,
            message: message.into(),
        };
        let leaderless = status(500, "No cluster leader").to_string();
        assert!(leaderless.contains("raft list-peers"), "{leaderless}");
        assert!(!status(500, "rpc error").to_string().contains("leader"));
        let limited = status(429, "Too Many Requests").to_string();
        assert!(limited.contains("http_max_conns_per_client"), "{limited}");
    }

    #[test]
    fn not_found_covers_old_and_new_agents() {
        let status = |code, message: &str| ConsulError::Status {
            addr: "a".into(),
            what: "w".into(),
            code,
            message: message.into(),
        };
        assert!(status(404, "").is_not_found());
        assert!(status(500, "Unknown check ID \"x\"").is_not_found());
        assert!(!status(500, "rpc error").is_not_found());
    }
}
