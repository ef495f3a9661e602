//! [`EtcdCluster`]: a private multi-member etcd cluster on free loopback ports.
//!
//! Each member is a [`Member`] with its own ports, data directory and log; all share one
//! cluster token unique to this process, so two clusters never join each other.

use std::time::{Duration, Instant};

use super::member::{Member, loopback_url, unique_token};
use crate::binary::etcd_binary;
use crate::ports::free_ports;
use crate::process;

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
        assert!(members > 0, "an etcd cluster needs at least one member");
        let binary = etcd_binary();
        process::start_with_retries("etcd", || {
            let ports = free_ports(2 * members);
            let token = unique_token();
            let names: Vec<String> = (0..members).map(|i| format!("m{i}")).collect();
            let initial_cluster = names
                .iter()
                .enumerate()
                .map(|(i, name)| format!("{name}={}", loopback_url(ports[2 * i + 1])))
                .collect::<Vec<_>>()
                .join(",");
            let mut cluster = EtcdCluster {
                members: names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| {
                        Member::new(
                            &binary,
                            name,
                            ports[2 * i],
                            ports[2 * i + 1],
                            &initial_cluster,
                            &token,
                        )
                    })
                    .collect(),
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
}
