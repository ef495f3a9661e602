//! Private etcd processes: a single server ([`EtcdServer`]) and a small cluster
//! ([`EtcdCluster`]).
//!
//! Both run the real `etcd` binary on free loopback ports with temporary data
//! directories, wait until etcd reports healthy before returning, and SIGKILL and reap
//! their processes (and remove the directories) on drop.
//!
//! - `member`: one etcd process (start, stop, restart) and its readiness probes;
//! - `server`: [`EtcdServer`];
//! - `cluster`: [`EtcdCluster`];
//! - `peer_links`: the proxies a partitionable cluster's raft links go through.

mod cluster;
mod member;
mod peer_links;
mod server;

pub use cluster::EtcdCluster;
pub use server::EtcdServer;
