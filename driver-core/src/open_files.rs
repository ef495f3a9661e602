//! A connect that finds the process out of file descriptors (`EMFILE`): what the
//! channel's dial and the engines' HTTP clients do about it.
//!
//! Contract: the first time a connect fails because the process is at its soft limit of
//! open files ([`out_of_descriptors`]), the soft limit is raised to the hard one, once
//! per process, with one WARN line naming both ([`raise_after_exhaustion`]), and the
//! connect is tried again (at once by a channel's dial, at the next retry by an
//! engine); one that fails so with the soft limit already at the hard one fails with a
//! message saying what to do ([`advice`]): raise the hard limit, or have channels dial
//! fewer endpoints. [`raise_open_file_limit`] does the same raise for a caller that
//! would rather do it at start.
//!
//! Why: a channel dials every endpoint it hands calls to, a socket each, so a channel
//! over a thousand instances holds a thousand descriptors. Go programs run with the
//! soft limit raised to the hard one (the runtime does it at start, since Go 1.19: the
//! low soft limit exists for programs that use `select(2)`, whose `fd_set` stops at
//! 1,024, and Go never does); Rust's std and tokio leave it alone, though tokio does
//! not use `select(2)` either. With systemd's defaults for a service (soft 1,024, hard
//! 524,288), a Rust service calling a thousand instances would fail its dials
//! (`driver-core/tests/open_files.rs`, at a lowered limit) where its Go twin does not
//! (a Go 1.26 program started under `prlimit --nofile=64:20000` runs with 19,999).
//! Raising only on the first `EMFILE`, not at start, leaves a process that never needs
//! it as it was.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether `e` is the process out of file descriptors.
pub fn exhausted(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EMFILE)
}

/// Whether `e` or an error it was caused by is the process out of file descriptors.
pub fn out_of_descriptors(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.downcast_ref::<io::Error>().is_some_and(exhausted) {
            return true;
        }
        next = e.source();
    }
    false
}

/// Set once the soft limit was raised, by a dial or [`raise_open_file_limit`].
static RAISED: AtomicBool = AtomicBool::new(false);

/// After a connect failed with `EMFILE`: raises the soft limit to the hard one if it
/// is below; whether this call raised it (a connect may also try again when another
/// raised it since it failed: [`raised`]).
pub fn raise_after_exhaustion() -> bool {
    match raise_open_file_limit() {
        Ok(Some((from, to))) => {
            tracing::warn!(
                from,
                to,
                "out of file descriptors while connecting; raised the soft open-file \
                 limit to the hard one, as Go programs run (set LimitNOFILE= or \
                 `ulimit -n` to choose it)"
            );
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::debug!(error = %e, "could not raise the open-file limit");
            false
        }
    }
}

/// Whether this process raised its soft limit (a dial or [`raise_open_file_limit`]).
pub fn raised() -> bool {
    RAISED.load(Ordering::Relaxed)
}

/// What to do about a connect that failed with `EMFILE` at the hard limit, to append
/// to its error.
pub fn advice() -> String {
    let limit = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or_else(
        |_| "its limit of".to_string(),
        |(soft, _)| format!("its {soft}"),
    );
    format!(
        "; the process has {limit} files open (`ulimit -n`, its hard limit): raise the \
         limit (LimitNOFILE= for a systemd service, --ulimit nofile= for a container), or \
         have channels dial fewer endpoints (go-zero targets take ?subset=N)"
    )
}

/// Raises this process's soft limit of open files to its hard limit, as Go's runtime
/// does at start; `Some((from, to))` if it was below, `None` if it was already there.
/// A channel does this by itself the first time a dial runs out of descriptors (with a
/// WARN line); call it at start to have it done before.
///
/// # Errors
///
/// The system's, if reading or setting the limit fails.
pub fn raise_open_file_limit() -> io::Result<Option<(u64, u64)>> {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    if soft >= hard {
        return Ok(None);
    }
    rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard)?;
    RAISED.store(true, Ordering::Relaxed);
    Ok(Some((soft, hard)))
}
