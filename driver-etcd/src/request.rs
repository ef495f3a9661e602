//! Requests to etcd: their time bounds, the retries of registration writes, and the
//! errors they end in, each naming its fix.
//!
//! Contract: every request is bounded ([`REQUEST_TIMEOUT`], writes per attempt
//! `WRITE_ATTEMPT_TIMEOUT`); a write is tried again only when it cannot have taken effect
//! elsewhere (its member died under it, the leader was lost, the attempt timed out); a
//! failure says what to do (give credentials, a CA, a permission, start etcd); a
//! response is read up to [`MAX_RESPONSE_BYTES`], and one past it says so.

use std::future::Future;
use std::time::Duration;

use dtmdriver_core::Error;
use tonic::Status;

use crate::api::{EtcdClient, describe};

/// How long one etcd request (get, put, grant, revoke) may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

pub(crate) fn registry_error(target: &str, message: impl Into<String>) -> Error {
    Error::Registry {
        target: target.to_string(),
        message: message.into(),
    }
}

/// How long one attempt of a registration write may take before it is tried again. A
/// write proposed just after the etcd leader died is lost with it and hangs until
/// etcd's own request timeout (7 s with default settings); after the election (about a
/// second) the same write goes through.
const WRITE_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
/// Attempts of a registration write: with the pauses, about 8 s for a write that keeps
/// timing out. Three (4.7 s) were seen to run out while a 3-member cluster elected a new
/// leader on a loaded machine (`registrations_succeed_with_a_follower_or_the_leader_just_killed`
/// failed so twice with four builds running beside it); etcd's own request timeout with
/// default settings is 7 s.
const WRITE_ATTEMPTS: u32 = 5;
/// The pause before a write is tried again.
const WRITE_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Runs an idempotent write (a lease grant, a put under a lease), each attempt bounded
/// by [`WRITE_ATTEMPT_TIMEOUT`], again while it times out, etcd says its leader is gone,
/// or the member it went to died under it (`UNAVAILABLE`, not a TLS failure), at most
/// [`WRITE_ATTEMPTS`] times; flattens the failure into text. A lease granted by an
/// attempt whose answer was lost is never used and expires with its TTL.
pub(crate) async fn write_retrying<T, F, Fut>(
    what: &str,
    mut attempt: F,
) -> std::result::Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, Status>>,
{
    for n in 1..=WRITE_ATTEMPTS {
        let why = match tokio::time::timeout(WRITE_ATTEMPT_TIMEOUT, attempt()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if leader_lost(&e) || member_lost(&e) => {
                format!("etcd {what} failed: {}", describe(&e))
            }
            Ok(Err(e)) => return Err(format!("etcd {what} failed: {}", describe(&e))),
            Err(_) => format!("etcd {what} timed out after {WRITE_ATTEMPT_TIMEOUT:?}"),
        };
        if n == WRITE_ATTEMPTS {
            return Err(format!("{why} (attempt {n} of {WRITE_ATTEMPTS})"));
        }
        tracing::debug!(attempt = n, %why, "etcd write retried");
        tokio::time::sleep(WRITE_RETRY_PAUSE).await;
    }
    unreachable!("the attempts loop returns")
}

/// A call that failed because its member went away (or none could be reached), as
/// opposed to a refusal or a TLS failure, which a retry would only repeat.
fn member_lost(status: &Status) -> bool {
    status.code() == tonic::Code::Unavailable && tls_hint(status.message()).is_none()
}

/// What to do about a failure that is a TLS problem, if it is one: the server's
/// certificate not trusted, or the client's refused by etcd.
pub(crate) fn tls_hint(message: &str) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    if m.contains("asked for a client certificate")
        || (m.contains("alert")
            && (m.contains("badcertificate") || m.contains("certificaterequired")))
    {
        Some(
            "etcd refused the client's TLS certificate (or its absence): give a client \
             certificate signed by a CA etcd trusts with ?tls_cert=/path/cert.pem&tls_key=/path/key.pem",
        )
    } else if m.contains("certificate") || m.contains("tls") {
        Some(
            "etcd's TLS certificate was not accepted: give the CA that signed it with \
             ?tls_ca=/path/ca.pem (and ?tls_server_name= if it names another host)",
        )
    } else {
        None
    }
}

/// What to do about a failed etcd request, from its message: the TLS or authentication
/// fix when it is one of those, what a member without a leader means, else to check that
/// etcd runs where the target says.
pub(crate) fn failure_hint(message: &str) -> &'static str {
    tls_hint(message)
        .or_else(|| auth_hint(message))
        .or_else(|| {
            message.contains("database space exceeded").then_some(
                "etcd's database reached its space quota (--quota-backend-bytes) and etcd \
                 refuses new keys and leases until an operator frees space: compact and \
                 defragment it (etcdctl compact REVISION; etcdctl defrag), then etcdctl alarm \
                 disarm; registrations made before keep their leases",
            )
        })
        .or_else(|| {
            message.contains("no leader").then_some(
                "an etcd member has no leader (an election under way, or the member is cut \
                 off from its peers); the client goes on with the members that have one, so \
                 list every member in the target's hosts",
            )
        })
        .unwrap_or("is etcd running at the target's hosts?")
}

/// What to do about a failure that is an authentication or permission refusal, if it is
/// one.
pub(crate) fn auth_hint(message: &str) -> Option<&'static str> {
    if message.contains("user name is empty") {
        Some(
            "etcd requires authentication: give the user in the target, \
             etcd://USER:PASSWORD@host:2379/key or ?user=USER&password=PASSWORD",
        )
    } else if message.contains("authentication failed") {
        Some("etcd refused the user name or password given in the target: check both")
    } else if message.contains("invalid auth token") {
        Some(
            "etcd no longer accepts the client's auth token (etcd restarted, or \
             --auth-token-ttl passed); the client logs in again",
        )
    } else if message.contains("permission denied") {
        Some(
            "the etcd user may lack permission on the key: grant its role readwrite on \
             the key's prefix (etcdctl role grant-permission ROLE readwrite --prefix=true PREFIX)",
        )
    } else {
        None
    }
}

/// After a failure whose message says etcd refused the client's auth token, logs in
/// again (bounded by [`REQUEST_TIMEOUT`]); a no-op for other failures and clients
/// without credentials. The client logs in again for unary calls itself, but not for
/// open streams: a watch created with a dead token is cancelled with `permission denied`.
/// Returns whether a refresh was made and worked.
pub(crate) async fn refresh_if_token_refused(client: &EtcdClient, why: &str) -> bool {
    if !(why.contains("invalid auth token") || why.contains("permission denied")) {
        return false;
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, client.refresh_token()).await {
        Ok(Ok(())) => {
            tracing::debug!("logged in to etcd again after a refused auth token");
            true
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %describe(&e), "logging in to etcd again failed");
            false
        }
        Err(_) => false,
    }
}

/// etcd's answers while it has no leader, or lost a proposal to a leader change.
fn leader_lost(status: &Status) -> bool {
    ["no leader", "leader changed", "request timed out"]
        .iter()
        .any(|s| status.message().contains(s))
}

/// The largest response the engine reads from etcd: 256 MiB. tonic's default is
/// 4 MiB, which a listing of ~60,000 go-zero instances already passes (etcd
/// itself serves ranges of any size); a listing past this is refused with an error that
/// says so.
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// Says what a refused oversized response means, for `what` (e.g. the listing of a
/// prefix); other errors pass unchanged.
pub(crate) fn explain_oversized(error: String, what: &str) -> String {
    if error.contains("message length too large") {
        format!(
            "{what} is larger than {} MiB, more than this engine reads at once: {error}",
            MAX_RESPONSE_BYTES >> 20
        )
    } else {
        error
    }
}

/// Runs one etcd request with [`REQUEST_TIMEOUT`], flattening both failures into text.
pub(crate) async fn bounded<T>(
    what: &str,
    fut: impl Future<Output = std::result::Result<T, Status>>,
) -> std::result::Result<T, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("etcd {what} failed: {}", describe(&e))),
        Err(_) => Err(format!("etcd {what} timed out after {REQUEST_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_their_fix() {
        // etcd's own messages (etcdserver/api/v3rpc/rpctypes).
        let empty = "etcd put failed: etcdserver: user name is empty (InvalidArgument)";
        assert!(
            failure_hint(empty).contains("USER:PASSWORD@"),
            "{}",
            failure_hint(empty)
        );
        assert!(failure_hint(empty).contains("?user="));
        let wrong =
            "etcd connect failed: etcdserver: authentication failed, invalid user ID or password";
        assert!(failure_hint(wrong).contains("check both"));
        let denied = "etcd cancelled the watch of our key: etcdserver: permission denied";
        assert!(failure_hint(denied).contains("grant-permission"));
        assert!(failure_hint("etcd put failed: connection refused").contains("is etcd running"));
        let full = "etcd lease grant failed: etcdserver: mvcc: database space exceeded (ResourceExhausted)";
        assert!(failure_hint(full).contains("alarm disarm"));
        let leaderless = "keep-alive stream: etcdserver: no leader (Unavailable)";
        assert!(failure_hint(leaderless).contains("every member"));
    }
}
