//! The dtm driver framework for tonic.
//!
//! A Rust service links a driver crate, chooses it with [`use_driver`], and from then
//! on its tonic clients dial registry targets (`etcd://…`, `consul://…`,
//! `discovery:///…`) through a balancing [`Channel`], its servers register where
//! go-zero, kratos and the dtm coordinator find them, and [`invoke()`] calls dtm branch
//! URIs (`server/package.Service/Method`) with raw bytes.
//!
//! The pieces, each its own module:
//!
//! * [`driver`]: the [`Driver`] contract;
//! * [`registration`]: the [`Registration`] handle a registrar returns;
//! * [`health`]: whether a registration holds ([`RegistrationState`]);
//! * [`registry`]: the process-wide driver registry and link-time registration;
//! * [`parse`]: splitting branch URIs, the rules the Go drivers use;
//! * [`target`]: parsing dial and registration targets;
//! * [`registry_choice`]: which registry a name-only target (`discovery:///NAME`)
//!   lives in;
//! * [`address`]: the `host:port` check every endpoint goes through;
//! * [`duration`]: durations written in targets and flags, deadlines that never overflow;
//! * [`resolve`]: resolvers, registrars and the scheme tables (`direct://` built in);
//!   it depends on no driver, so the resolver contract stands alone;
//! * [`registration_options`]: `weight`, `group`, `ttl`, `meta.K` of a registration
//!   target, read alike by every engine;
//! * [`tls_files`]: TLS to a registry from a target's `tls_*` parameters, with the one
//!   PEM loader;
//! * [`shared`]: what a process shares by key until its last user (watches, channels)
//!   and the loop that forwards a watch into a resolver;
//! * [`backoff`]: the one retry-delay schedule (factor, cap, jitter) of the registry engines and the channel's connections;
//! * [`balance`]: the channel that turns resolver snapshots into balanced calls;
//! * [`mod@discover`]: the resolvers as tower `Discover` changes, for tower's balancers
//!   and tonic's `balance_channel`;
//! * [`mod@invoke`]: dynamic unary calls with raw bytes;
//! * [`config`]: dtm's `MicroService` configuration.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! // use dtmdriver_gozero as _;          // link the driver
//! dtmdriver_core::use_driver("default")?;       // e.g. "dtm-driver-gozero"
//! let channel = dtmdriver_core::connect("direct:///127.0.0.1:50051,127.0.0.1:50052")?;
//! // let mut client = GreeterClient::new(channel);
//! # Ok(()) }
//! ```
//!
//! # Our channel, or tower's and tonic's balancers
//!
//! The resolvers also plug into the tower ecosystem: [`discover()`] gives a
//! `tower::discover::Discover` for tower's balancers, and
//! [`discover::balance_channel`] feeds tonic's own `Channel::balance_channel`. The same
//! target three ways:
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use dtmdriver_core::discover::{Changes, balance_channel, http_endpoint};
//! use tower::load::{CompleteOnResponse, PendingRequests};
//! dtmdriver_core::use_driver("default")?; // e.g. "dtm-driver-gozero", its crate linked
//! let target = "direct:///127.0.0.1:50051,127.0.0.1:50052";
//!
//! // Ours (recommended): one shared channel per target.
//! let ours = dtmdriver_core::connect(target)?;
//!
//! // tower: p2c over our Discover, a lazily connecting tonic channel per address.
//! let discover = dtmdriver_core::discover(target, |e| {
//!     let channel = http_endpoint(e)?.connect_lazy();
//!     Ok::<_, tonic::transport::Error>(PendingRequests::new(channel, CompleteOnResponse::default()))
//! })?;
//! let p2c = tower::buffer::Buffer::new(tower::balance::p2c::Balance::new(discover), 1024);
//!
//! // tonic: its own balance channel, fed from the resolver.
//! let (tonic_channel, _feeder) = balance_channel(Changes::from_target(target)?, 1024)?;
//! // GreeterClient::new(ours), GreeterClient::new(p2c), GreeterClient::new(tonic_channel)
//! # let _ = (ours, p2c, tonic_channel); Ok(()) }
//! ```
//!
//! Prefer ours unless you build on tower middleware or need tonic's channel type:
//!
//! | | our [`Channel`] | tower p2c over [`discover()`] | tonic `balance_channel` |
//! |---|---|---|---|
//! | empty set | `UNAVAILABLE` naming the target at once (or wait for ready) | waits forever, unless a timeout around the call ends it | waits forever, request timeouts do not end it |
//! | dead endpoint | the request goes to a live one | the call fails (a lazy tonic channel reports ready), until the registry drops the instance | the call fails, until the registry drops the instance |
//! | frozen endpoint | out of rotation within about a second | its calls hang; p2c sends it fewer as they pile up | its calls hang; it keeps its share |
//! | updates while idle | applied at once | read when the next call polls (nothing queued) | queued until the next call; give the queue room ([`mod@discover`]) |
//! | policies | round robin, weighted, p2c over peak-EWMA | p2c over the load you choose | uniform random |
//! | resolver error | last set kept | last set kept | last set kept |

pub mod address;
pub mod backoff;
pub mod balance;
pub mod config;
pub mod default_driver;
pub mod discover;
pub mod driver;
pub mod duration;
pub mod error;
pub mod feature_off;
pub mod health;
pub mod invoke;
pub mod open_files;
pub mod parse;
mod redact;
pub mod registration;
pub mod registration_options;
pub mod registry;
pub mod registry_choice;
pub mod resolve;
pub mod shared;
pub mod sorted_map;
pub mod target;
pub mod tls_files;
pub mod warn_once;

pub use balance::{
    Channel, ChannelBuilder, ChannelStatus, EndpointStatus, Policy, TlsConnector, connect,
};
pub use config::MicroService;
pub use default_driver::DefaultDriver;
pub use discover::{Changes, Discovered, discover};
pub use driver::Driver;
pub use error::{Error, Result};
pub use health::RegistrationState;
pub use invoke::{RawCodec, call_raw, invoke, invoke_with};
pub use open_files::raise_open_file_limit;
pub use parse::ServerMethod;
pub use registration::Registration;
pub use registry::{
    current_driver_name, driver_names, find_driver, get_driver, register, register_shared,
    use_driver,
};
pub use resolve::Endpoint;
pub use target::Target;
pub use tls_files::TlsFiles;

/// Re-exports for macros; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::balance::bench_hooks::{
        carry_costs, liveness_checks, ready_list_costs, weighted_change_costs, weighted_outage_pick,
    };
    pub use inventory;
    pub use tracing;
}
