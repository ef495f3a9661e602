//! An endpoint that stops answering with its connection open (a process frozen by
//! SIGSTOP, a VM paused, a deadlock) leaves the rotation within about a second under
//! every policy and comes back when it answers again; the liveness pings that find it
//! stay within grpc-go's ping policy.
//!
//! The frozen-instance tests freeze an echo server the way a stopped process looks from
//! the client: a TCP relay in front of it stops moving bytes in both directions and
//! keeps both sockets open (so nothing fails, the kernel buffers fill, pings go
//! unanswered). A real SIGSTOPped grpc-go server is frozen in
//! `a_sigstopped_go_zero_instance_is_ejected_and_readmitted`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use dtmdriver_core::{Channel, Policy};
use http_body::Frame;
use prost::Message;
use test_support::{
    EchoClient, EchoServer, InteropProcess, SayRequest, free_port, manual_channel, state_of,
    wait_for,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::Code;

/// A TCP relay to `upstream` that can freeze: while frozen it moves no byte in either
/// direction and keeps every socket open, as a stopped process does.
struct FreezableRelay {
    addr: String,
    frozen: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezableRelay {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let frozen = watch::channel(false).0;
        let rx = frozen.subscribe();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, rx.clone()));
                tokio::spawn(pump(sr, cw, rx.clone()));
            }
        });
        Self { addr, frozen, task }
    }

    fn freeze(&self, on: bool) {
        self.frozen.send_replace(on);
    }
}

impl Drop for FreezableRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Moves bytes one way; what it read while frozen waits until the thaw. Ends when
/// either side closes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Counts of a closed-loop load: successes by server, failures by code.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    by_server: Mutex<HashMap<String, u64>>,
    failed: Mutex<Vec<tonic::Status>>,
    stop: AtomicBool,
}

impl Tally {
    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }
    fn served_by(&self, server: &str) -> u64 {
        let map = self.by_server.lock().unwrap();
        map.get(server).copied().unwrap_or(0)
    }
    fn failures(&self) -> Vec<tonic::Status> {
        self.failed.lock().unwrap().clone()
    }
}

/// Starts `callers` closed-loop callers, each call with `deadline`.
fn closed_loop(channel: &Channel, callers: usize, deadline: Duration) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    for _ in 0..callers {
        let tally = tally.clone();
        let mut client = EchoClient::new(channel.clone());
        tokio::spawn(async move {
            // Bounded by the test's stop flag; each call by its deadline.
            while !tally.stop.load(Ordering::Relaxed) {
                let mut req = tonic::Request::new(SayRequest {
                    message: "hi".into(),
                });
                req.set_timeout(deadline);
                match client.say(req).await {
                    Ok(reply) => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                        let server = reply.into_inner().server;
                        *tally.by_server.lock().unwrap().entry(server).or_default() += 1;
                    }
                    Err(status) => tally.failed.lock().unwrap().push(status),
                }
            }
        });
    }
    tally
}

const CALLERS: usize = 16;
const DEADLINE: Duration = Duration::from_secs(1);

/// What one policy did with one of three endpoints frozen for five seconds.
struct FreezeRun {
    /// Each second before the freeze: calls of the frozen group per call of the control.
    before: Vec<f64>,
    /// The same for the 2nd, 3rd, 4th and 5th second of the freeze.
    frozen: Vec<f64>,
    /// Calls per second of the frozen group, before and in seconds 2-5 (for the log).
    rates: (Vec<f64>, Vec<f64>),
    failed: Vec<tonic::Status>,
    /// The most calls seen pending on the frozen endpoint.
    parked_max: u32,
    ejected_after: Duration,
    back_after: Duration,
}

/// Three echo servers behind freezable relays, a channel over them and its load.
struct Group {
    _servers: Vec<EchoServer>,
    relays: Vec<FreezableRelay>,
    channel: Channel,
    tally: Arc<Tally>,
}

impl Group {
    async fn start(name: &str, policy: Policy) -> Self {
        let mut servers = Vec::new();
        let mut relays = Vec::new();
        for name in ["a", "b", "c"] {
            let server = EchoServer::start(name).await;
            relays.push(FreezableRelay::start(server.addr()).await);
            servers.push(server);
        }
        let (channel, resolver) =
            manual_channel(&format!("{name}-{policy:?}"), |b| b.policy(policy));
        let addrs: Vec<&str> = relays.iter().map(|r| r.addr.as_str()).collect();
        resolver.push(&addrs);
        channel.warm_up();
        test_support::wait_status(&channel, "every endpoint to connect", |s| {
            s.endpoints.len() == 3 && s.endpoints.iter().all(|e| e.state == "ready")
        })
        .await;
        let tally = closed_loop(&channel, CALLERS, DEADLINE);
        Self {
            _servers: servers,
            relays,
            channel,
            tally,
        }
    }
}

/// Runs the frozen group next to a control group that is never frozen: both share the
/// host's CPU, so the frozen group's share of the calls measures what the freeze cost
/// it, whatever else the (shared, busy) test host does meanwhile.
async fn freeze_one_of_three(policy: Policy) -> FreezeRun {
    let group = Group::start("frozen", policy).await;
    let control = Group::start("control", policy).await;
    let frozen = &group.relays[1];
    let tally = &group.tally;

    // Warm up, then each second before the freeze, sampled as the freeze will be.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, before_rates, _) = sample(&group, &control, &frozen.addr, 3).await;
    let failed_before = tally.failures().len();

    frozen.freeze(true);
    let (shares, rates, seen) = sample(&group, &control, &frozen.addr, 5).await;
    let (parked_max, ejected_after) = seen;
    let failed: Vec<_> = tally.failures()[failed_before..].to_vec();

    // Thaw: the endpoint serves again.
    let served_before_thaw = tally.served_by("b");
    frozen.freeze(false);
    let back_after = wait_for(
        "the thawed endpoint to serve calls again",
        Duration::from_secs(5),
        || async { tally.served_by("b") > served_before_thaw },
    )
    .await;
    assert_eq!(
        state_of(&group.channel.status(), &frozen.addr),
        Some("ready"),
        "{:?}",
        group.channel.status()
    );
    tally.stop.store(true, Ordering::Relaxed);
    control.tally.stop.store(true, Ordering::Relaxed);
    // Let the callers' last calls end before the servers go.
    tokio::time::sleep(DEADLINE + Duration::from_millis(200)).await;
    FreezeRun {
        before,
        frozen: shares[1..].to_vec(),
        rates: (before_rates, rates[1..].to_vec()),
        failed,
        parked_max,
        ejected_after: ejected_after.unwrap_or(Duration::MAX),
        back_after,
    }
}

/// Watches both loads for `secs` seconds: per second, the group's calls per call of
/// the control and the group's calls per second; the most calls pending on `watched`
/// and when it first showed as unresponsive.
async fn sample(
    group: &Group,
    control: &Group,
    watched: &str,
    secs: u64,
) -> (Vec<f64>, Vec<f64>, (u32, Option<Duration>)) {
    let start = Instant::now();
    let mark = || (group.tally.ok(), control.tally.ok(), Instant::now());
    let mut marks = vec![mark()];
    let mut parked_max = 0;
    let mut unresponsive_after = None;
    while marks.len() as u64 <= secs {
        let status = group.channel.status();
        if let Some(e) = status.endpoints.iter().find(|e| e.endpoint.addr == watched) {
            parked_max = parked_max.max(e.pending);
            if e.state == "unresponsive" && unresponsive_after.is_none() {
                unresponsive_after = Some(start.elapsed());
            }
        }
        if start.elapsed() >= Duration::from_secs(marks.len() as u64) {
            marks.push(mark());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let shares = marks
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) as f64 / (w[1].1 - w[0].1).max(1) as f64)
        .collect();
    let rates = marks
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) as f64 / (w[1].2 - w[0].2).as_secs_f64())
        .collect();
    (shares, rates, (parked_max, unresponsive_after))
}

fn median(rates: &[f64]) -> f64 {
    let mut sorted = rates.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// With one of three endpoints frozen under a closed-loop load of 16 callers with 1 s
/// deadlines, every policy ejects it within about a second, keeps at least 90% of its
/// throughput from the second second on, fails only calls that were on the frozen
/// endpoint (`DEADLINE_EXCEEDED`), and sends it calls again within 2 s of the thaw.
///
/// Throughput is measured against a control channel under the same load on three
/// endpoints never frozen, second by second, median against median: the test host is
/// shared and busy, and its swings hit both alike. Without the ejection a policy that
/// keeps feeding the frozen endpoint loses almost all of its throughput.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_endpoint_leaves_the_rotation_under_every_policy() {
    for policy in [
        Policy::RoundRobin,
        Policy::WeightedRoundRobin,
        Policy::PeakEwma,
    ] {
        let run = freeze_one_of_three(policy).await;
        let (before, frozen) = (median(&run.before), median(&run.frozen));
        eprintln!(
            "{policy:?}: calls/s before {:.0?}, frozen s 2-5 {:.0?}; share of the control's \
             before {:.2?} (median {before:.2}), frozen {:.2?} (median {frozen:.2}); \
             {} failed, {} parked at most, ejected after {:?}, back {:?} after the thaw",
            run.rates.0,
            run.rates.1,
            run.before,
            run.frozen,
            run.failed.len(),
            run.parked_max,
            run.ejected_after,
            run.back_after
        );
        assert!(
            run.ejected_after < Duration::from_millis(1500),
            "{policy:?}: the frozen endpoint was not ejected within 1.5 s ({:?})",
            run.ejected_after
        );
        assert!(
            frozen >= 0.9 * before,
            "{policy:?}: with one endpoint frozen {frozen:.2} calls per call of the control, \
             {before:.2} before"
        );
        assert!(
            run.failed.len() <= run.parked_max as usize,
            "{policy:?}: {} calls failed, at most {} were ever on the frozen endpoint: {:?}",
            run.failed.len(),
            run.parked_max,
            run.failed.first()
        );
        for status in &run.failed {
            assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        }
        assert!(
            run.back_after < Duration::from_secs(2),
            "{policy:?}: the thawed endpoint got calls only after {:?}",
            run.back_after
        );
    }
}

/// Calls on an endpoint that froze end by their deadline (`DEADLINE_EXCEEDED`); once
/// it is out of rotation every new call goes to the other endpoint, and the endpoint
/// says why it is out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_a_frozen_endpoint_end_by_their_deadline_and_new_ones_go_elsewhere() {
    let a = EchoServer::start("a").await;
    let b = EchoServer::start("b").await;
    let relay = FreezableRelay::start(a.addr()).await;
    let (channel, resolver) = manual_channel("frozen-deadline", |b| b);
    resolver.push(&[&relay.addr, &b.addr()]);
    channel.warm_up();
    test_support::wait_status(&channel, "every endpoint to connect", |s| {
        s.endpoints.len() == 2 && s.endpoints.iter().all(|e| e.state == "ready")
    })
    .await;
    relay.freeze(true);
    let mut first = Vec::new();
    for _ in 0..4 {
        first.push(tokio::spawn(say_with_deadline(
            channel.clone(),
            Duration::from_millis(1500),
        )));
    }
    for call in first {
        match call.await.unwrap() {
            Ok(server) => assert_eq!(server, "b"),
            Err(status) => assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}"),
        }
    }
    let status = channel.status();
    let frozen = status
        .endpoints
        .iter()
        .find(|e| e.endpoint.addr == relay.addr)
        .unwrap();
    assert_eq!(frozen.state, "unresponsive", "{status:?}");
    assert!(
        frozen
            .error
            .as_deref()
            .unwrap_or("")
            .contains("not answering"),
        "{frozen:?}"
    );
    for _ in 0..20 {
        assert_eq!(test_support::say(&channel).await.unwrap(), "b");
    }
    relay.freeze(false);
    wait_for(
        "the thawed endpoint to be ready",
        Duration::from_secs(3),
        || async { state_of(&channel.status(), &relay.addr) == Some("ready") },
    )
    .await;
    drop(a);
}

async fn say_with_deadline(channel: Channel, deadline: Duration) -> Result<String, tonic::Status> {
    let mut req = tonic::Request::new(SayRequest {
        message: "hi".into(),
    });
    req.set_timeout(deadline);
    match tokio::time::timeout(Duration::from_secs(20), EchoClient::new(channel).say(req)).await {
        Ok(reply) => reply.map(|r| r.into_inner().server),
        Err(_) => panic!("a call with a deadline hung for 20 s"),
    }
}

/// With its only endpoint unresponsive, a call waits as for a connecting endpoint:
/// bounded by the connect timeout it fails `UNAVAILABLE` saying the endpoint does not
/// answer; a call waiting when the endpoint answers again is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_endpoint_unresponsive_calls_wait_then_fail_naming_it() {
    let a = EchoServer::start("a").await;
    let relay = FreezableRelay::start(a.addr()).await;
    let (channel, resolver) = manual_channel("all-frozen", |b| b);
    resolver.push(&[&relay.addr]);
    assert_eq!(test_support::say(&channel).await.unwrap(), "a");
    relay.freeze(true);
    let stuck = say_with_deadline(channel.clone(), Duration::from_secs(1)).await;
    assert_eq!(stuck.unwrap_err().code(), Code::DeadlineExceeded);
    wait_for(
        "the endpoint to be unresponsive",
        Duration::from_secs(3),
        || async { state_of(&channel.status(), &relay.addr) == Some("unresponsive") },
    )
    .await;

    // No deadline: bounded by the connect timeout (2 s here), then UNAVAILABLE.
    let started = Instant::now();
    let err = test_support::say(&channel).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("not answering"), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(1500), "{err:?}");

    // A call waiting when the endpoint answers again is served.
    let waiting = tokio::spawn(say_with_deadline(channel.clone(), Duration::from_secs(5)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.freeze(false);
    assert_eq!(waiting.await.unwrap().unwrap(), "a");
}

/// A gRPC unary request whose body stalls `stall` after its first byte: the server
/// writes nothing meanwhile, as while a slow handler runs.
struct SlowBody {
    parts: Vec<Bytes>,
    stall: Pin<Box<tokio::time::Sleep>>,
    stalled: bool,
    stall_for: Duration,
}

impl SlowBody {
    fn new(message: &str, stall_for: Duration) -> Self {
        let msg = SayRequest {
            message: message.into(),
        }
        .encode_to_vec();
        let mut frame = BytesMut::new();
        frame.put_u8(0);
        frame.put_u32(msg.len() as u32);
        frame.put_slice(&msg);
        let frame = frame.freeze();
        Self {
            parts: vec![frame.slice(1..), frame.slice(..1)],
            stall: Box::pin(tokio::time::sleep(Duration::ZERO)),
            stalled: false,
            stall_for,
        }
    }
}

impl http_body::Body for SlowBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = &mut *self;
        if this.parts.len() == 1 && !this.stalled {
            this.stalled = true;
            this.stall
                .as_mut()
                .reset(tokio::time::Instant::now() + this.stall_for);
        }
        if this.parts.len() == 1 && this.stall.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(this.parts.pop().map(|b| Ok(Frame::data(b))))
    }
}

/// One echo call through `channel` whose request stalls `stall` halfway; the server
/// that answered, or why not.
async fn slow_say(channel: &Channel, stall: Duration) -> Result<String, String> {
    use http_body_util_free::collect;
    use tower::Service;
    let req = http::Request::post("/echo.Echo/Say")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(SlowBody::new("slow", stall)))
        .unwrap();
    let mut channel = channel.clone();
    let call = async {
        let resp = channel.call(req).await.map_err(|e| e.to_string())?;
        collect(resp.into_body()).await
    };
    match tokio::time::timeout(Duration::from_secs(20), call).await {
        Ok(r) => r,
        Err(_) => Err("hung for 20 s".into()),
    }
}

/// Reading a gRPC response without another dependency.
mod http_body_util_free {
    use super::*;
    use std::future::poll_fn;

    /// The reply's server name, or the grpc-status error.
    pub async fn collect(mut body: tonic::body::Body) -> Result<String, String> {
        let mut data = BytesMut::new();
        let mut status = None;
        while let Some(frame) =
            poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)).await
        {
            let frame = frame.map_err(|e| e.to_string())?;
            match frame.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        status = trailers
                            .get("grpc-status")
                            .map(|v| v.to_str().unwrap_or("?").to_string());
                        if status.as_deref() != Some("0") {
                            return Err(format!("{trailers:?}"));
                        }
                    }
                }
            }
        }
        if status.as_deref() != Some("0") || data.len() < 5 {
            return Err(format!("no OK status: {status:?}, {} bytes", data.len()));
        }
        let reply =
            test_support::SayReply::decode(&data[5..]).map_err(|e| format!("bad reply: {e}"))?;
        Ok(reply.server)
    }
}

/// Calls that go silent (their request stalls, so the server writes nothing) make the
/// channel ping a grpc-go server (go-zero's) again and again; it keeps within grpc-go's
/// ping policy, so the server never closes the connection with GOAWAY
/// `ENHANCE_YOUR_CALM` "too_many_pings" (it would at the third ping in a row without
/// data written in between), and every call succeeds on the one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_pings_keep_within_grpc_go_ping_policy() {
    let listen = format!("127.0.0.1:{}", free_port());
    let _go = InteropProcess::start("gozero-echo-server", &["-listen", &listen, "-name", "go1"]);
    let channel = Channel::builder(&format!("direct:///{listen}"))
        .connect()
        .unwrap();
    wait_for("go-zero to serve", Duration::from_secs(15), || async {
        test_support::say(&channel).await.is_ok()
    })
    .await;
    let until = Instant::now() + Duration::from_secs(10);
    let mut calls = 0;
    // Sequential silent calls, each long enough for a ping and more: without the policy
    // rule the channel would ping every check during each silence.
    while Instant::now() < until {
        let reply = slow_say(&channel, Duration::from_millis(900)).await;
        assert_eq!(reply.as_deref(), Ok("go1"), "call {calls}");
        calls += 1;
    }
    let status = channel.status();
    let endpoint = &status.endpoints[0];
    eprintln!(
        "{calls} silent calls, {} pings, {} connects",
        endpoint.probes, endpoint.connects
    );
    assert!(
        endpoint.probes >= 5,
        "the silences should have been probed: {endpoint:?}"
    );
    assert_eq!(
        endpoint.connects, 1,
        "go-zero closed the connection: {endpoint:?}"
    );
    assert_eq!(endpoint.state, "ready");
}

/// The scenario with a real process: three go-zero instances, one SIGSTOPped
/// under load. It leaves the rotation, the others serve, and after SIGCONT it serves
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigstopped_go_zero_instance_is_ejected_and_readmitted() {
    let listens: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut gos: Vec<InteropProcess> = listens
        .iter()
        .zip(["go0", "go1", "go2"])
        .map(|(l, n)| InteropProcess::start("gozero-echo-server", &["-listen", l, "-name", n]))
        .collect();
    let channel = Channel::builder(&format!("direct:///{}", listens.join(",")))
        .connect()
        .unwrap();
    channel.warm_up();
    test_support::wait_status(&channel, "every endpoint to connect", |s| {
        s.endpoints.len() == 3 && s.endpoints.iter().all(|e| e.state == "ready")
    })
    .await;
    let tally = closed_loop(&channel, CALLERS, DEADLINE);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok0, t0) = (tally.ok(), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = (tally.ok() - ok0) as f64 / t0.elapsed().as_secs_f64();
    let pid = gos[1].child().id();
    let signal = |sig: &str| test_support::signal(pid, sig);
    let failed_before = tally.failures().len();
    signal("STOP");
    let stopped = Instant::now();
    // Watch the stopped instance for four seconds; count the calls of seconds 2-4.
    let mut ejected = None;
    let mut parked_max = 0;
    let mut mark = None;
    while stopped.elapsed() < Duration::from_secs(4) {
        let status = channel.status();
        if let Some(e) = status
            .endpoints
            .iter()
            .find(|e| e.endpoint.addr == listens[1])
        {
            parked_max = parked_max.max(e.pending);
            if e.state == "unresponsive" && ejected.is_none() {
                ejected = Some(stopped.elapsed());
            }
        }
        if mark.is_none() && stopped.elapsed() >= Duration::from_secs(1) {
            mark = Some((tally.ok(), Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (ok1, t1) = mark.expect("sampled past the first second");
    let stopped_rate = (tally.ok() - ok1) as f64 / t1.elapsed().as_secs_f64();
    let failed = tally.failures()[failed_before..].to_vec();
    let go1_before = tally.served_by("go1");
    signal("CONT");
    let back = wait_for(
        "the resumed instance to serve again",
        Duration::from_secs(5),
        || async { tally.served_by("go1") > go1_before },
    )
    .await;
    tally.stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(DEADLINE + Duration::from_millis(200)).await;
    eprintln!(
        "{before:.0} calls/s before, {stopped_rate:.0} calls/s in seconds 2-4 of the stop, \
         ejected after {ejected:?}, {} failed, {parked_max} parked at most, back after {back:?}",
        failed.len()
    );
    let ejected = ejected.expect("the stopped instance was never unresponsive");
    assert!(ejected < Duration::from_millis(1500), "{ejected:?}");
    // Without the ejection it is a few dozen calls a second. The host is shared and
    // busy, so the bar is low; the relay tests measure the 90%.
    assert!(
        stopped_rate >= 0.5 * before,
        "{stopped_rate:.0} calls/s with one of three instances stopped, {before:.0} before"
    );
    assert!(
        failed.len() <= parked_max as usize,
        "{} failed, at most {parked_max} were on the stopped instance",
        failed.len()
    );
    for status in &failed {
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    }
    assert!(back < Duration::from_secs(2), "{back:?}");
    for go in &mut gos {
        go.interrupt();
    }
}
