//! Channel tests' helpers: echo calls through a [`dtmdriver_core::Channel`], what a channel
//! holds, and a resolver the test feeds by hand.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dtmdriver_core::resolve::{Resolver, SnapshotSender};
use dtmdriver_core::{Channel, ChannelBuilder, ChannelStatus, Endpoint, Target};

use crate::{EchoClient, SayRequest};

/// How long [`say`] lets a call run before failing it as hung.
pub const CALL_BOUND: Duration = Duration::from_secs(20);

/// One echo call through `channel`: the name of the server that answered.
///
/// # Panics
///
/// Panics if the call hangs for [`CALL_BOUND`]: no channel call may hang, and a hang
/// must fail the test (never pass as an expected error) instead of stalling the suite.
pub async fn say(channel: &Channel) -> Result<String, tonic::Status> {
    let mut client = EchoClient::new(channel.clone());
    let call = client.say(SayRequest {
        message: "hi".into(),
    });
    match tokio::time::timeout(CALL_BOUND, call).await {
        Ok(reply) => reply.map(|r| r.into_inner().server),
        Err(_) => panic!(
            "a call through `{}` hung for {CALL_BOUND:?}",
            channel.target()
        ),
    }
}

/// The endpoint addresses `channel` holds now.
pub fn addrs(channel: &Channel) -> BTreeSet<String> {
    channel
        .status()
        .endpoints
        .into_iter()
        .map(|e| e.endpoint.addr)
        .collect()
}

/// A resolver the test feeds by hand: it keeps the channel's [`SnapshotSender`] and
/// counts how often it was asked to resolve.
#[derive(Default)]
pub struct ManualResolver {
    sender: Mutex<Option<SnapshotSender>>,
    resolves: AtomicUsize,
}

impl Resolver for ManualResolver {
    fn resolve(&self, _target: &Target, updates: SnapshotSender) -> dtmdriver_core::Result<()> {
        self.resolves.fetch_add(1, Ordering::SeqCst);
        *self.sender.lock().unwrap_or_else(|e| e.into_inner()) = Some(updates);
        Ok(())
    }
}

impl ManualResolver {
    /// The sender the channel handed over.
    ///
    /// # Panics
    ///
    /// Panics if no channel has called [`Resolver::resolve`] yet.
    pub fn sender(&self) -> SnapshotSender {
        self.sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .expect("the channel has not called resolve yet")
    }

    /// Publishes these addresses (weight 1) as the whole set.
    pub fn push(&self, addrs: &[&str]) {
        self.sender()
            .update(addrs.iter().map(|a| Endpoint::new(*a)).collect());
    }

    /// Publishes these weighted addresses as the whole set.
    pub fn push_weighted(&self, endpoints: &[(&str, u32)]) {
        self.sender().update(
            endpoints
                .iter()
                .map(|(a, w)| Endpoint::new(*a).with_weight(*w))
                .collect(),
        );
    }

    /// Reports a resolver error.
    pub fn fail(&self, error: &str) {
        self.sender().error(error);
    }

    /// How often a channel asked to resolve.
    pub fn resolves(&self) -> usize {
        self.resolves.load(Ordering::SeqCst)
    }
}

/// A channel on a [`ManualResolver`], with a target unique to this call (channels are
/// shared per target), a 2 s connect timeout and at most 500 ms of redial backoff;
/// `tune` adjusts the builder further.
///
/// # Panics
///
/// Panics if the channel cannot be built.
pub fn manual_channel(
    test: &str,
    tune: impl FnOnce(ChannelBuilder) -> ChannelBuilder,
) -> (Channel, Arc<ManualResolver>) {
    let resolver = Arc::new(ManualResolver::default());
    let builder = Channel::builder(&format!("test:///{test}-{}", crate::free_port()))
        .resolver(resolver.clone())
        .connect_timeout(Duration::from_secs(2))
        .backoff_max(Duration::from_millis(500));
    let channel = tune(builder).connect().expect("connect");
    (channel, resolver)
}

/// A [`manual_channel`] over `n` loopback ports nobody listens on, dialled
/// ([`Channel::warm_up`]) and returned once every endpoint is ejected; with the
/// addresses.
///
/// # Panics
///
/// Panics if they are not all ejected within 10 s.
pub async fn refused_channel(test: &str, n: usize) -> (Channel, Vec<String>) {
    let dead: Vec<String> = crate::free_ports(n)
        .into_iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let (channel, resolver) = manual_channel(test, |b| b);
    resolver.push(&dead.iter().map(String::as_str).collect::<Vec<_>>());
    channel.warm_up();
    wait_status(&channel, "every endpoint ejected", |s| {
        s.endpoints.len() == n && s.endpoints.iter().all(|e| e.state == "ejected")
    })
    .await;
    (channel, dead)
}

/// Waits until `check` holds for the channel's status, at most 10 s.
///
/// # Panics
///
/// Panics after 10 s, with `what` and the last status.
pub async fn wait_status(channel: &Channel, what: &str, check: impl Fn(&ChannelStatus) -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let status = channel.status();
        if check(&status) {
            return;
        }
        assert!(
            Instant::now() < until,
            "timed out waiting for {what}; status: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The state (`ready`, `ejected`, ...) of `addr` in a channel status, if it is there.
pub fn state_of<'a>(status: &'a ChannelStatus, addr: &str) -> Option<&'a str> {
    status
        .endpoints
        .iter()
        .find(|e| e.endpoint.addr == addr)
        .map(|e| e.state)
}
