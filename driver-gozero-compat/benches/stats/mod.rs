//! What the propagation benches share: reading a side's printed endpoint set and the
//! median / p99 table.

use std::collections::BTreeSet;
use std::time::Duration;

/// The set of a comma-separated line (empty line: empty set).
pub fn set_of(line: &str) -> BTreeSet<String> {
    line.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Prints one row: `name`, count, median, p99 and max of `samples`.
pub fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<36} n={:<4} median {:>8.3} ms   p99 {:>8.3} ms   max {:>8.3} ms",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

/// A side's endpoint sets, time-stamped as they arrive.
pub type Sets = std::sync::mpsc::Receiver<(std::time::Instant, BTreeSet<String>)>;

/// Time-stamps the lines of a Go watcher's stdout (one set a line) in a thread.
pub fn read_sets(stdout: impl std::io::Read + Send + 'static) -> Sets {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send((std::time::Instant::now(), set_of(&line))).is_err() {
                return;
            }
        }
    });
    rx
}

/// Time-stamps the endpoint sets of a Rust channel once it has resolved, in a task.
pub fn channel_sets(channel: dtmdriver_core::Channel) -> Sets {
    let (tx, rx) = std::sync::mpsc::channel();
    tokio::spawn(async move {
        let mut updates = channel.updates();
        loop {
            let status = channel.status();
            if status.resolved {
                let set = status
                    .endpoints
                    .iter()
                    .map(|e| e.endpoint.addr.clone())
                    .collect();
                if tx.send((std::time::Instant::now(), set)).is_err() {
                    return;
                }
            }
            if updates.changed().await.is_err() {
                return;
            }
        }
    });
    rx
}

/// How long after `start` the side reported `expected` (waits at most 5 s).
///
/// # Panics
///
/// If it does not within 5 s.
pub fn time_to(sets: &Sets, expected: &BTreeSet<String>, start: std::time::Instant) -> Duration {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let (at, set) = sets
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("a side missed the change to {expected:?} for 5 s"));
        if set == *expected {
            return at.saturating_duration_since(start);
        }
    }
}
