//! [`ChannelBuilder`]: a channel's settings, and the process-wide cache that makes
//! equal builders share one live channel (one registry watch per target).
//!
//! Contract: [`ChannelBuilder::connect`] with the same target, resolver (value, or
//! driver name and resolver identity) and settings returns the same channel while any
//! clone of it lives; a different setting gives a channel of its own.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use super::channel::{Channel, ChannelInner};
use super::policy::Policy;
use super::transport::connection::DialSettings;
use super::transport::tls::TlsConnector;
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::resolve::{self, Resolver, SnapshotSender};
use crate::shared::SharedByKey;
use crate::target::Target;

/// Builds a [`Channel`]. Every setting has a documented default.
///
/// ```no_run
/// # async fn f() -> Result<(), dtmdriver_core::Error> {
/// use std::time::Duration;
/// use dtmdriver_core::{Channel, Policy};
/// let channel = Channel::builder("direct:///127.0.0.1:50051,127.0.0.1:50052")
///     .policy(Policy::PeakEwma)
///     .resolve_timeout(Duration::from_secs(2))
///     .connect()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ChannelBuilder {
    pub(super) target: String,
    resolver: Option<Arc<dyn Resolver>>,
    /// Set by [`driver`](Self::driver): the driver's name and resolver identity.
    driver_name: Option<(String, String)>,
    pub(super) policy: Policy,
    pub(super) resolve_timeout: Duration,
    pub(super) wait_for_ready: bool,
    pub(super) dial: DialSettings,
}

impl fmt::Debug for ChannelBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBuilder")
            .field("target", &self.target)
            .field("policy", &self.policy)
            .field("resolve_timeout", &self.resolve_timeout)
            .field("wait_for_ready", &self.wait_for_ready)
            .finish_non_exhaustive()
    }
}

impl ChannelBuilder {
    pub(super) fn new(target: &str) -> Self {
        Self {
            target: target.to_string(),
            resolver: None,
            driver_name: None,
            policy: Policy::default(),
            resolve_timeout: Duration::from_secs(3),
            wait_for_ready: false,
            dial: DialSettings {
                connect_timeout: Duration::from_secs(3),
                backoff_base: Duration::from_millis(100),
                backoff_max: Duration::from_secs(3),
                keepalive: None,
                keepalive_while_idle: false,
                tls: None,
            },
        }
    }

    /// The balancing policy. Default: [`Policy::RoundRobin`].
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// How long a call waits for the first resolution. Default: 3 s. Anything beyond
    /// [`FAR_FUTURE`](crate::duration::FAR_FUTURE) (`Duration::MAX` included) means the
    /// same: no limit in practice.
    pub fn resolve_timeout(mut self, timeout: Duration) -> Self {
        self.resolve_timeout = crate::duration::cap(timeout);
        self
    }

    /// Wait, up to the call's deadline, for an endpoint instead of failing at once
    /// when the set is empty or every endpoint is down (gRPC's wait-for-ready).
    /// Without a deadline the wait is bounded by the resolve timeout. Default: off.
    pub fn wait_for_ready(mut self, on: bool) -> Self {
        self.wait_for_ready = on;
        self
    }

    /// How long one dial (TCP + TLS + HTTP/2 handshake) may take. Default: 3 s. Capped
    /// like [`resolve_timeout`](Self::resolve_timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.dial.connect_timeout = crate::duration::cap(timeout);
        self
    }

    /// The longest wait between redials of a failing endpoint (the backoff starts at
    /// 100 ms and grows 1.6× per failure, ±20% jitter). Default: 3 s.
    pub fn backoff_max(mut self, max: Duration) -> Self {
        self.dial.backoff_max = crate::duration::cap(max);
        self
    }

    /// Sends an HTTP/2 ping every `interval` while calls are in flight and closes the
    /// connection if one goes unanswered for `min(interval, 20 s)`: finds a peer that
    /// vanished without closing its connections (gRPC's client keepalive `Time`).
    /// Default: off, as in grpc-go and tonic; a registry's lease or health check
    /// removes a dead instance anyway.
    ///
    /// grpc-go servers (go-zero, kratos, dtm) accept a ping at most every 5 minutes by
    /// default and close a connection that pings more often with GOAWAY
    /// `ENHANCE_YOUR_CALM` "too_many_pings"; use a shorter interval only with servers
    /// configured to allow it (`keepalive.EnforcementPolicy.MinTime`).
    pub fn keepalive(mut self, interval: Duration) -> Self {
        self.dial.keepalive = Some(crate::duration::cap(interval));
        self
    }

    /// Also ping connections with no call in flight (grpc-go's
    /// `PermitWithoutStream`), so an idle connection to a vanished peer is found
    /// before the next call. Only with [`keepalive`](Self::keepalive); a grpc-go
    /// server closes such connections unless its `EnforcementPolicy` sets
    /// `PermitWithoutStream`. Default: off.
    pub fn keepalive_while_idle(mut self, on: bool) -> Self {
        self.dial.keepalive_while_idle = on;
        self
    }

    /// Dial endpoints with TLS. Default: plaintext (`http`).
    pub fn tls(mut self, tls: TlsConnector) -> Self {
        self.dial.tls = Some(tls);
        self
    }

    /// Resolve with this resolver instead of the one installed for the scheme. Channels
    /// are shared only between builders given the same resolver value.
    pub fn resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolver = Some(resolver);
        self.driver_name = None;
        self
    }

    /// Resolve with `driver`'s resolver for the target's scheme, without installing
    /// anything globally: lets one process use several drivers side by side. Channels
    /// built this way are shared by driver name and
    /// [`resolver_identity`](Driver::resolver_identity), target and settings.
    pub fn driver(self, driver: &dyn Driver) -> Result<Self> {
        let target = Target::parse(&self.target)?;
        match crate::driver::own_resolver(driver, &target)? {
            Some(r) => {
                let mut builder = self.resolver(r);
                builder.driver_name = Some((driver.name().to_string(), driver.resolver_identity()));
                Ok(builder)
            }
            // A built-in scheme: the installed resolver, at connect.
            None => Ok(self),
        }
    }

    /// Builds the channel, or returns the live channel already built with the same
    /// target and settings. Must run inside a tokio runtime.
    pub fn connect(self) -> Result<Channel> {
        crate::driver::require_runtime(&self.target, "connect to")?;
        let target = Target::parse(&self.target)?;
        let resolver = match &self.resolver {
            Some(r) => r.clone(),
            None => resolve::resolver_for(&target)?,
        };
        let key = ChannelKey {
            target: self.target.clone(),
            resolver: match &self.driver_name {
                Some((name, identity)) => ResolverKey::Driver(name.clone(), identity.clone()),
                None => ResolverKey::Value(Arc::as_ptr(&resolver) as *const () as usize),
            },
            policy: self.policy,
            resolve_timeout: self.resolve_timeout,
            wait_for_ready: self.wait_for_ready,
            dial: self.dial.clone(),
        };
        let inner = CHANNELS.get_or_try_insert_with(&key, || {
            let (tx, rx) = SnapshotSender::channel();
            resolver.resolve(&target, tx)?;
            Ok::<_, Error>(ChannelInner::start(self, rx, resolver))
        })?;
        Ok(Channel { inner })
    }
}

/// Which resolver a shared channel was built with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ResolverKey {
    /// A resolver value (installed for the scheme, or given explicitly); the channel
    /// keeps it alive, so its address cannot be reused while the entry matters.
    Value(usize),
    /// The resolver of the driver with this name and resolver identity.
    Driver(String, String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ChannelKey {
    target: String,
    resolver: ResolverKey,
    policy: Policy,
    resolve_timeout: Duration,
    wait_for_ready: bool,
    dial: DialSettings,
}

/// One channel per target and settings, while anyone holds it.
static CHANNELS: LazyLock<SharedByKey<ChannelKey, ChannelInner>> =
    LazyLock::new(SharedByKey::default);

/// Dials `target` with default settings through the resolver installed for its
/// scheme; the same target gives the same shared channel.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// dtmdriver_core::use_driver("default")?;
/// let channel = dtmdriver_core::connect("direct:///127.0.0.1:50051")?;
/// // let mut client = GreeterClient::new(channel);
/// # Ok(()) }
/// ```
pub fn connect(target: &str) -> Result<Channel> {
    Channel::builder(target).connect()
}
