//! A discovery channel for tonic: resolver snapshots in, balanced calls out.
//!
//! [`Channel`] is a `tower::Service` that generated tonic clients accept
//! (`GreeterClient::new(channel)`). Behind it:
//!
//! 1. a [`Resolver`](crate::resolve::Resolver) publishes endpoint snapshots for the target;
//! 2. an updater task applies each snapshot as it arrives, traffic or not, diffing it
//!    into per-address connections from a process-wide pool (see `connection`);
//! 3. each call picks a *ready* connection by [`Policy`]; a request that could not be
//!    sent goes to another endpoint, so a dead endpoint never fails a call while a live
//!    one exists;
//! 4. each connection watches that its peer still answers and leaves the rotation while
//!    it does not (see below).
//!
//! What a call sees, by state:
//!
//! | state | call |
//! |---|---|
//! | nothing resolved yet | waits up to [`ChannelBuilder::resolve_timeout`], then `UNAVAILABLE` with the resolver's last error |
//! | resolved, empty set | `UNAVAILABLE` naming the target at once, or waits with [`ChannelBuilder::wait_for_ready`] |
//! | endpoints, none connected yet | waits for the first to connect (bounded by the connect timeout) |
//! | every endpoint failing | `UNAVAILABLE` naming the first five endpoints with their errors, counting the rest |
//! | an endpoint stops answering, connection open | out of rotation within about a second, under every policy; back when it answers |
//! | every endpoint unresponsive | waits as for a connecting one (bounded by the connect timeout or the deadline), then `UNAVAILABLE` naming them |
//! | resolver error after a good set | the last set keeps serving |
//!
//! A `grpc-timeout` header (tonic's `Request::set_timeout`) bounds the whole call,
//! waiting included, and fails it with `DEADLINE_EXCEEDED`.
//!
//! # An endpoint that stops answering
//!
//! A frozen process (SIGSTOP, a paused VM, a long GC pause, a deadlock) keeps its TCP
//! connection open, so nothing fails; without help a policy keeps handing it its share
//! and a closed-loop client ends up with every caller parked there. Each connection
//! therefore watches its peer (`liveness`): when calls are pending and no response frame
//! arrived for 200 ms it sends one HTTP/2 ping; unanswered for 500 ms, the endpoint is
//! `unresponsive` in [`Channel::status`] and no policy picks it; the ping's answer puts it
//! back. A slow handler is not mistaken for a frozen process (its server answers the
//! ping), a busy healthy connection never pings, and the pings stay within grpc-go's
//! ping policy (see `liveness` for the rule), so go-zero, kratos and dtm servers with
//! their default settings never answer them with GOAWAY "too_many_pings".
//!
//! Calls already handed to the frozen endpoint stay with it: a request that may have
//! reached a server is never replayed elsewhere, so each ends by its deadline (or by the
//! endpoint answering again). Give calls a deadline: without one, calls on a frozen
//! endpoint wait for it to resume, and under a closed-loop load every caller may reach
//! it in the fraction of a second before it is found. An endpoint removed from the set
//! while frozen keeps such calls until its connection is drained (at most 30 s).
//!
//! # Which policy
//!
//! Round robin stays the default. With the liveness watch it no longer suffers from a
//! frozen instance (the one case where p2c's load-awareness was needed to keep the
//! throughput), it spreads load evenly and predictably, costs less per call (no clock
//! read, no latency bookkeeping), and is what gRPC users expect. Pick
//! [`Policy::PeakEwma`] (go-zero's default) for endpoints of uneven speed: it steers
//! calls away from slow or erroring instances, which round robin does not.
//!
//! Channels are shared: [`connect`] (and [`ChannelBuilder::connect`]) with the same
//! target and settings returns the same channel, so a process holds one registry watch
//! per target however many clients dial it.
//!
//! # Scale
//!
//! Applying a resolver snapshot hashes only the endpoints that changed (the rest is one
//! comparison each against the slot at the same place), the very snapshot applied
//! before costs nothing, and a set equal to the table publishes nothing (`table`). A
//! pick costs the same whatever the number of ready endpoints: O(1) for round robin and
//! p2c, O(1) amortised for weighted round robin (`policy`). Figures, and the bench
//! that produces them: `docs/performance.md`.
//!
//! # Layout
//!
//! One concern a file, so that each policy is one hop from the call:
//!
//! * `builder`: [`ChannelBuilder`], the sharing cache of live channels, [`connect`];
//! * `channel`: [`Channel`], its status view, the updater task feeding snapshots in;
//! * `table`: the endpoint table in service and how a snapshot is applied to it;
//! * `gate`: the fail-fast gate, what a call waits for when nothing is ready, and the
//!   statuses it fails with;
//! * `policy`: [`Policy`] and the choice of a ready endpoint, with the peak-EWMA load;
//! * `weights`: the slots grouped by weight, which weighted round robin takes turns over;
//! * `call`: one call end to end: pick, send, retry a refused request elsewhere,
//!   account its load, read its grpc headers;
//! * `transport`: the HTTP/2 connections under it all (pooled per address).

pub(crate) mod bench_hooks;
mod builder;
mod call;
mod channel;
mod gate;
mod policy;
mod ready;
mod slots;
mod status;
mod table;
mod transport;
mod weights;

pub use builder::{ChannelBuilder, connect};
pub use channel::{Channel, ChannelStatus, EndpointStatus};
pub use policy::Policy;
pub use transport::tls::TlsConnector;

/// Boxed error of the channel's service; generated clients turn it into a `Status`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
