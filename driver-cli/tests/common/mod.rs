//! Running `dtmdriver` from the CLI tests: a background process whose output lines
//! arrive time-stamped, signals, and bounded runs to completion.

// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `dtmdriver` whose stdout lines arrive, time-stamped, on a channel. Killed
/// on drop.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl Running {
    /// Starts `dtmdriver ARGS` with no driver, token or registry from the environment.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// [`start`](Self::start) with these environment variables set.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dtmdriver"))
            .args(args)
            .envs(env.iter().copied())
            .env_remove("DTM_DRIVER")
            .env_remove("CONSUL_HTTP_TOKEN")
            .env_remove("DTM_KRATOS_REGISTRY")
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run dtmdriver");
        let lines = test_support::read_lines(child.stdout.take().expect("piped stdout"));
        Self { child, lines }
    }

    /// The next stdout line and when it arrived; panics after `within`.
    pub fn next_line(&self, within: Duration) -> (Instant, String) {
        self.lines
            .recv_timeout(within)
            .unwrap_or_else(|e| panic!("no output line within {within:?}: {e}"))
    }

    /// Sends `signal` (`INT`, `TERM`, `KILL`) and waits (bounded) for the exit; true if
    /// the process exited successfully.
    pub fn signal(mut self, signal: &str) -> bool {
        test_support::signal_and_wait(&mut self.child, signal, Duration::from_secs(10)).success()
    }

    /// Sends SIGINT and asserts a successful exit (deregistered, then exit 0).
    pub fn interrupt(self) {
        assert!(self.signal("INT"), "dtmdriver did not exit 0 after SIGINT");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command to completion, bounded to 40 s.
pub fn run_bounded(mut command: Command, what: &str) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {what}: {e}"));
    let until = Instant::now() + Duration::from_secs(40);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("{what} did not finish within 40 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

/// Runs a command to completion on a blocking thread (bounded as [`run_bounded`]) and
/// asserts it succeeded; its output.
pub async fn run_ok(command: Command, what: &'static str) -> Output {
    let out = tokio::task::spawn_blocking(move || run_bounded(command, what))
        .await
        .expect("the blocking task");
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
