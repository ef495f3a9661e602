//! Bookkeeping shared by the launchers of real server processes (etcd, consul, dtm).

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::Child;

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
