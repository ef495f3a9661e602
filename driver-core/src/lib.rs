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
//! * [`driver`]: the [`Driver`] contract and the [`Registration`] handle;
//! * [`health`]: whether a registration holds ([`RegistrationState`]);
//! * [`registry`]: the process-wide driver registry and link-time registration;
//! * [`parse`]: splitting branch URIs, the rules the Go drivers use;
//! * [`target`]: parsing dial and registration targets;
//! * [`address`]: the `host:port` check every endpoint goes through;
//! * [`duration`]: durations written in targets and flags, deadlines that never overflow;
//! * [`resolve`]: resolvers, registrars and the scheme tables (`direct://` built in);
//! * [`backoff`]: the doubling retry delays the registry engines share;
//! * [`balance`]: the channel that turns resolver snapshots into balanced calls;
//! * [`mod@invoke`]: dynamic unary calls with raw bytes;
//! * [`config`]: dtm's `MicroService` configuration.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! // use driver_gozero_compat as _;          // link the driver
//! driver_core::use_driver("default")?;       // e.g. "dtm-driver-gozero"
//! let channel = driver_core::connect("direct:///127.0.0.1:50051,127.0.0.1:50052")?;
//! // let mut client = GreeterClient::new(channel);
//! # Ok(()) }
//! ```

pub mod address;
pub mod backoff;
pub mod balance;
pub mod config;
pub mod default_driver;
pub mod discover;
pub mod driver;
pub mod duration;
pub mod error;
pub mod health;
pub mod invoke;
pub mod parse;
mod redact;
pub mod registry;
pub mod resolve;
pub mod target;

pub use balance::{
    Channel, ChannelBuilder, ChannelStatus, EndpointStatus, Policy, TlsConnector, connect,
};
pub use config::MicroService;
pub use default_driver::DefaultDriver;
pub use discover::{Changes, Discovered, discover};
pub use driver::{Driver, Registration};
pub use error::{Error, Result};
pub use health::RegistrationState;
pub use invoke::{RawCodec, call_raw, invoke, invoke_with};
pub use parse::ServerMethod;
pub use registry::{
    current_driver_name, driver_names, find_driver, get_driver, register, register_shared,
    use_driver,
};
pub use resolve::Endpoint;
pub use target::Target;

/// Re-exports for macros; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use inventory;
}
