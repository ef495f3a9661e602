//! Instance failures under load: a go-zero instance frozen ([`instance_frozen`]) or
//! killed ([`instance_crash`]), and a long soak with registry churn that samples memory
//! and file descriptors ([`soak`]). Instances that answer, but badly (throttled,
//! failing every call), are in [`super::degraded`]; replacements (restarts, certificate
//! rotation) in [`super::replacement`].

use std::time::{Duration, Instant};

use dtmdriver_core::{Channel, Driver, Policy};
use dtmdriver_gozero::{GoZeroDriver, GoZeroEtcdFormat};
use test_support::{EchoServer, EtcdServer, InteropProcess, free_port};

use super::{
    Kind, WORKERS, blocking, channel, etcd_client, ready_count, register_each, signal, until,
    wait_ready,
};
use crate::load::Load;
use crate::report::Row;

/// A go-zero echo server registered in etcd under `key`, listening on a fresh port.
pub(super) fn gozero_instance(ep: &str, key: &str, name: &str) -> (InteropProcess, String) {
    gozero_instance_taking(ep, key, name, Duration::ZERO)
}

/// A go-zero echo server as [`gozero_instance`] whose every call takes `delay`.
fn gozero_instance_taking(
    ep: &str,
    key: &str,
    name: &str,
    delay: Duration,
) -> (InteropProcess, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let delay = format!("{}us", delay.as_micros());
    let process = InteropProcess::start(
        "gozero-echo-server",
        &[
            "-etcd", ep, "-key", key, "-listen", &listen, "-name", name, "-delay", &delay,
        ],
    );
    (process, listen)
}

/// Three go-zero instances registered under `key` in a private etcd, each call taking
/// `delay`, and a channel over them balancing by `policy`, all three ready.
pub(super) async fn three_instances(
    key: &str,
    policy: Policy,
    delay: Duration,
) -> (EtcdServer, Vec<(InteropProcess, String)>, Channel) {
    let etcd = EtcdServer::start();
    let ep = etcd.endpoint();
    let instances = (0..3)
        .map(|i| gozero_instance_taking(&ep, key, &format!("go{i}"), delay))
        .collect();
    let channel = Channel::builder(&format!("etcd://{ep}/{key}"))
        .driver(&GoZeroDriver)
        .expect("go-zero resolves etcd")
        .policy(policy)
        .connect()
        .expect("connect");
    channel.warm_up();
    wait_ready(&channel, 3).await;
    (etcd, instances, channel)
}

/// The throughput kept through a fault from `from` to `to`, whose instance was back to
/// normal at `back`, the load ending at `end`: the median half-second rate healthy
/// (before `from`, and from half a second after `back`), the one from a second into
/// the fault to its end, and their ratio.
///
/// Why medians of half-second rates: on a shared 2-core machine the mean of a short
/// window before the fault moved between 1,795 and 4,931 calls/s from run to run and
/// failed a 90% bar with no stall; a stall lowers most windows.
pub(super) fn kept_throughput(
    record: &crate::load::Record,
    from: Duration,
    to: Duration,
    back: Duration,
    end: Duration,
) -> (f64, f64, f64) {
    let window = Duration::from_millis(500);
    let healthy = [(Duration::from_millis(500), from), (back + window, end)];
    let baseline = record.median_rate(&healthy, window);
    let during = record.median_rate(&[(from + Duration::from_secs(1), to)], window);
    let ratio = if baseline > 0.0 {
        during / baseline
    } else {
        0.0
    };
    (baseline, during, ratio)
}

/// How long an instance stays frozen.
const FREEZE: Duration = Duration::from_secs(10);

/// The healthy load before a freeze and after the instance is back: 5 s each, about 18
/// half-second windows for the median (3 s each gave 10, and a median that moved
/// 4,500–6,200 calls/s from run to run against a 90% bar).
pub(super) const HEALTHY: Duration = Duration::from_secs(5);

/// How long each call takes in the frozen- and failing-instance scenarios, so that
/// their load is bound by the callers' concurrency (16 callers: at most 1,600 calls/s),
/// not by the CPU: on this shared 2-core machine a CPU-bound load measured the machine,
/// not the channel (one CI run kept 84%, 109% and 123% of the throughput under rr, wrr
/// and p2c, which all do the same while an instance is frozen: they skip it).
pub(super) const SERVICE_TIME: Duration = Duration::from_millis(10);

/// The same for the frozen-instance scenarios, whose verdict is a throughput ratio:
/// 20 ms, at most 800 calls/s. At 10 ms a CI run on a slow spell of the host served
/// only 800–1,100 calls/s healthy, CPU-bound again, and `instance-frozen-p2c` kept
/// 89.7% against the 90% bar (the same build kept 98–99% in two runs before).
const FROZEN_SERVICE_TIME: Duration = Duration::from_millis(20);

/// One of three go-zero instances frozen (SIGSTOP: its TCP connections stay open, it
/// answers nothing, as in a GC pause or a VM freeze) for [`FREEZE`] under load, then
/// resumed, with the channel balancing by `policy`.
pub async fn instance_frozen(policy: Policy) -> Row {
    let (_etcd, mut instances, channel) =
        three_instances("frozen.rpc", policy, FROZEN_SERVICE_TIME).await;
    let ready = |addr: &str| {
        channel
            .status()
            .endpoints
            .iter()
            .any(|e| e.endpoint.addr == addr && e.state == "ready")
    };

    let load = Load::start(&channel, WORKERS);
    tokio::time::sleep(HEALTHY).await;
    let (frozen, frozen_addr) = &mut instances[0];
    let pid = frozen.child().id();
    let frozen_at = load.now();
    signal(pid, "STOP");
    tokio::time::sleep(FREEZE).await;
    signal(pid, "CONT");
    let resumed_at = load.now();
    let frozen_addr = frozen_addr.clone();
    let back = until(Duration::from_secs(5), || async { ready(&frozen_addr) }).await;
    let back_at = load.now();
    tokio::time::sleep(HEALTHY).await;
    let end = load.now();
    let record = load.stop().await;
    let (baseline, during, ratio) = kept_throughput(&record, frozen_at, resumed_at, back_at, end);
    let failed = record.failed();
    let recovery = record.recovered_after(frozen_at, baseline, resumed_at);
    let violation = if ratio < 0.9 {
        Some(format!(
            "kept {:.0}% of the throughput while frozen",
            ratio * 100.0
        ))
    } else if failed > WORKERS {
        Some(format!(
            "{failed} calls failed, more than the {WORKERS} that can be on the frozen instance"
        ))
    } else if back.is_none() {
        Some("the instance did not come back within 5 s of resuming".into())
    } else {
        None
    };
    Row {
        scenario: match policy {
            Policy::RoundRobin => "instance-frozen-rr",
            Policy::WeightedRoundRobin => "instance-frozen-wrr",
            _ => "instance-frozen-p2c",
        },
        driver: policy_name(policy),
        calls: record.calls(),
        failed,
        recovery_of: "throughput back to 90% after the freeze began",
        recovery,
        detail: format!(
            "median {:.0} calls/s healthy (before and after), {:.0} while frozen ({:.0}%); back in rotation {} after resume",
            baseline,
            during,
            ratio * 100.0,
            back.map_or("never".into(), |d| format!("{} ms", d.as_millis()))
        ),
        violation,
        errors: record.errors,
    }
}

/// How soon after a crash calls must stop failing: the connection to a killed process
/// breaks at once (the kernel closes its sockets), so only calls already on it fail.
const CRASH_SETTLE: Duration = Duration::from_secs(1);

/// One of three go-zero instances killed (SIGKILL: no graceful stop, its etcd key left
/// to expire with its lease, as after an OOM kill) under load: only calls that met its
/// connection fail (at most two a caller), none after [`CRASH_SETTLE`], and its endpoint
/// leaves the channel when go-zero's lease expires ([`GoZeroEtcdFormat::TTL`]), the two
/// others serving on.
pub async fn instance_crash() -> Row {
    let etcd = EtcdServer::start();
    let ep = etcd.endpoint();
    let key = "crash.rpc";
    let target = format!("etcd://{ep}/{key}");
    let mut instances: Vec<(InteropProcess, String)> = (0..3)
        .map(|i| gozero_instance(&ep, key, &format!("go{i}")))
        .collect();
    let channel = channel(&target, &GoZeroDriver, 3).await;
    wait_ready(&channel, 3).await;

    let load = Load::start(&channel, WORKERS);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (victim, victim_addr) = &mut instances[0];
    let victim_addr = victim_addr.clone();
    let killed_at = load.now();
    blocking(|| {
        victim.child().kill().expect("SIGKILL the instance");
        victim.child().wait().expect("reap the instance")
    });
    let bound = GoZeroEtcdFormat::TTL + Duration::from_secs(5);
    let removed = until(bound, || async { channel.status().endpoints.len() == 2 }).await;
    let two_ready = until(Duration::from_secs(2), || async {
        ready_count(&channel) == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let end = load.now();
    let record = load.stop().await;
    let failed = record.failed();
    let settled = record
        .last_failure()
        .map_or(Duration::ZERO, |t| t.saturating_sub(killed_at));
    let before = record.median_rate(&[(Duration::from_millis(500), killed_at)], CRASH_SETTLE / 2);
    let after = record.median_rate(&[(killed_at + CRASH_SETTLE, end)], CRASH_SETTLE / 2);
    // The calls on the instance when it died, and those its connection took before the
    // reset was read ("broken pipe": h2 fails every stream of the connection, sent or
    // not), at most one more a caller: seen up to 12 in CI under load.
    let most = 2 * WORKERS;
    let violation = if failed > most {
        Some(format!(
            "{failed} calls failed, more than the {most} the callers can have had on the killed instance"
        ))
    } else if settled > CRASH_SETTLE {
        Some(format!(
            "calls still failed {} ms after the kill",
            settled.as_millis()
        ))
    } else if removed.is_none() {
        Some(format!(
            "the killed instance's endpoint was still listed {} s after the kill",
            bound.as_secs()
        ))
    } else if two_ready.is_none() {
        Some(format!(
            "the two live instances were not both ready: {}",
            crate::load::describe_endpoints(&channel.status())
        ))
    } else {
        None
    };
    Row {
        scenario: "instance-crash",
        driver: Kind::GoZero.name(),
        calls: record.calls(),
        failed,
        recovery_of: "last failed call after the kill",
        recovery: Some(settled),
        detail: format!(
            "1 of 3 go-zero processes ({victim_addr}) SIGKILLed {} ms into the load; its key expired and it left the channel {} after the kill (go-zero's lease: {} s); median {before:.0} calls/s before, {after:.0} after",
            killed_at.as_millis(),
            removed.map_or("never".into(), |d| format!("{} ms", d.as_millis())),
            GoZeroEtcdFormat::TTL.as_secs(),
        ),
        violation,
        errors: record.errors,
    }
}

pub(super) fn policy_name(policy: Policy) -> &'static str {
    match policy {
        Policy::RoundRobin => "gozero, round robin",
        Policy::WeightedRoundRobin => "gozero, weighted rr",
        Policy::PeakEwma => "gozero, p2c",
        _ => "gozero, other policy",
    }
}

/// How long the soak runs: `FAULTS_SOAK_SECS`, default one hour.
fn soak_duration() -> Duration {
    let secs = std::env::var("FAULTS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3600);
    Duration::from_secs(secs)
}

/// This process's resident memory in KiB and open file descriptors.
fn footprint() -> (u64, usize) {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    (rss, fds)
}

/// Load for [`soak_duration`] while one registration is replaced every 5 s; memory and
/// file descriptors sampled every 10 s.
pub async fn soak() -> Row {
    let etcd = EtcdServer::start();
    let ep = etcd.endpoint();
    let target = format!("etcd://{ep}/soak");
    let _client = etcd_client(std::slice::from_ref(&ep)).await;
    let mut servers = Vec::new();
    for i in 0..3 {
        servers.push(EchoServer::start(&format!("soak{i}")).await);
    }
    let mut registrations = register_each(&GoZeroDriver, &target, &servers).await;
    let channel = channel(&target, &GoZeroDriver, 3).await;
    let load = Load::start(&channel, WORKERS);
    let duration = soak_duration();
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut churns = 0usize;
    while start.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let i = churns % registrations.len();
        let old = std::mem::replace(
            &mut registrations[i],
            GoZeroDriver
                .register_service(&target, &servers[i].addr())
                .await
                .expect("register again"),
        );
        let _ = old.deregister().await;
        churns += 1;
        if churns.is_multiple_of(2) {
            let (rss, fds) = footprint();
            eprintln!(
                "soak {:>5} s: rss {rss} KiB, fds {fds}",
                start.elapsed().as_secs()
            );
            samples.push((start.elapsed(), (rss, fds)));
        }
    }
    let record = load.stop().await;
    let failed = record.failed();
    // Growth after warm-up: from the first sample past a minute (or the first) to the last.
    let first = samples
        .iter()
        .find(|(t, _)| *t >= Duration::from_secs(60))
        .or(samples.first())
        .map_or((0, 0), |(_, f)| *f);
    let last = samples.last().map_or((0, 0), |(_, f)| *f);
    let max_rss = samples.iter().map(|(_, (r, _))| *r).max().unwrap_or(0);
    let violation = if failed > 0 {
        Some(format!("{failed} calls failed"))
    } else if last.0 > first.0 + first.0 / 2 {
        Some(format!("memory grew from {} to {} KiB", first.0, last.0))
    } else if last.1 > first.1 + 20 {
        Some(format!(
            "file descriptors grew from {} to {}",
            first.1, last.1
        ))
    } else {
        None
    };
    Row {
        scenario: "soak",
        driver: Kind::GoZero.name(),
        calls: record.calls(),
        failed,
        recovery_of: "-",
        recovery: Some(Duration::ZERO),
        detail: format!(
            "{} s, {churns} re-registrations; rss {} → {} KiB (max {max_rss}), fds {} → {}",
            duration.as_secs(),
            first.0,
            last.0,
            first.1,
            last.1
        ),
        violation,
        errors: record.errors,
    }
}
