//! Instances that still answer, but badly, under load: one throttled (every call late,
//! [`instance_throttled`]) and one failing every call at once ([`instance_failing`], as
//! a service whose database is down). Neither goes silent, so neither leaves the
//! rotation; what keeps the calls healthy is the policy's choice (p2c's latency and
//! failure accounting), which these scenarios measure against round robin's.

use std::time::{Duration, Instant};

use dtmdriver_core::Policy;
use test_support::InteropProcess;

use super::instances::{HEALTHY, SERVICE_TIME, kept_throughput, policy_name, three_instances};
use super::{WORKERS, blocking, ready_count, signal};
use crate::load::{Load, Record};
use crate::report::Row;

/// How long an instance is throttled, and its duty cycle: stopped for
/// [`THROTTLE_STOPPED`] of every [`THROTTLE_PERIOD`], as a container whose CPU quota
/// is far below its load runs in bursts.
const THROTTLE: Duration = Duration::from_secs(8);
const THROTTLE_PERIOD: Duration = Duration::from_millis(100);
const THROTTLE_STOPPED: Duration = Duration::from_millis(75);

/// One of three go-zero instances throttled under load (SIGSTOP / SIGCONT in a 75 ms
/// of 100 ms duty cycle for [`THROTTLE`]: it answers every call, 40 ms late on
/// average, and never goes silent long enough to be taken out of rotation), with the
/// channel balancing by `policy`. p2c (`PeakEwma`) is to route around it: at least 80%
/// of the healthy throughput, no call failed. Round robin, which hands it a third of
/// the calls whatever they cost (as grpc-go's `round_robin`), is to fail no call; its
/// throughput is reported.
pub async fn instance_throttled(policy: Policy) -> Row {
    let (_etcd, mut instances, channel) =
        three_instances("throttled.rpc", policy, Duration::ZERO).await;

    let load = Load::start(&channel, WORKERS);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = instances[0].0.child().id();
    let throttled_at = load.now();
    let started = Instant::now();
    let mut cycles = 0;
    while started.elapsed() < THROTTLE {
        blocking(|| signal(pid, "STOP"));
        tokio::time::sleep(THROTTLE_STOPPED).await;
        blocking(|| signal(pid, "CONT"));
        tokio::time::sleep(THROTTLE_PERIOD - THROTTLE_STOPPED).await;
        cycles += 1;
    }
    let released_at = load.now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = load.now();
    let record = load.stop().await;
    let (baseline, during, ratio) =
        kept_throughput(&record, throttled_at, released_at, released_at, end);
    let failed = record.failed();
    let violation = if failed > 0 {
        Some(format!(
            "{failed} calls failed on an instance that answers every call"
        ))
    } else if policy == Policy::PeakEwma && ratio < 0.8 {
        Some(format!(
            "kept {:.0}% of the throughput while one instance was throttled",
            ratio * 100.0
        ))
    } else if ready_count(&channel) != 3 {
        Some(format!(
            "not all three ready after the throttling: {}",
            crate::load::describe_endpoints(&channel.status())
        ))
    } else {
        None
    };
    Row {
        scenario: match policy {
            Policy::PeakEwma => "instance-throttled-p2c",
            _ => "instance-throttled-rr",
        },
        driver: policy_name(policy),
        calls: record.calls(),
        failed,
        recovery_of: "-",
        recovery: Some(Duration::ZERO),
        detail: format!(
            "1 of 3 go-zero processes stopped 75 ms of every 100 ms for {} s ({cycles} cycles); median {baseline:.0} calls/s healthy (before and after), {during:.0} while throttled ({:.0}%)",
            THROTTLE.as_secs(),
            ratio * 100.0
        ),
        violation,
        errors: record.errors,
    }
}

/// How long an instance fails every call.
const FAILING: Duration = Duration::from_secs(8);

/// How long after SIGUSR2 calls may still fail: the signal reaches the process's
/// handler, and answers already sent arrive. 6 calls of a run ended in this window.
const HEAL_GRACE: Duration = Duration::from_millis(250);

/// The share of the successful calls the healed instance must answer again (a fair
/// share is a third), and how soon after the heal.
const SHARE_BACK: f64 = 0.2;
const BACK_WITHIN: Duration = Duration::from_secs(5);

/// How long the load runs after the heal.
const AFTER_HEAL: Duration = Duration::from_secs(8);

/// One of three go-zero instances answering every call with `UNAVAILABLE` at once for
/// [`FAILING`] (SIGUSR1 / SIGUSR2 to `gozero-echo-server`: the process, its connections
/// and its registration stay healthy, as when its database is down), every call taking
/// [`SERVICE_TIME`] otherwise, and the channel balancing by `policy`. p2c counts
/// failures in its cost and round robin passes a failing endpoint's turn on, so either
/// is to fail at most 1% of the calls while the instance fails (grpc-go's
/// `round_robin` without outlier detection, and go-zero's p2c, fail about a third), no
/// call outside the failure, and to give the healed instance [`SHARE_BACK`] of the
/// calls again within [`BACK_WITHIN`].
pub async fn instance_failing(policy: Policy) -> Row {
    let (_etcd, mut instances, channel) =
        three_instances("failing.rpc", policy, SERVICE_TIME).await;
    let load = Load::start_watching(&channel, WORKERS, Some("go0"));
    let pid = instances[0].0.child().id();
    let (failing_at, healed_at) = fail_then_heal(pid, || load.now()).await;
    let record = load.stop().await;
    let mut row = failing_row(&record, failing_at, healed_at);
    if row.violation.is_none() {
        let (calls, failed) = record.calls_between(failing_at, healed_at + HEAL_GRACE);
        let share = f64::from(failed) / f64::from(calls.max(1));
        if share > 0.01 {
            row.violation = Some(format!(
                "{:.1}% of the calls failed while one instance failed every call (at most 1%)",
                share * 100.0
            ));
        }
    }
    if row.violation.is_none() && ready_count(&channel) != 3 {
        row.violation = Some(format!(
            "not all three ready after the heal: {}",
            crate::load::describe_endpoints(&channel.status())
        ));
    }
    row.scenario = match policy {
        Policy::PeakEwma => "instance-failing-p2c",
        _ => "instance-failing-rr",
    };
    row.driver = policy_name(policy);
    row
}

/// [`instance_failing`] with go-zero's own zrpc client (its default p2c balancer and
/// client-side breaker, `gozero-echo-client -load`) as the caller, to set beside ours:
/// reported, with no expectation but that it runs.
pub async fn instance_failing_gozero() -> Row {
    let (etcd, mut instances, _channel) =
        three_instances("failing.rpc", Policy::PeakEwma, SERVICE_TIME).await;
    let secs = format!("{}ms", (HEALTHY + FAILING + AFTER_HEAL).as_millis());
    let workers = WORKERS.to_string();
    let (client, lines) = InteropProcess::start_lines(
        "gozero-echo-client",
        &[
            "-etcd",
            &etcd.endpoint(),
            "-key",
            "failing.rpc",
            "-load",
            &secs,
            "-workers",
            &workers,
            "-watch",
            "go0",
        ],
    );
    let started = blocking(|| lines.recv_timeout(Duration::from_secs(10)));
    let Ok((started, _)) = started else {
        let mut row = failing_row(&Record::from_buckets(Vec::new()), HEALTHY, HEALTHY);
        row.violation = Some("gozero-echo-client did not start its load within 10 s".into());
        return peer(row);
    };
    let pid = instances[0].0.child().id();
    let (failing_at, healed_at) = fail_then_heal(pid, || started.elapsed()).await;
    let buckets = blocking(|| {
        let until = Instant::now() + Duration::from_secs(10);
        let mut buckets = Vec::new();
        while let Ok((_, line)) =
            lines.recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            let n: Vec<u32> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
            if let [_, ok, failed, watched] = n[..] {
                buckets.push([ok, failed, watched]);
            }
        }
        buckets
    });
    drop(client); // ended with its output, or killed after 10 s more
    let counted = !buckets.is_empty();
    let mut row = failing_row(&Record::from_buckets(buckets), failing_at, healed_at);
    row.violation = (!counted).then(|| "gozero-echo-client printed no counts".into());
    peer(row)
}

/// A row of go-zero's client: named, its detail marked as a comparison.
fn peer(mut row: Row) -> Row {
    row.scenario = "instance-failing-gozero";
    row.driver = "go-zero zrpc client, p2c";
    row.detail = format!("for comparison, no expectation: {}", row.detail);
    row
}

/// Fails the instance of `pid` for [`FAILING`] after [`HEALTHY`] load, then heals it
/// and lets the load run [`AFTER_HEAL`]; when it began failing and when it was healed,
/// by the load's clock `now`.
async fn fail_then_heal(pid: u32, now: impl Fn() -> Duration) -> (Duration, Duration) {
    tokio::time::sleep(HEALTHY).await;
    let failing_at = now();
    blocking(|| signal(pid, "USR1"));
    tokio::time::sleep(FAILING).await;
    blocking(|| signal(pid, "USR2"));
    let healed_at = now();
    tokio::time::sleep(AFTER_HEAL).await;
    (failing_at, healed_at)
}

/// The row of a failing-instance load: the calls failed while it failed and
/// outside, how soon the healed instance answered [`SHARE_BACK`] of the calls again,
/// and a violation for a call failed outside or an instance not back in time.
fn failing_row(record: &Record, failing_at: Duration, healed_at: Duration) -> Row {
    let (calls, failed_while) = record.calls_between(failing_at, healed_at + HEAL_GRACE);
    let failed = record.failed();
    let outside = failed - failed_while as usize;
    let before = record.share(Duration::from_secs(1), failing_at);
    let back = record.share_back_after(healed_at, SHARE_BACK, healed_at + AFTER_HEAL);
    let violation = if outside > 0 {
        Some(format!(
            "{outside} calls failed outside the failure (before it or after the heal)"
        ))
    } else if back.is_none_or(|b| b > BACK_WITHIN) {
        Some(format!(
            "the healed instance did not answer {:.0}% of the calls again within {} s",
            SHARE_BACK * 100.0,
            BACK_WITHIN.as_secs()
        ))
    } else {
        None
    };
    Row {
        scenario: "",
        driver: "",
        calls: record.calls(),
        failed,
        recovery_of: "the healed instance answering 20% of the calls again",
        recovery: back,
        detail: format!(
            "1 of 3 go-zero processes answered UNAVAILABLE for {} s: {failed_while} of the {calls} calls then failed ({:.2}%); it answered {:.0}% of the calls before",
            FAILING.as_secs(),
            f64::from(failed_while) / f64::from(calls.max(1)) * 100.0,
            before * 100.0
        ),
        violation,
        errors: record.errors.clone(),
    }
}
