//! [`EtcdCluster`]: a private multi-member etcd cluster on free loopback ports.
//!
//! Each member is a [`Member`] with its own ports, data directory and log; all share one
//! cluster token unique to this process, so two clusters never join each other.

use std::time::{Duration, Instant};

use super::member::{Member, loopback_url, metric, metric_sum, unique_token};
use super::peer_links::PeerLinks;
use crate::binary::etcd_binary;
use crate::ports::free_ports;
use crate::process::{self, StartFailure};

/// How long a whole cluster may take to become healthy.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A private multi-member etcd cluster on free loopback ports.
///
/// Members are named `m0`, `m1`, …; each has its own temporary data directory and log
/// file. Dropping the handle SIGKILLs and reaps every member and removes the
/// directories. All methods are blocking (bounded by a few seconds).
///
/// ```
/// let mut cluster = test_support::EtcdCluster::start(3);
/// assert_eq!(cluster.endpoints().len(), 3);
/// cluster.kill_member(0);
/// assert!(!cluster.is_member_running(0));
/// ```
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    /// The raft links' proxies, for a cluster started partitionable.
    links: Option<PeerLinks>,
}

impl EtcdCluster {
    /// Starts a cluster of `members` etcd processes and waits until every member reports
    /// healthy (at most about 20 s).
    ///
    /// # Panics
    ///
    /// Panics if `members` is 0, if `etcd` is not installed (with the command that
    /// installs it), or if a member does not become healthy; the message includes the
    /// end of that member's log.
    pub fn start(members: usize) -> EtcdCluster {
        Self::start_linked(members, false)
    }

    /// [`start`](Self::start), with the members' raft links through proxies so that a
    /// member can be cut off from its peers while clients still reach it
    /// ([`isolate_member`](Self::isolate_member)).
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub fn start_partitionable(members: usize) -> EtcdCluster {
        Self::start_linked(members, true)
    }

    fn start_linked(members: usize, proxied: bool) -> EtcdCluster {
        assert!(members > 0, "an etcd cluster needs at least one member");
        let binary = etcd_binary();
        process::start_with_retries("etcd", || {
            let ports = free_ports(3 * members);
            let (client, peer) = (&ports[..members], &ports[members..2 * members]);
            let links = if proxied {
                let proxies = &ports[2 * members..];
                Some(PeerLinks::start(proxies, peer).map_err(|e| StartFailure {
                    port_conflict: true,
                    message: format!("cannot start the etcd peer proxies: {e}"),
                })?)
            } else {
                None
            };
            let advertised = |i: usize| links.as_ref().map_or(peer[i], |l| l.port(i));
            let token = unique_token();
            let names: Vec<String> = (0..members).map(|i| format!("m{i}")).collect();
            let initial_cluster = names
                .iter()
                .enumerate()
                .map(|(i, name)| format!("{name}={}", loopback_url(advertised(i))))
                .collect::<Vec<_>>()
                .join(",");
            let mut cluster = EtcdCluster {
                members: names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| {
                        let mut member = Member::new(
                            &binary,
                            name,
                            client[i],
                            peer[i],
                            &initial_cluster,
                            &token,
                        );
                        member.advertised_peer_port = links.as_ref().map(|l| l.port(i));
                        member
                    })
                    .collect(),
                links,
            };
            for member in &mut cluster.members {
                member.spawn();
            }
            let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
            for member in &mut cluster.members {
                member.wait_ready(deadline)?;
            }
            Ok(cluster)
        })
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always `false`: a cluster has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The client endpoints of all members as `127.0.0.1:PORT`, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// The client URLs of all members as `http://127.0.0.1:PORT`, in member order.
    pub fn urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|member| loopback_url(member.client_port))
            .collect()
    }

    /// The client endpoint of member `i` as `127.0.0.1:PORT`.
    ///
    /// # Panics
    ///
    /// Panics if `i` is out of range.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].endpoint()
    }

    /// Whether member `i`'s process is alive.
    ///
    /// # Panics
    ///
    /// Panics if `i` is out of range.
    pub fn is_member_running(&mut self, i: usize) -> bool {
        self.members[i].is_running()
    }

    /// Everything member `i` has logged so far.
    ///
    /// # Panics
    ///
    /// Panics if `i` is out of range.
    pub fn member_log_contents(&self, i: usize) -> String {
        self.members[i].log_contents()
    }

    /// SIGKILLs and reaps member `i`, keeping its data directory and ports. Does nothing
    /// if it is not running.
    ///
    /// # Panics
    ///
    /// Panics if `i` is out of range.
    pub fn kill_member(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Starts member `i` again on the same ports and data directory and waits until it
    /// is healthy (it needs a quorum of running members for that). A running process is
    /// killed first.
    ///
    /// # Panics
    ///
    /// Panics if `i` is out of range or the member does not become healthy in time.
    pub fn restart_member(&mut self, i: usize) {
        self.members[i].respawn(CLUSTER_READY_TIMEOUT);
    }

    /// The value of the Prometheus metric `name` (unlabelled) on member `i`, as
    /// [`EtcdServer::metric`](super::EtcdServer::metric).
    ///
    /// # Panics
    ///
    /// Panics if `i` is out of range.
    pub fn member_metric(&self, i: usize, name: &str) -> Option<f64> {
        metric(self.members[i].client_port, name)
    }

    /// The sum of the Prometheus metric `name` on member `i` over its series whose labels
    /// include all of `labels`, e.g. the keep-alive streams it has seen end:
    /// `member_metric_sum(i, "grpc_server_handled_total", &[("grpc_method", "LeaseKeepAlive")])`.
    ///
    /// # Panics
    ///
    /// Panics if `i` is out of range.
    pub fn member_metric_sum(&self, i: usize, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_sum(self.members[i].client_port, name, labels)
    }

    /// How many gRPC streams of `method` (e.g. `Watch`, `LeaseKeepAlive`) are open on
    /// member `i`: those started less those ended, from its metrics.
    ///
    /// # Panics
    ///
    /// Panics if `i` is out of range.
    pub fn member_open_streams(&self, i: usize, method: &str) -> f64 {
        let count = |name| {
            self.member_metric_sum(i, name, &[("grpc_method", method)])
                .unwrap_or(0.0)
        };
        count("grpc_server_started_total") - count("grpc_server_handled_total")
    }

    /// Cuts member `i` off from its peers (a network partition): its raft links close
    /// and stay closed until [`rejoin_member`](Self::rejoin_member), while clients still
    /// reach it. The member loses its leader within an election timeout (1 s) and learns
    /// no more writes; the others go on.
    ///
    /// # Panics
    ///
    /// Panics if the cluster was not started with
    /// [`start_partitionable`](Self::start_partitionable), if `i` is out of range, or if
    /// a member is not running.
    pub fn isolate_member(&self, i: usize) {
        let links = self
            .links
            .as_ref()
            .expect("isolate_member needs EtcdCluster::start_partitionable");
        assert!(i < self.members.len(), "no member {i}");
        let pids = self
            .members
            .iter()
            .enumerate()
            .map(|(n, member)| {
                let pid = member
                    .pid()
                    .unwrap_or_else(|| panic!("etcd member {n} is not running"));
                (pid, n)
            })
            .collect();
        links.isolate(i, pids);
    }

    /// Lets member `i` reach its peers again after
    /// [`isolate_member`](Self::isolate_member).
    ///
    /// # Panics
    ///
    /// As [`isolate_member`](Self::isolate_member).
    pub fn rejoin_member(&self, i: usize) {
        self.links
            .as_ref()
            .expect("rejoin_member needs EtcdCluster::start_partitionable")
            .rejoin(i);
    }
}
