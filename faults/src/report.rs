//! A scenario's outcome and the table they are printed in.

use std::fmt::Write as _;
use std::time::Duration;

/// One scenario's outcome.
pub struct Row {
    /// The scenario's name, as given on the command line.
    pub scenario: &'static str,
    /// The driver whose formats and engine were under load.
    pub driver: &'static str,
    /// Calls made during the scenario.
    pub calls: usize,
    /// Calls that failed.
    pub failed: usize,
    /// What the recovery time measures.
    pub recovery_of: &'static str,
    /// How long recovery took; `None` if it never came.
    pub recovery: Option<Duration>,
    /// Everything else worth a number (throughput ratios, keys...).
    pub detail: String,
    /// The failures seen, up to three distinct ones.
    pub errors: Vec<String>,
    /// Why the scenario missed its expectation, if it did.
    pub violation: Option<String>,
}

/// The table of `rows`, one scenario a line, with a PASS or FAIL column.
pub fn table(rows: &[Row], load: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "machine load (1/5/15 min): {load}");
    let _ = writeln!(
        out,
        "| scenario | driver | calls | failed | recovery | of what | detail | verdict |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for r in rows {
        let recovery = r
            .recovery
            .map_or("never".to_string(), |d| format!("{} ms", d.as_millis()));
        let verdict = match &r.violation {
            None => "PASS".to_string(),
            Some(why) => format!("FAIL: {why}"),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario, r.driver, r.calls, r.failed, recovery, r.recovery_of, r.detail, verdict
        );
    }
    for r in rows.iter().filter(|r| !r.errors.is_empty()) {
        let _ = writeln!(out, "{} failures: {}", r.scenario, r.errors.join(" | "));
    }
    out
}

/// The machine's load averages, from /proc/loadavg.
pub fn machine_load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
