//! Instances replaced under load, which a client must ride through with no failed
//! call: go-zero processes restarted one by one ([`rolling_restart`]) and TLS servers
//! restarted with new certificates ([`tls_rotation`]).
//!
//! Each keeps a [`Timeline`] of its steps in load time; a step whose wait for the
//! channel runs out is noted in the row (not silently passed), and the first failed
//! call is reported with the step before it and the channel's endpoints then.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use dtmdriver_core::{Channel, TlsConnector};
use dtmdriver_gozero::GoZeroDriver;
use test_support::{EchoServer, EtcdServer, InteropProcess, TestPki, signal_and_wait};

use super::instances::gozero_instance;
use super::{Kind, WORKERS, blocking, channel, ready_count, register_each, until};
use crate::load::{Load, Record, describe_endpoints};
use crate::report::Row;

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
    timeline
        .wait_ready(
            &channel,
            3,
            || Duration::ZERO,
            "before the load",
            || instances_state(&mut instances, &channel),
        )
        .await;
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
        let step = format!("restart {}, go{i}-new started on {addr}", i + 1);
        timeline
            .wait_ready(
                &channel,
                4,
                || load.now(),
                &step,
                || instances_state(&mut instances, &channel),
            )
            .await;
        let (mut old, old_addr) = instances.remove(0);
        timeline.mark(load.now(), format!("SIGTERM to go{i} on {old_addr}"));
        blocking(|| signal_and_wait(old.child(), "TERM", Duration::from_secs(15)));
        timeline.mark(load.now(), format!("go{i} exited"));
        last_restart = Instant::now();
        let step = format!("restart {}, go{i} exited", i + 1);
        timeline
            .wait_ready(
                &channel,
                3,
                || load.now(),
                &step,
                || instances_state(&mut instances, &channel),
            )
            .await;
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

    /// Waits up to [`STEP_WAIT`] for `want` of `channel`'s endpoints to be ready, and
    /// marks at `now()` how long that took; or notes that it ran out after `step`, with
    /// what `state()` says then. The scenario goes on either way.
    async fn wait_ready(
        &mut self,
        channel: &Channel,
        want: usize,
        now: impl Fn() -> Duration,
        step: &str,
        state: impl FnOnce() -> String,
    ) {
        match until(STEP_WAIT, || async { ready_count(channel) == want }).await {
            Some(took) => self.mark(now(), format!("{want} ready after {} ms", took.as_millis())),
            None => self.note(
                now(),
                format!(
                    "{step}: not {want} ready within {} s, went on anyway; {}",
                    STEP_WAIT.as_secs(),
                    state()
                ),
            ),
        }
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
    let _registrations = register_each(&GoZeroDriver, &target, &servers).await;
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
    let channel_state = || format!("the channel has {}", describe_endpoints(&channel.status()));
    timeline
        .wait_ready(
            &channel,
            3,
            || Duration::ZERO,
            "before the load",
            channel_state,
        )
        .await;

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
        let step = format!("rotation {}", i + 1);
        timeline
            .wait_ready(&channel, 3, || load.now(), &step, channel_state)
            .await;
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
