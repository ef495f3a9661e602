//! The consul registry engine and the native `dtm-driver-consul` driver.
//!
//! The engine knows nothing about service layouts; formats (this crate's [`native`]
//! one, go-zero's in `dtmdriver-gozero`) plug into it:
//!
//! * [`target`]: consul targets (`consul://[user:pw@]host:8500/SERVICE?token=&dc=`), the
//!   ACL token (`?token=` or `CONSUL_HTTP_TOKEN`) and HTTPS settings
//!   (`?tls_ca=&tls_cert=&tls_key=&tls_server_name=`, as for etcd);
//! * [`client`]: the pooled HTTP clients (hyper) every request goes through, and
//!   [`error`], what a failed request means; [`tls`]: HTTPS to the agent
//!   (`hyper-rustls`, rustls with ring);
//! * [`registration`]: the JSON of an agent service registration and consul's rules
//!   for it;
//! * [`agent`]: [`ServiceKeeper`] keeps an agent service with a TTL check registered
//!   (heartbeat, re-registration as soon as the agent lost it, deregistration on stop)
//!   behind a [`Registration`](dtmdriver_core::Registration);
//! * [`watch`]: [`HealthWatcher`] follows a service with blocking health queries
//!   (index + wait, reset when the index goes back, backoff, last answer kept while the
//!   agent is away), one per query per process, and [`resolve_health`] turns it into
//!   endpoint snapshots with a format's decoding (of a whole answer, or of each entry:
//!   [`resolve_each`]); [`health`]: one instance of an answer ([`ServiceEntry`]) and the
//!   address to dial it at.
//!
//! The HTTP stack is our own small client on hyper 1 rather than `rs-consul`: the agent
//! API (register, TTL update, deregister) is not in `rs-consul`, and one stack for both
//! halves keeps one connection pool, one timeout policy and one error type; both halves
//! go over HTTPS when the target asks for it.
//!
//! Linking this crate registers the `dtm-driver-consul` driver (see [`native`] for its
//! format); a program that does not otherwise name the crate keeps it linked with
//! `use dtmdriver_consul as _;`.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use dtmdriver_consul as _;
//! dtmdriver_core::use_driver("dtm-driver-consul")?;
//! let registration = dtmdriver_core::get_driver()
//!     .register_service("consul://127.0.0.1:8500/trans?weight=3&group=blue", "127.0.0.1:8080")
//!     .await?;
//! let channel = dtmdriver_core::connect("consul://127.0.0.1:8500/trans?group=blue")?;
//! # drop(channel); registration.deregister().await?; Ok(()) }
//! ```

pub mod agent;
pub mod client;
pub mod error;
pub mod health;
pub mod native;
pub mod registration;
pub mod target;
pub mod tls;
pub mod watch;

pub use agent::ServiceKeeper;
pub use client::{ConsulClient, MAX_ANSWER};
pub use error::ConsulError;
pub use native::{ConsulDriver, GrpcCheckOptions, NativeConsulFormat, NativeOptions};
pub use registration::{
    AgentGrpcCheck, AgentServiceCheck, AgentServiceRegistration, AgentTcpCheck, ServiceAddress,
    ServiceExtras, Weights, check_meta, consul_duration,
};
pub use target::{
    CACERT_ENV, CLIENT_CERT_ENV, CLIENT_KEY_ENV, ConsulConfig, ConsulTarget, HTTP_SSL_ENV,
    TLS_SERVER_NAME_ENV, TOKEN_ENV,
};
pub use watch::{
    Decode, HealthQuery, HealthState, HealthWatcher, ServiceEntry, resolve_each, resolve_health,
};
