//! [`ConsulCluster`]: consul servers and one client agent on free loopback ports, as
//! production runs consul: services register with, and clients ask, the local client
//! agent, which forwards to the servers' leader.

use std::time::{Duration, Instant};

use super::agent::{ConsulAgent, Role, consul_agent_binary};
use crate::ports::free_ports;
use crate::process;

/// How long the cluster may take to elect a leader after a server is lost.
const LEADER_TIMEOUT: Duration = Duration::from_secs(20);

/// Consul servers (`-server -bootstrap-expect=N`, state on disk, quick raft timings) and
/// one client agent that joined them, each on its own loopback ports.
///
/// Dropping it SIGKILLs and reaps every agent. Methods block for at most a few seconds
/// (an election: up to 20 s).
///
/// ```no_run
/// let mut cluster = test_support::ConsulCluster::start(3);
/// let leader = cluster.leader().expect("a leader");
/// cluster.kill_server(leader);
/// assert_ne!(cluster.wait_for_leader(), leader);
/// ```
#[derive(Debug)]
pub struct ConsulCluster {
    servers: Vec<ConsulAgent>,
    client: ConsulAgent,
}

impl ConsulCluster {
    /// Starts `servers` servers and a client agent and waits until the client agent
    /// knows the leader.
    ///
    /// # Panics
    ///
    /// Panics if `servers` is 0, if the agent is not built (with the command that builds
    /// it), or if an agent does not become ready; the message includes its log's end.
    pub fn start(servers: usize) -> ConsulCluster {
        assert!(servers > 0, "a consul cluster needs at least one server");
        let binary = consul_agent_binary();
        process::start_with_retries("consul", || {
            let ports = free_ports(4 * (servers + 1));
            let at = |i: usize| {
                [
                    ports[4 * i],
                    ports[4 * i + 1],
                    ports[4 * i + 2],
                    ports[4 * i + 3],
                ]
            };
            let lan: Vec<u16> = (0..servers).map(|i| at(i)[2]).collect();
            let mut agents: Vec<ConsulAgent> = (0..servers)
                .map(|i| {
                    let join = lan.iter().copied().filter(|&p| p != lan[i]).collect();
                    let role = Role::Server {
                        expect: servers,
                        join,
                    };
                    ConsulAgent::unstarted(&binary, role, at(i))
                })
                .collect();
            let client = Role::Client { join: lan.clone() };
            agents.push(ConsulAgent::unstarted(&binary, client, at(servers)));
            for agent in &mut agents {
                agent.spawn();
            }
            for agent in &mut agents {
                agent.wait_ready()?;
            }
            let client = agents.pop().expect("the client agent");
            Ok(ConsulCluster {
                servers: agents,
                client,
            })
        })
    }

    /// The client agent services register with and clients ask.
    pub fn client(&self) -> &ConsulAgent {
        &self.client
    }

    /// Server `i`.
    ///
    /// # Panics
    ///
    /// Panics if `i` is out of range.
    pub fn server(&self, i: usize) -> &ConsulAgent {
        &self.servers[i]
    }

    /// The server that leads, as the client agent knows it; `None` while there is none,
    /// or while the one it names was killed (the others take a moment to notice).
    pub fn leader(&self) -> Option<usize> {
        let (code, body) = self.client.api("GET", "/v1/status/leader", "");
        let port: u16 = body
            .trim()
            .trim_matches('"')
            .rsplit_once(':')?
            .1
            .parse()
            .ok()?;
        (code == 200)
            .then(|| self.servers.iter().position(|s| s.server_port() == port))
            .flatten()
            .filter(|&i| self.servers[i].pid().is_some())
    }

    /// Waits until the servers have a leader, and returns it.
    ///
    /// # Panics
    ///
    /// Panics if there is none within 20 s.
    pub fn wait_for_leader(&self) -> usize {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            if let Some(leader) = self.leader() {
                return leader;
            }
            assert!(
                Instant::now() < deadline,
                "the consul servers elected no leader within {LEADER_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs and reaps server `i`, keeping its ports and state.
    ///
    /// # Panics
    ///
    /// Panics if `i` is out of range.
    pub fn kill_server(&mut self, i: usize) {
        self.servers[i].kill();
    }

    /// Starts server `i` again on its ports and state; it rejoins the others.
    ///
    /// # Panics
    ///
    /// Panics if `i` is out of range or the server does not become ready.
    pub fn restart_server(&mut self, i: usize) {
        self.servers[i].restart();
    }
}
