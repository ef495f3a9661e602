//! The channel's own HTTP/2 transport: one pooled connection per address, calls
//! driven on the caller's task.
//!
//! Contract, what the balancer above relies on:
//!
//! - a [`Connection`](connection::Connection), one per address in a process-wide pool
//!   (`connection`), publishes its state (`idle`, `connecting`, `ready`, `unresponsive`,
//!   `ejected`) *before* a request is handed over, with a lock-free ready flag for the
//!   pick (`state`), kept up by its own task (`task`);
//! - a request either opens a stream, or is refused without reaching the server
//!   (`NotReady`, `Refused`: safe to send elsewhere), or cannot be carried at all
//!   (`Rejected`);
//! - a request the server refused unprocessed (`REFUSED_STREAM`, graceful GOAWAY) can be
//!   sent again if its body was kept (`replay`); nothing that may have reached a server
//!   is ever replayed;
//! - a peer that stops answering with its connection open leaves the rotation within
//!   about a second and comes back when it answers (`liveness`), within grpc-go's ping
//!   policy, so grpc-go servers (go-zero, kratos, dtm) never send "too_many_pings";
//!   one thread per process checks the busy connections (`sweeper`), a call only
//!   counts itself;
//! - TLS by rustls with ALPN `h2` (`tls`);
//! - a dial that finds the process out of file descriptors raises the soft open-file
//!   limit to the hard one, once, as Go programs run, and says what to do at the hard
//!   one ([`crate::open_files`]).
//!
//! It must stay conformant to HTTP/2 (RFC 9113, through the `h2` crate) and to the
//! gRPC over HTTP/2 protocol as grpc-go and tonic servers speak it: every stream shape
//! (unary, client, server and bidirectional streaming), messages larger than the
//! flow-control windows, trailers-only responses, `grpc-timeout`; the tests in
//! `driver-core/tests/transport.rs`, `stream_ends.rs` (every way a stream ends, and
//! the line of transparent retry) and `interop_grpc.rs` (grpc's interop cases against
//! grpc-go's interop server, tonic's channel as the control) hold it to that.
//!
//! Why it exists instead of tonic's channel over hyper: the balancer has to know
//! whether an endpoint can take a request before handing it over (tonic's lazy
//! channels only find out inside the call), and a call here costs one task hop less
//! than hyper's client, which spawns a dispatcher task per request (see `exchange`).
//! Measured with `cargo bench -p dtmdriver-core --bench channel` (three in-process echo
//! servers): 1.14–1.48× the calls/s of tonic's own channels (a plain one and
//! `balance_channel`) depending on concurrency; after the balancer's split into files
//! (#12), 1.43 / 1.40 / 1.08× a plain tonic channel and 1.48 / 1.48 / 1.18× tonic's
//! `balance_channel` at 1 / 16 / 64 concurrent calls (`docs/performance.md`). Keep
//! that bench in the loop for any change here.

pub(crate) mod connection;
pub(crate) mod exchange;
pub(crate) mod liveness;
pub(crate) mod log_budget;
pub(crate) mod ready_log;
pub(crate) mod replay;
pub(crate) mod state;
pub(crate) mod sweeper;
pub(crate) mod task;
pub(crate) mod tls;
