//! Capturing a test's own log lines: [`CapturedLogs`].
//!
//! The capture is a thread-local subscriber (every level, no colours), so it sees the
//! events of the tasks of a current-thread runtime (`#[tokio::test]`) and nothing of
//! other tests. tracing caches per-callsite interest process-wide, and a thread-local
//! subscriber racing other tests' threads can miss events: a test that counts log
//! lines should be alone in its test binary.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// The formatted log lines written while the guard of [`capture`](Self::capture) lives.
///
/// ```
/// let (logs, _guard) = test_support::CapturedLogs::capture();
/// tracing::warn!(key = "k", "something odd");
/// assert_eq!(logs.count("WARN", "something odd"), 1);
/// assert!(logs.text().contains("key=\"k\""));
/// ```
#[derive(Clone, Debug, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Captures this thread's events at every level until the guard is dropped.
    pub fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// How many captured lines hold both `level` (e.g. `WARN`) and `needle`.
    pub fn count(&self, level: &str, needle: &str) -> usize {
        self.text()
            .lines()
            .filter(|l| l.contains(level) && l.contains(needle))
            .count()
    }
}

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
