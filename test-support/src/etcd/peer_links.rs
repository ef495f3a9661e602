//! The raft links between the members of an [`EtcdCluster`](super::EtcdCluster), through
//! proxies a test can cut: [`PeerLinks`].
//!
//! Contract: each member advertises a proxy port to its peers; the proxy forwards every
//! peer connection to the member's real peer port, byte for byte, unless the member is
//! isolated or the connection comes from an isolated member. [`PeerLinks::isolate`]
//! closes such connections at once and refuses new ones until [`PeerLinks::rejoin`];
//! the member's client port is not touched, so clients still reach it. That is a network
//! partition as a production cluster meets it: a member cut off from its peers (it loses
//! its leader and learns no more writes) while clients can still talk to it.
//!
//! Why proxies that look up who dialled: every member dials a peer at the one URL the
//! cluster advertises for it, so a link between two members is told apart only by
//! which process dialled. The proxy finds the process that owns the other end of each
//! connection (`/proc/net/tcp` for the socket's inode, `/proc/PID/fd` for its owner),
//! so every request from an isolated member is cut (raft streams and messages, and the
//! lease renewals and version probes a member forwards without naming itself), and it
//! needs no packet filter, so the test runs unprivileged.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

/// How long dialling a member's real peer port may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);

/// A forwarded connection: the member it goes to, the dialler's port, and its two
/// sockets.
struct Link {
    number: u64,
    to: usize,
    dialler: SocketAddr,
    sockets: [TcpStream; 2],
}

#[derive(Default)]
struct State {
    /// Members cut off from their peers, by index.
    isolated: HashSet<usize>,
    /// The members' process ids, to their indices.
    pids: HashMap<u32, usize>,
    /// The proxies' ports, by member.
    ports: Vec<u16>,
    links: Vec<Link>,
    /// The number of the next link.
    next: u64,
}

impl State {
    /// Whether a connection from `dialler` to member `to`'s proxy is cut.
    fn cut(&self, to: usize, dialler: SocketAddr) -> bool {
        self.isolated.contains(&to)
            || (!self.isolated.is_empty()
                && owner(dialler, self.ports[to], self.pids.keys())
                    .and_then(|pid| self.pids.get(&pid))
                    .is_some_and(|i| self.isolated.contains(i)))
    }
}

struct Shared {
    state: Mutex<State>,
    stopped: AtomicBool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Proxies in front of the members' peer ports; see the [module docs](self). Dropping it
/// closes every link and stops the proxies.
pub(super) struct PeerLinks {
    shared: Arc<Shared>,
    /// The proxies' ports, by member.
    ports: Vec<u16>,
}

impl std::fmt::Debug for PeerLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLinks")
            .field("ports", &self.ports)
            .field("isolated", &self.shared.state().isolated)
            .finish()
    }
}

impl PeerLinks {
    /// Proxies on `proxy_ports[i]` forwarding to `peer_ports[i]`, listening before this
    /// returns.
    ///
    /// # Panics
    ///
    /// Panics if a proxy port cannot be bound.
    pub(super) fn start(proxy_ports: &[u16], peer_ports: &[u16]) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                ports: proxy_ports.to_vec(),
                ..State::default()
            }),
            stopped: AtomicBool::new(false),
        });
        for (to, (&port, &peer)) in proxy_ports.iter().zip(peer_ports).enumerate() {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("etcd-peer-proxy-{to}"))
                .spawn(move || accept(&listener, &shared, to, peer))?;
        }
        Ok(Self {
            shared,
            ports: proxy_ports.to_vec(),
        })
    }

    /// The port member `i` advertises to its peers.
    pub(super) fn port(&self, i: usize) -> u16 {
        self.ports[i]
    }

    /// Cuts member `i` off from its peers (`pids`: the members' process ids to their
    /// indices): its links close now and new ones are refused until
    /// [`rejoin`](Self::rejoin).
    pub(super) fn isolate(&self, i: usize, pids: HashMap<u32, usize>) {
        let mut state = self.shared.state();
        state.pids = pids;
        state.isolated.insert(i);
        let links = std::mem::take(&mut state.links);
        for link in links {
            if state.cut(link.to, link.dialler) {
                for socket in &link.sockets {
                    let _ = socket.shutdown(Shutdown::Both);
                }
            } else {
                state.links.push(link);
            }
        }
    }

    /// Lets member `i` reach its peers again.
    pub(super) fn rejoin(&self, i: usize) {
        self.shared.state().isolated.remove(&i);
    }
}

impl Drop for PeerLinks {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        for link in self.shared.state().links.drain(..) {
            for socket in &link.sockets {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        // Wake each accept loop so it sees `stopped`.
        for &port in &self.ports {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let _ = TcpStream::connect_timeout(&addr, DIAL_TIMEOUT);
        }
    }
}

/// Accepts peer connections for member `to` until the proxies stop.
fn accept(listener: &TcpListener, shared: &Arc<Shared>, to: usize, peer: u16) {
    for incoming in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(incoming) = incoming else { continue };
        let shared = shared.clone();
        let _ = thread::Builder::new()
            .name(format!("etcd-peer-link-{to}"))
            .spawn(move || forward(incoming, &shared, to, peer));
    }
}

/// Forwards `incoming` to the member's peer port, or closes it when the link is cut.
fn forward(incoming: TcpStream, shared: &Shared, to: usize, peer: u16) {
    let Ok(dialler) = incoming.peer_addr() else {
        return;
    };
    if shared.state().cut(to, dialler) {
        let _ = incoming.shutdown(Shutdown::Both);
        return;
    }
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, peer));
    let Ok(upstream) = TcpStream::connect_timeout(&addr, DIAL_TIMEOUT) else {
        return;
    };
    let (Ok(up_read), Ok(in_write), Ok(up_keep), Ok(in_keep)) = (
        upstream.try_clone(),
        incoming.try_clone(),
        upstream.try_clone(),
        incoming.try_clone(),
    ) else {
        return;
    };
    let number = {
        // Decided again under the lock: an isolation that came after the first look
        // must see this link to close it.
        let mut state = shared.state();
        if state.cut(to, dialler) || shared.stopped.load(Ordering::SeqCst) {
            let _ = incoming.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
            return;
        }
        let number = state.next;
        state.next += 1;
        state.links.push(Link {
            number,
            to,
            dialler,
            sockets: [in_keep, up_keep],
        });
        number
    };
    let back = thread::Builder::new()
        .name(format!("etcd-peer-link-{to}-back"))
        .spawn(move || copy(up_read, in_write));
    copy(incoming, upstream);
    if let Ok(back) = back {
        let _ = back.join();
    }
    shared.state().links.retain(|l| l.number != number);
}

/// Copies until either side ends, then closes both.
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Which of `pids` owns the loopback connection from `dialler` to `port`: the socket's
/// inode from `/proc/net/tcp`, then the process with that socket among its open files.
/// `None` when it is none of them (or gone).
fn owner<'a>(dialler: SocketAddr, port: u16, pids: impl Iterator<Item = &'a u32>) -> Option<u32> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let (local, remote) = (
        format!("0100007F:{:04X}", dialler.port()),
        format!("0100007F:{port:04X}"),
    );
    let inode = tcp.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
            .then(|| fields.get(9).map(|i| i.to_string()))
            .flatten()
    })?;
    let socket = format!("socket:[{inode}]");
    pids.copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == socket.as_str())
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener, TcpStream};

    use super::owner;

    #[test]
    fn the_owner_of_a_connection_is_the_process_holding_its_socket() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let dialled = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        let (_accepted, dialler) = listener.accept().unwrap();
        assert_eq!(dialler, dialled.local_addr().unwrap());
        let me = std::process::id();
        assert_eq!(owner(dialler, port, [1, me].iter()), Some(me));
        assert_eq!(owner(dialler, port, [1].iter()), None);
        assert_eq!(owner(dialler, port + 1, [me].iter()), None);
    }
}
