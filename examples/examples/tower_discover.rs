//! The tower way in: the same registry target called through `tower::balance::p2c::Balance`
//! over our `Discover`, and through tonic's own `Channel::balance_channel` fed by our
//! feeder, while an instance is added and one removed.
//!
//! Run it with `cargo run -p examples --example tower_discover`. It starts a private etcd
//! on a free loopback port and two in-process echo servers registered with
//! `dtm-driver-gozero` (`echo.rpc/<lease id>` = `host:port`), then:
//!
//! 1. calls both ways;
//! 2. registers a third instance: both ways reach it;
//! 3. deregisters the first (its server keeps running until both ways have stopped
//!    calling it, since tonic's channel has no failover from a dead endpoint), then stops
//!    it: no call fails.
//!
//! Both ways are for users of tower middleware or tonic's channel; `dtmdriver_core::connect`
//! gives our `Channel`, which needs neither and handles what these do not (see the
//! `dtmdriver_core::discover` docs). The program ends on its own and exits non-zero if a
//! call failed.

#![allow(clippy::print_stdout)] // an example talks to its user

use dtmdriver_gozero as _; // links dtm-driver-gozero

use std::collections::BTreeMap;
use std::time::Duration;

use dtmdriver_core::discover::{Changes, balance_channel, http_endpoint};
use test_support::{EchoClient, EchoServer, EtcdServer, SayRequest};
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::load::{CompleteOnResponse, PendingRequests};

const SERVICE: &str = "echo.rpc";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let etcd = EtcdServer::start();
    let target = format!("etcd://{}/{SERVICE}", etcd.endpoint());
    println!("private etcd at {}; target {target}", etcd.endpoint());
    dtmdriver_core::use_driver("dtm-driver-gozero")?;
    let driver = dtmdriver_core::get_driver();

    let mut a = EchoServer::start("echo-a").await;
    let b = EchoServer::start("echo-b").await;
    let c = EchoServer::start("echo-c").await;
    let ra = driver.register_service(&target, &a.addr()).await?;
    let rb = driver.register_service(&target, &b.addr()).await?;

    // tower: p2c over our Discover, a lazily connecting tonic channel per address
    // (p2c compares loads: each counts its calls in flight). Buffer makes it `Clone`,
    // as generated clients need.
    let discover = dtmdriver_core::discover(&target, |e| {
        let channel = http_endpoint(e)?.connect_lazy();
        Ok::<_, tonic::transport::Error>(PendingRequests::new(
            channel,
            CompleteOnResponse::default(),
        ))
    })?;
    let p2c = EchoClient::new(Buffer::new(Balance::new(discover), 64));

    // tonic: its balance channel, fed by our feeder. The queue has room for 64 changes
    // made while the channel is idle (tonic applies them only when called).
    let (tonic_channel, _feeder) = balance_channel(Changes::from_target(&target)?, 64)?;
    let tonic = EchoClient::new(tonic_channel);

    let mut p2c = Caller::new("p2c over our Discover", p2c);
    let mut tonic = Caller::new("tonic balance_channel", tonic);

    println!("\n>>> two instances: echo-a, echo-b");
    until_served(&mut p2c, &mut tonic, |s| {
        s.contains_key("echo-a") && s.contains_key("echo-b")
    })
    .await;

    println!("\n>>> registering echo-c ({})", c.addr());
    let rc = driver.register_service(&target, &c.addr()).await?;
    until_served(&mut p2c, &mut tonic, |s| s.contains_key("echo-c")).await;

    println!(
        "\n>>> deregistering echo-a ({}); its server keeps running for now",
        a.addr()
    );
    ra.deregister().await?;
    until_avoided(&mut p2c, &mut tonic, "echo-a").await;
    println!("\n>>> stopping echo-a's server");
    a.stop().await;
    p2c.calls_avoiding(20, "echo-a").await;
    tonic.calls_avoiding(20, "echo-a").await;

    rb.deregister().await?;
    rc.deregister().await?;
    let failures = p2c.failures + tonic.failures;
    println!("\n{} calls, {failures} failed", p2c.total + tonic.total);
    if failures > 0 {
        return Err(format!("{failures} calls failed").into());
    }
    Ok(())
}

/// Calls both ways, a few at a time, until `done` holds for what each served since its
/// last report (bounded: 10 s of calls); a way it never holds for counts as failed.
async fn until_served(
    p2c: &mut Caller<impl EchoService>,
    tonic: &mut Caller<impl EchoService>,
    done: impl Fn(&BTreeMap<String, u32>) -> bool,
) {
    for _ in 0..100 {
        p2c.calls(5).await;
        tonic.calls(5).await;
        if done(&p2c.served) && done(&tonic.served) {
            break;
        }
    }
    p2c.check_and_report(&done);
    tonic.check_and_report(&done);
}

/// Calls both ways until neither has reached `name` for 20 calls in a row (bounded).
async fn until_avoided(
    p2c: &mut Caller<impl EchoService>,
    tonic: &mut Caller<impl EchoService>,
    name: &str,
) {
    for _ in 0..100 {
        p2c.served.clear();
        tonic.served.clear();
        p2c.calls(20).await;
        tonic.calls(20).await;
        if !p2c.served_by(name) && !tonic.served_by(name) {
            println!("neither balancer called {name} in the last 20 calls: the removal arrived");
            return;
        }
    }
    p2c.failures += 1;
    println!("{name} still served calls after 10 s: its removal did not arrive");
}

/// The generated client's service, whichever way it balances.
trait EchoService:
    tonic::client::GrpcService<
        tonic::body::Body,
        Error: Into<tonic::codegen::StdError>,
        ResponseBody: tonic::codegen::Body<
            Data = tonic::codegen::Bytes,
            Error: Into<tonic::codegen::StdError> + Send,
        > + Send
                          + 'static,
    >
{
}
impl<T> EchoService for T where
    T: tonic::client::GrpcService<
            tonic::body::Body,
            Error: Into<tonic::codegen::StdError>,
            ResponseBody: tonic::codegen::Body<
                Data = tonic::codegen::Bytes,
                Error: Into<tonic::codegen::StdError> + Send,
            > + Send
                              + 'static,
        >
{
}

/// Makes echo calls one way and counts who served them.
struct Caller<T> {
    name: &'static str,
    client: EchoClient<T>,
    served: BTreeMap<String, u32>,
    total: u32,
    failures: u32,
}

impl<T: EchoService> Caller<T> {
    fn new(name: &'static str, client: EchoClient<T>) -> Self {
        Self {
            name,
            client,
            served: BTreeMap::new(),
            total: 0,
            failures: 0,
        }
    }

    async fn calls(&mut self, n: u32) {
        for _ in 0..n {
            self.total += 1;
            let mut request = tonic::Request::new(SayRequest {
                message: format!("call {}", self.total),
            });
            request.set_timeout(Duration::from_secs(5));
            // tonic's channel waits forever on an empty set: bound every call.
            match tokio::time::timeout(Duration::from_secs(5), self.client.say(request)).await {
                Ok(Ok(reply)) => *self.served.entry(reply.into_inner().server).or_default() += 1,
                Ok(Err(status)) => {
                    self.failures += 1;
                    println!("{}: call {} failed: {status}", self.name, self.total);
                }
                Err(_) => {
                    self.failures += 1;
                    println!("{}: call {} hung for 5 s", self.name, self.total);
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `n` calls, none of which may reach `gone`; prints who served them.
    async fn calls_avoiding(&mut self, n: u32, gone: &str) {
        self.served.clear();
        self.calls(n).await;
        if self.served_by(gone) {
            self.failures += 1;
            println!("{}: a call reached the removed {gone}", self.name);
        }
        self.report();
    }

    /// Prints who served the calls since the last report; counts a failure unless
    /// `done` holds for them.
    fn check_and_report(&mut self, done: impl Fn(&BTreeMap<String, u32>) -> bool) {
        if !done(&self.served) {
            self.failures += 1;
            println!("{}: the change did not arrive within 10 s", self.name);
        }
        self.report();
    }

    fn served_by(&self, name: &str) -> bool {
        self.served.contains_key(name)
    }

    /// Prints and resets the per-instance counts.
    fn report(&mut self) {
        println!(
            "  {}: calls served per instance {:?}, failed so far {}",
            self.name,
            std::mem::take(&mut self.served),
            self.failures
        );
    }
}
