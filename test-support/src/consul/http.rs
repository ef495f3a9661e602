//! Bounded HTTP/1.0 exchanges with an agent's loopback HTTP port: the readiness probes
//! and [`ConsulAgent::api`](super::ConsulAgent::api).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Connect and I/O timeout of one readiness probe.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Largest answer read.
const PROBE_MAX_RESPONSE: u64 = 4 * 1024 * 1024;

/// One bounded GET on loopback; the status code and body.
pub(super) fn probe(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    exchange(port, "GET", path, token, "", PROBE_TIMEOUT)
}

/// One HTTP/1.0 request on loopback (so the answer is never chunked), each step
/// bounded by `timeout`.
pub(super) fn exchange(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
    timeout: Duration,
) -> Option<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let token_header = token.map_or(String::new(), |t| format!("X-Consul-Token: {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n{token_header}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    let _ = stream.take(PROBE_MAX_RESPONSE).read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((code, body.to_string()))
}
