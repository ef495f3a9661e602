//! Test support: private registry processes per test.
//!
//! Every test that needs a registry starts its own real server process on free loopback
//! ports with a temporary data directory, and the process is killed (and reaped) when the
//! handle is dropped. Nothing here is a mock: [`EtcdServer`] and [`EtcdCluster`] run the
//! `etcd` binary from the Debian `etcd-server` package; [`ConsulAgent`] and
//! [`ConsulCluster`] the real consul; [`KubeApiServer`] runs the real
//! kube-apiserver and a newer etcd, built from their Go modules by `bash interop/build.sh`
//! (tests that leave it alone share one per test binary: [`KubeApiServer::shared`]).
//!
//! If a binary is missing, the helpers panic with the one command that installs it; they
//! never skip. `bash scripts/test.sh` installs everything the tests need.
//!
//! ```
//! let server = test_support::EtcdServer::start();
//! assert_eq!(server.endpoint(), format!("127.0.0.1:{}", server.port()));
//! assert_eq!(server.url(), format!("http://127.0.0.1:{}", server.port()));
//! // The process is killed and its data directory removed when `server` is dropped.
//! ```

pub mod bench;
mod binary;
mod calls;
mod consul;
mod descriptors;
pub mod discover;
mod dtm;
pub mod echo;
mod etcd;
pub mod grpc_testing;
mod interop;
mod kube;
mod logs;
pub mod options;
mod ports;
mod process;
pub mod streams;
mod tls;
mod wait;

pub use binary::{ETCD_INSTALL_HINT, etcd_binary, find_binary};
pub use calls::{
    CALL_BOUND, ManualResolver, addrs, manual_channel, refused_channel, say, state_of, wait_status,
};
pub use consul::{CONSUL_BUILD_HINT, ConsulAgent, ConsulCluster, consul_agent_binary};
pub use descriptors::fill_descriptors;
pub use dtm::{DTM_BUILD_HINT, DtmEndpoint, DtmServer, dtm_binary};
pub use echo::{Behavior, EchoClient, EchoServer, SayReply, SayRequest};
pub use etcd::{EtcdCluster, EtcdServer};
pub use grpc_testing::{GrpcInteropServer, InteropServerKind};
pub use interop::{
    InteropProcess, interop_binary, read_lines, run_interop, signal, signal_and_wait,
};
pub use kube::{KUBE_BUILD_HINT, KubeApiServer, KubeUser, kube_apiserver_binary};
pub use logs::CapturedLogs;
pub use ports::{free_port, free_ports, synthetic_addr};
pub use streams::{Note, ProduceRequest, StreamsClient, Summary};
pub use tls::TestPki;
pub use wait::wait_for;
