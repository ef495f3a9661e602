//! The Go programs under `interop/` (go-zero, kratos, consul, the seed registry), built by
//! `bash interop/build.sh` into `interop/bin/`: finding them, running one to its end
//! within a bound, and keeping a long-running one that is killed on drop. Also the
//! pieces any long-running child needs: its stdout lines on a channel, and a signal
//! with a bounded wait for the exit.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The lines of `stdout` (a child's), each with the instant it was read, on a channel
/// fed by a reader thread; the channel ends with the stream.
pub fn read_lines(stdout: impl Read + Send + 'static) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                return;
            }
        }
    });
    rx
}

/// Sends `signal` (`STOP`, `CONT`, `INT`, `TERM`, `KILL`...) to process `pid`.
///
/// # Panics
///
/// Panics if the signal cannot be sent (no `kill`, no such process).
pub fn signal(pid: u32, signal: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(sent, "kill -{signal} {pid} failed");
}

/// Sends `signal` (`INT`, `TERM`, `KILL`) to `child` and waits for it to exit, at most
/// `limit`; its exit status.
///
/// # Panics
///
/// Panics if the signal cannot be sent or the child outlives `limit`.
pub fn signal_and_wait(child: &mut Child, signal: &str, limit: Duration) -> ExitStatus {
    self::signal(child.id(), signal);
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return status;
        }
        assert!(
            Instant::now() < until,
            "process {} did not exit within {limit:?} of SIG{signal}",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The path of `interop/bin/NAME`.
///
/// # Panics
///
/// Panics with the command that builds it if it is missing.
pub fn interop_binary(name: &str) -> PathBuf {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../interop/bin")).join(name);
    assert!(
        path.exists(),
        "{} is missing; build the interop programs with `bash interop/build.sh` \
         from the workspace root (`bash scripts/test.sh` does it automatically)",
        path.display()
    );
    path
}

/// Runs `interop/bin/NAME ARGS…` to its end, at most `limit`, and returns its stdout
/// lines.
///
/// # Panics
///
/// Panics (with its stderr) if it fails or outlives `limit` (it is killed then).
pub fn run_interop(name: &str, args: &[&str], limit: Duration) -> Vec<String> {
    let mut child = Command::new(interop_binary(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    let until = Instant::now() + limit;
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            let Output { stderr, .. } = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
            panic!(
                "{name} {args:?} did not finish within {limit:?}: {}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// A long-running interop program, SIGKILLed and reaped when dropped.
#[derive(Debug)]
pub struct InteropProcess(Child);

impl InteropProcess {
    /// Starts `interop/bin/NAME ARGS…` with stdout discarded (stderr inherited, so its
    /// complaints land in the test output).
    ///
    /// # Panics
    ///
    /// Panics if the program is missing or cannot start.
    pub fn start(name: &str, args: &[&str]) -> Self {
        Self::spawn(name, args, Stdio::null())
    }

    /// Starts it with stdout piped, for [`child`](Self::child)`.stdout`.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub fn start_piped(name: &str, args: &[&str]) -> Self {
        Self::spawn(name, args, Stdio::piped())
    }

    /// Starts it with its stdout lines on a channel ([`read_lines`]).
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub fn start_lines(name: &str, args: &[&str]) -> (Self, mpsc::Receiver<(Instant, String)>) {
        let mut process = Self::start_piped(name, args);
        let stdout = process.0.stdout.take().expect("piped stdout");
        (process, read_lines(stdout))
    }

    /// Sends SIGINT and waits for the exit (at most 15 s); its exit status.
    ///
    /// # Panics
    ///
    /// As [`signal_and_wait`].
    pub fn interrupt(&mut self) -> ExitStatus {
        signal_and_wait(&mut self.0, "INT", Duration::from_secs(15))
    }

    fn spawn(name: &str, args: &[&str], stdout: Stdio) -> Self {
        Self(
            Command::new(interop_binary(name))
                .args(args)
                .stdout(stdout)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {name}: {e}")),
        )
    }

    /// The process.
    pub fn child(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for InteropProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
