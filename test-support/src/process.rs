//! Bookkeeping shared by the launchers of real server processes (etcd, consul, dtm).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Whether the process is alive; forgets it once it has exited.
pub(crate) fn is_running(child: &mut Option<Child>) -> bool {
    match child.as_mut().map(Child::try_wait) {
        Some(Ok(None)) => true,
        Some(Ok(Some(_))) => {
            *child = None;
            false
        }
        Some(Err(_)) | None => false,
    }
}

/// SIGKILLs and reaps the process; a no-op when there is none. `what` names it in logs.
pub(crate) fn kill(child: &mut Option<Child>, what: &str) {
    if let Some(mut child) = child.take() {
        let pid = child.id();
        if let Err(err) = child.kill() {
            tracing::debug!(pid, %err, "killing {what} failed (already exited?)");
        }
        if let Err(err) = child.wait() {
            tracing::warn!(pid, %err, "reaping {what} failed");
        }
        tracing::debug!(pid, "killed {what}");
    }
}

/// Everything in a log file so far (empty if it cannot be read).
pub(crate) fn read_log(path: &Path) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_end(&mut text);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// Start attempts with fresh ports when a port turned out to be taken.
const START_ATTEMPTS: usize = 3;
/// How much of a log a start failure shows.
const LOG_TAIL_BYTES: usize = 8 * 1024;

/// Why a server did not start: the message to panic with, and whether another process
/// took one of its ports (free when picked) meanwhile.
pub(crate) struct StartFailure {
    pub(crate) message: String,
    pub(crate) port_conflict: bool,
}

/// Runs `attempt` (pick free ports, start, wait until ready) until it succeeds. A start
/// that failed on a port conflict is retried with new ports, at most
/// [`START_ATTEMPTS`] times in all; any other failure panics with its message. `what`
/// names the server in logs.
pub(crate) fn start_with_retries<T>(
    what: &str,
    mut attempt: impl FnMut() -> Result<T, StartFailure>,
) -> T {
    for n in 1.. {
        match attempt() {
            Ok(server) => return server,
            Err(failure) if failure.port_conflict && n < START_ATTEMPTS => {
                tracing::debug!(attempt = n, "{what} port taken, retrying with other ports");
            }
            Err(failure) => panic!("{}", failure.message),
        }
    }
    unreachable!("the attempts loop returns or panics")
}

/// Opens the log at `path` for appending, writes `header` there, and returns stdout and
/// stderr handles to it for a child.
pub(crate) fn log_output(path: &Path, header: &str) -> (Stdio, Stdio) {
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    writeln!(log, "### test-support: starting {header}")
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    let stderr = log
        .try_clone()
        .unwrap_or_else(|e| panic!("cannot clone the log file handle: {e}"));
    (Stdio::from(log), Stdio::from(stderr))
}

/// The last part of the log at `path`, for a failure message.
pub(crate) fn log_tail(path: &Path) -> String {
    let log = read_log(path);
    let mut start = log.len().saturating_sub(LOG_TAIL_BYTES);
    while !log.is_char_boundary(start) {
        start += 1;
    }
    log[start..].to_owned()
}

/// Whether the log at `path` says a port was already in use.
pub(crate) fn port_taken(path: &Path) -> bool {
    read_log(path).contains("address already in use")
}

/// Keeps the caller's variables named `PREFIX…` out of the child's environment (etcd
/// and consul read their settings from such variables too).
pub(crate) fn remove_env_prefixed(command: &mut Command, prefix: &str) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with(prefix) {
            command.env_remove(key);
        }
    }
}
