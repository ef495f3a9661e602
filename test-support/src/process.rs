//! Bookkeeping shared by the launchers of real server processes (etcd, consul, dtm, kube-apiserver).

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A fresh temporary directory named `PREFIX…` for one server's data and log, removed
/// on drop.
///
/// # Panics
///
/// Panics naming `prefix` if it cannot be created.
pub(crate) fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory {prefix}…: {e}"))
}

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

/// A command running `binary` with `args`, without stdin, its output appended to the
/// log at `log` after a line naming `header`; the caller sets its environment and
/// spawns it ([`spawn`]).
pub(crate) fn logged_command<S: AsRef<OsStr>>(
    binary: &Path,
    args: impl IntoIterator<Item = S>,
    log: &Path,
    header: &str,
) -> Command {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
    writeln!(file, "### test-support: starting {header}")
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", log.display()));
    let stderr = file
        .try_clone()
        .unwrap_or_else(|e| panic!("cannot clone the log file handle: {e}"));
    let mut command = Command::new(binary);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(stderr));
    command
}

/// Spawns `command` of `binary`; if it cannot start, panics saying why and `hint` (how
/// to install or build the binary).
pub(crate) fn spawn(mut command: Command, binary: &Path, hint: &str) -> Child {
    command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}\n{hint}", binary.display()))
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
