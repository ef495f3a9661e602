//! The etcd registry engine and the native `dtm-driver-etcd` driver.
//!
//! The engine knows nothing about key layouts; formats (this crate's [`native`] one,
//! go-zero's in `dtmdriver-gozero`) plug into it:
//!
//! * [`client`]: etcd targets in both shapes (`etcd://h1,h2/key`,
//!   `etcd:///h1,h2?key=key`) and one shared [`EtcdClient`] per cluster and
//!   credentials ([`shared_client`]). The client talks to the members through this
//!   workspace's own balancing [`Channel`](dtmdriver_core::Channel), so a dead member is
//!   skipped without a failed request; registration writes lost with a killed leader
//!   are tried again after the election;
//! * [`api`]: the etcd calls the engine makes (auth token refresh, keep-alive and watch
//!   streams) over etcd's gRPC API, whose stubs are generated once and committed
//!   (`proto`), so building this crate needs no `protoc`. Streams require a leader, so
//!   a member cut off from its peers ends them and they resume on another member;
//! * [`lease`]: [`LeaseKeeper`] keeps a key alive under a lease (TTL/3 renewals, re-put
//!   when deleted, re-grant after an outage, revoke on stop) behind a
//!   [`Registration`](dtmdriver_core::Registration);
//! * [`watch`]: [`PrefixWatcher`] follows a prefix (list + watch, resume after errors,
//!   re-list after compaction), one per prefix per process, and [`resolve_prefix`]
//!   turns it into endpoint snapshots with a format's decode function;
//! * [`watch_hub`]: every prefix watched on a cluster rides that cluster's one etcd
//!   Watch stream (watch ids multiplexed, as Go's clientv3 does).
//!
//! Linking this crate registers the `dtm-driver-etcd` driver (see [`native`] for its
//! format); a program that does not otherwise name the crate keeps it linked with
//! `use dtmdriver_etcd as _;`.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use dtmdriver_etcd as _;
//! dtmdriver_core::use_driver("dtm-driver-etcd")?;
//! let driver = dtmdriver_core::get_driver();
//! let registration = driver
//!     .register_service("etcd://127.0.0.1:2379/trans?weight=3&group=blue", "127.0.0.1:8080")
//!     .await?;
//! let channel = dtmdriver_core::connect("etcd://127.0.0.1:2379/trans?group=blue")?;
//! # drop(channel); registration.deregister().await?; Ok(()) }
//! ```

pub mod api;
pub mod client;
mod codec;
pub mod lease;
pub mod native;
pub mod proto;
pub mod registry_target;
mod request;
pub mod watch;
pub mod watch_hub;

pub use api::EtcdClient;
pub use client::{EtcdConfig, EtcdTarget, shared_client};
pub use lease::{KeyFn, LeaseKeeper};
pub use native::{EtcdDriver, Instance, NativeEtcdFormat};
pub use watch::{
    Decode, EMPTY_GRACE, Entries, EntryChange, PrefixState, PrefixWatcher, resolve_prefix,
};
