//! Private consul agents: one [`ConsulAgent`] (`-dev`), or a [`ConsulCluster`] of
//! servers and a client agent.
//!
//! The agents are the real HashiCorp Consul (v1.22.7), built from its Go module into
//! `interop/bin/consul-agent` by `bash interop/build.sh`, on free loopback ports.
//!
//! - `agent`: [`ConsulAgent`], its command line, start, restart and API;
//! - `cluster`: [`ConsulCluster`];
//! - `http`: the bounded HTTP exchanges both use.

mod agent;
mod cluster;
mod http;

pub use agent::{CONSUL_BUILD_HINT, ConsulAgent, consul_agent_binary};
pub use cluster::ConsulCluster;
