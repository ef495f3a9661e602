//! Free loopback ports, and loopback addresses for instances that are never dialled.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

/// Ports already handed out by this process, so that concurrent tests in one test binary
/// never receive the same port even after the first user released it.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Bounded number of extra bind attempts per requested port.
const ATTEMPTS_PER_PORT: usize = 64;

/// Returns a TCP port on `127.0.0.1` that is currently free.
///
/// The port is found by binding port 0 and reading back the port the kernel chose; the
/// socket is closed before returning, so another process could in principle take the
/// port before the caller binds it (callers that start servers retry on "address already
/// in use"). Within one process a port is never returned twice.
///
/// # Panics
///
/// Panics if no loopback port can be bound.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// Returns `n` distinct TCP ports on `127.0.0.1` that are currently free.
///
/// All `n` sockets are held open until every port is chosen, so the ports are distinct.
/// See [`free_port`] for the caveats.
///
/// # Panics
///
/// Panics if `n` free loopback ports cannot be found.
///
/// ```
/// let ports = test_support::free_ports(3);
/// assert_eq!(ports.len(), 3);
/// assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
/// ```
pub fn free_ports(n: usize) -> Vec<u16> {
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut held = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n.saturating_mul(ATTEMPTS_PER_PORT) {
        if ports.len() == n {
            break;
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|err| panic!("cannot bind a port on 127.0.0.1: {err}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|err| panic!("cannot read a bound socket's address: {err}"))
            .port();
        if handed_out.insert(port) {
            ports.push(port);
            held.push(listener);
        }
    }
    assert_eq!(
        ports.len(),
        n,
        "could not find {n} free loopback ports not already handed out"
    );
    drop(held);
    ports
}

/// A distinct loopback address for the `i`-th made-up instance of a large set
/// (`127.X.Y.Z:8080`, distinct for `i` below 16,777,215), for sets whose endpoints are
/// resolved, counted and compared but never dialled.
pub fn synthetic_addr(i: usize) -> String {
    let n = i + 1;
    format!(
        "127.{}.{}.{}:8080",
        (n >> 16) & 255,
        (n >> 8) & 255,
        n & 255
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_never_repeated_within_a_process() {
        let mut seen = BTreeSet::new();
        for _ in 0..20 {
            for port in free_ports(3) {
                assert!(seen.insert(port), "port {port} handed out twice");
            }
        }
        assert!(seen.insert(free_port()));
    }

    #[test]
    fn a_free_port_can_be_bound() {
        let port = free_port();
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("bind the free port");
    }
}
