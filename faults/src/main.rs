//! `faults`: production failures injected into real etcd, consul and service processes
//! while a channel carries closed-loop load, reported as a table.
//!
//! ```text
//! cargo run -p faults --release -- [--short | --all] [SCENARIO...]
//! ```
//!
//! `--short` (what the test command runs) takes the scenarios that finish in seconds;
//! `--all` adds the long ones (the soak: `FAULTS_SOAK_SECS`, default 3600); names pick
//! scenarios one by one. Each row gives the calls made, the calls that failed, and how
//! long recovery took after the fault (what is measured is named in the row). The
//! command exits 1 if a scenario missed its expectation, so it can gate CI.
//!
//! Every scenario uses real processes: private etcd / consul servers (test-support), Go
//! go-zero service processes from `interop/bin`, our drivers and channel.

mod load;
mod report;
mod scenarios;

use std::process::ExitCode;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        let names: Vec<&str> = scenarios::all().iter().map(|s| s.name).collect();
        eprintln!(
            "usage: faults [--short | --all] [SCENARIO...]\nscenarios: {}",
            names.join(", ")
        );
        return ExitCode::SUCCESS;
    }
    let names: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let all = args.iter().any(|a| a == "--all");
    let chosen: Vec<scenarios::Scenario> = scenarios::all()
        .into_iter()
        .filter(|s| {
            if names.is_empty() {
                all || s.short
            } else {
                names.iter().any(|n| n.as_str() == s.name)
            }
        })
        .collect();
    if let Some(unknown) = names
        .iter()
        .find(|n| !scenarios::all().iter().any(|s| s.name == n.as_str()))
    {
        eprintln!("faults: unknown scenario `{unknown}`; see --help");
        return ExitCode::from(2);
    }
    let load_before = report::machine_load();
    let mut rows = Vec::new();
    for scenario in chosen {
        eprintln!("faults: running {}", scenario.name);
        let row = (scenario.run)().await;
        eprintln!(
            "faults: {}: {} calls, {} failed{}",
            row.scenario,
            row.calls,
            row.failed,
            row.violation
                .as_deref()
                .map(|v| format!(" — {v}"))
                .unwrap_or_default()
        );
        rows.push(row);
    }
    let table = report::table(
        &rows,
        &format!("{load_before} before, {} after", report::machine_load()),
    );
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{table}");
    if rows.iter().any(|r| r.violation.is_some()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
