//! Instance failures under load: go-zero service processes restarted one by one, and a
//! long soak with registry churn that samples memory and file descriptors.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use dtmdriver_core::{Channel, Driver, Policy, TlsConnector};
use dtmdriver_gozero::GoZeroDriver;
use test_support::{EchoServer, EtcdServer, InteropProcess, TestPki, free_port, signal_and_wait};

use super::{Kind, WORKERS, blocking, channel, etcd_client, signal, until};
use crate::load::{Load, Record, describe_endpoints};
use crate::report::Row;

/// A go-zero echo server registered in etcd under `key`, listening on a fresh port.
fn gozero_instance(ep: &str, key: &str, name: &str) -> (InteropProcess, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let process = InteropProcess::start(
        "gozero-echo-server",
        &["-etcd", ep, "-key", key, "-listen", &listen, "-name", name],
    );
    (process, listen)
}

/// How long a step of a replacement scenario waits for the channel to reach the ready
/// count it expects (the wait's end is noted in the row).
const STEP_WAIT: Duration = Duration::from_secs(10);

/// Each of three go-zero instances replaced by a new process, one after the other,
/// under load: the new one started, then the old one stopped (SIGTERM, go-zero's
/// graceful shutdown).
pub async fn rolling_restart() -> Row {
    let etcd = EtcdServer::start();
    let ep = etcd.endpoint();
    let target = format!("etcd://{ep}/roll.rpc");
    let mut instances: Vec<(InteropProcess, String)> = (0..3)
        .map(|i| gozero_instance(&ep, "roll.rpc", &format!("go{i}")))
        .collect();
    let channel = channel(&target, &GoZeroDriver, 3).await;
    let ready = || ready_count(&channel);
    let mut timeline = Timeline::default();

    // Listed is not ready: go-zero registers in etcd before it listens, so the channel
    // can list an instance and dial it before it listens; a refused endpoint then waits
    // out a redial backoff (100 ms ±20% at first). With all three in that state the
    // load's first calls failed at once ("all 3 endpoints are unreachable: ...
    // Connection refused") before any instance was restarted, in about one run of
    // five on a loaded machine. The load starts on three ready instances.
    if until(STEP_WAIT, || async { ready() == 3 }).await.is_none() {
        timeline.note(
            Duration::ZERO,
            format!(
                "the 3 instances were not all ready within {} s, the load started anyway; {}",
                STEP_WAIT.as_secs(),
                instances_state(&mut instances, &channel)
            ),
        );
    }
    let load = Load::start(&channel, WORKERS);
    timeline.mark(load.now(), "load started".into());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut last_restart = Instant::now();
    for i in 0..3 {
        // As a rolling update with one instance of surge does it: the replacement first
        // (go-zero registers before it listens), then the old one once the channel
        // has the new one ready.
        let (process, addr) = gozero_instance(&ep, "roll.rpc", &format!("go{i}-new"));
        instances.push((process, addr.clone()));
        timeline.mark(load.now(), format!("started go{i}-new on {addr}"));
        match until(STEP_WAIT, || async { ready() == 4 }).await {
            Some(took) => {
                timeline.mark(load.now(), format!("4 ready after {} ms", took.as_millis()))
            }
            None => timeline.note(
                load.now(),
                format!(
                    "restart {}: no 4 ready within {} s of starting go{i}-new on {addr}, \
                     go{i} stopped anyway; {}",
                    i + 1,
                    STEP_WAIT.as_secs(),
                    instances_state(&mut instances, &channel)
                ),
            ),
        }
        let (mut old, old_addr) = instances.remove(0);
        timeline.mark(load.now(), format!("SIGTERM to go{i} on {old_addr}"));
        blocking(|| signal_and_wait(old.child(), "TERM", Duration::from_secs(15)));
        timeline.mark(load.now(), format!("go{i} exited"));
        last_restart = Instant::now();
        match until(STEP_WAIT, || async { ready() == 3 }).await {
            Some(took) => {
                timeline.mark(load.now(), format!("3 ready after {} ms", took.as_millis()))
            }
            None => timeline.note(
                load.now(),
                format!(
                    "restart {}: not back to 3 ready within {} s of go{i} exiting; {}",
                    i + 1,
                    STEP_WAIT.as_secs(),
                    instances_state(&mut instances, &channel)
                ),
            ),
        }
    }
    let recovery = until(Duration::from_secs(10), || async { ready() == 3 })
        .await
        .map(|_| last_restart.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    replacement_row(
        "rolling-restart",
        load.stop().await,
        "3 ready after the last restart",
        recovery,
        "3 go-zero processes, each replaced: a new one, then SIGTERM to the old".into(),
        &timeline,
    )
}

/// What happened during a scenario, in load time, for relating the first failed call to
/// the step before it; and the notes of waits that ran out, for the row.
#[derive(Default)]
struct Timeline {
    events: Vec<(Duration, String)>,
    notes: Vec<String>,
}

impl Timeline {
    /// Records `what` at `at` (from the start of the load).
    fn mark(&mut self, at: Duration, what: String) {
        self.events.push((at, what));
    }

    /// Records `what` and keeps it as a note for the row; says it on stderr at once.
    fn note(&mut self, at: Duration, what: String) {
        eprintln!("faults: {} ms: {what}", at.as_millis());
        self.notes.push(what.clone());
        self.mark(at, what);
    }

    /// The last event at or before `at`.
    fn before(&self, at: Duration) -> Option<&(Duration, String)> {
        self.events.iter().rfind(|(t, _)| *t <= at)
    }

    /// Every event, one a line, for the log.
    fn lines(&self) -> String {
        self.events
            .iter()
            .map(|(t, what)| format!("  {:>6} ms  {what}", t.as_millis()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The channel's endpoints and which instance processes have exited (a go-zero server
/// that cannot listen, its port taken, exits while its registration lives on).
fn instances_state(instances: &mut [(InteropProcess, String)], channel: &Channel) -> String {
    let exited: Vec<String> = instances
        .iter_mut()
        .filter_map(|(process, addr)| match process.child().try_wait() {
            Ok(Some(status)) => Some(format!("the instance on {addr} exited ({status})")),
            _ => None,
        })
        .collect();
    let exited = if exited.is_empty() {
        "every instance process is running".to_string()
    } else {
        exited.join(", ")
    };
    format!(
        "{exited}; the channel has {}",
        describe_endpoints(&channel.status())
    )
}

/// Three TLS instances, each in turn restarted on its address with a newly issued
/// certificate (the same CA), under load through a TLS channel.
pub async fn tls_rotation() -> Row {
    let etcd = EtcdServer::start();
    let ep = etcd.endpoint();
    let target = format!("etcd://{ep}/tls.rpc");
    let pki = TestPki::new(&["127.0.0.1", "localhost"]);
    let mut servers = Vec::new();
    for i in 0..3 {
        servers.push(EchoServer::start_tls(&format!("tls{i}"), &pki).await);
    }
    let mut registrations = Vec::new();
    for s in &servers {
        registrations.push(
            GoZeroDriver
                .register_service(&target, &s.addr())
                .await
                .expect("register"),
        );
    }
    let tls = TlsConnector::from_pem(pki.ca_pem.as_bytes(), None).expect("the CA");
    let channel = Channel::builder(&target)
        .driver(&GoZeroDriver)
        .expect("go-zero resolves etcd")
        .tls(tls)
        .connect()
        .expect("connect");
    channel.warm_up();
    let ready = || ready_count(&channel);
    let mut timeline = Timeline::default();
    if until(STEP_WAIT, || async { ready() == 3 }).await.is_none() {
        timeline.note(
            Duration::ZERO,
            format!(
                "the 3 instances were not all ready within {} s, the load started anyway; \
                 the channel has {}",
                STEP_WAIT.as_secs(),
                describe_endpoints(&channel.status())
            ),
        );
    }

    let load = Load::start(&channel, WORKERS);
    timeline.mark(load.now(), "load started".into());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut last = Instant::now();
    for (i, server) in servers.iter_mut().enumerate() {
        let (cert, key) = pki.issue(&format!("rotated{i}"), &["127.0.0.1", "localhost"]);
        server.set_tls_identity(&cert, &key);
        timeline.mark(
            load.now(),
            format!("restarting tls{i} on {}", server.addr()),
        );
        server.restart().await;
        timeline.mark(load.now(), format!("tls{i} restarted"));
        last = Instant::now();
        match until(STEP_WAIT, || async { ready() == 3 }).await {
            Some(took) => {
                timeline.mark(load.now(), format!("3 ready after {} ms", took.as_millis()))
            }
            None => timeline.note(
                load.now(),
                format!(
                    "rotation {}: not back to 3 ready within {} s; the channel has {}",
                    i + 1,
                    STEP_WAIT.as_secs(),
                    describe_endpoints(&channel.status())
                ),
            ),
        }
    }
    let recovery = until(Duration::from_secs(10), || async { ready() == 3 })
        .await
        .map(|_| last.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rotated = servers.iter().map(EchoServer::calls).collect::<Vec<_>>();
    replacement_row(
        "tls-rotation",
        load.stop().await,
        "3 ready after the last rotation",
        recovery,
        format!("3 TLS instances restarted with new certificates; calls per instance {rotated:?}"),
        &timeline,
    )
}

/// How many of `channel`'s endpoints are ready.
fn ready_count(channel: &Channel) -> usize {
    channel
        .status()
        .endpoints
        .iter()
        .filter(|e| e.state == "ready")
        .count()
}

/// The row of a scenario that replaces instances one by one: it passes with no failed
/// call and all three ready again. The detail adds the notes of waits that ran out and,
/// if calls failed, the first failure: when (after which step of `timeline`) and the
/// channel's endpoints then; with either, the timeline goes to stderr.
fn replacement_row(
    scenario: &'static str,
    record: Record,
    recovery_of: &'static str,
    recovery: Option<Duration>,
    mut detail: String,
    timeline: &Timeline,
) -> Row {
    let failed = record.failed();
    for note in &timeline.notes {
        let _ = write!(detail, "; NOTE: {note}");
    }
    if let Some(first) = &record.first_failure {
        let after = timeline
            .before(first.at)
            .map_or(String::new(), |(t, what)| {
                format!(", {} ms after: {what}", (first.at - *t).as_millis())
            });
        let _ = write!(
            detail,
            "; first failed call at {} ms of the load{after}; the channel then had {}",
            first.at.as_millis(),
            first.endpoints
        );
    }
    if record.first_failure.is_some() || !timeline.notes.is_empty() {
        eprintln!(
            "faults: {scenario} timeline (ms from the start of the load):\n{}",
            timeline.lines()
        );
    }
    Row {
        scenario,
        driver: Kind::GoZero.name(),
        calls: record.calls(),
        failed,
        recovery_of,
        recovery,
        detail,
        violation: match recovery {
            _ if failed > 0 => Some(format!("{failed} calls failed")),
            None => Some("the channel never had 3 ready instances again".into()),
            Some(_) => None,
        },
        errors: record.errors,
    }
}

/// How long an instance stays frozen.
const FREEZE: Duration = Duration::from_secs(10);

/// One of three go-zero instances frozen (SIGSTOP: its TCP connections stay open, it
/// answers nothing, as in a GC pause or a VM freeze) for [`FREEZE`] under load, then
/// resumed, with the channel balancing by `policy`.
pub async fn instance_frozen(policy: Policy) -> Row {
    let etcd = EtcdServer::start();
    let ep = etcd.endpoint();
    let key = "frozen.rpc";
    let target = format!("etcd://{ep}/{key}");
    let mut instances: Vec<(InteropProcess, String)> = (0..3)
        .map(|i| gozero_instance(&ep, key, &format!("go{i}")))
        .collect();
    let channel = Channel::builder(&target)
        .driver(&GoZeroDriver)
        .expect("go-zero resolves etcd")
        .policy(policy)
        .connect()
        .expect("connect");
    channel.warm_up();
    let ready = |addr: &str| {
        channel
            .status()
            .endpoints
            .iter()
            .any(|e| e.endpoint.addr == addr && e.state == "ready")
    };
    let all_ready = until(Duration::from_secs(10), || async {
        instances.iter().all(|(_, a)| ready(a))
    })
    .await;
    assert!(
        all_ready.is_some(),
        "the 3 go-zero instances never got ready: {:?}",
        channel.status()
    );

    let load = Load::start(&channel, WORKERS);
    tokio::time::sleep(Duration::from_secs(3)).await;
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
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = load.now();
    let record = load.stop().await;
    // Medians of half-second rates, the baseline from the windows with three healthy
    // instances on both sides of the freeze: on a shared 2-core machine the mean of a
    // short window before the freeze moved between 1,795 and 4,931 calls/s from run to
    // run and failed the 90% bar with no stall; a stall lowers most windows.
    let window = Duration::from_millis(500);
    let healthy = [
        (Duration::from_millis(500), frozen_at),
        (back_at + window, end),
    ];
    let baseline = record.median_rate(&healthy, window);
    let during = record.median_rate(&[(frozen_at + Duration::from_secs(1), resumed_at)], window);
    let ratio = if baseline > 0.0 {
        during / baseline
    } else {
        0.0
    };
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

fn policy_name(policy: Policy) -> &'static str {
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
    let mut registrations = Vec::new();
    for s in &servers {
        registrations.push(
            GoZeroDriver
                .register_service(&target, &s.addr())
                .await
                .expect("register"),
        );
    }
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
