//! Resolver snapshots as [`tower::discover`] changes: every driver's resolvers for
//! tower's balancers and for tonic's own `balance_channel`.
//!
//! # Contract
//!
//! [`Changes`] is a `Stream` of [`Change<String, Endpoint>`], keyed by address, read
//! from any target (through the resolver installed for its scheme, a given
//! [`Resolver`], or a [`Driver`]'s) or from a [`SnapshotReceiver`]:
//!
//! * it starts with one `Insert` per endpoint of the current set (nothing while nothing
//!   is resolved yet);
//! * each later snapshot yields the difference to what the stream has yielded so far,
//!   in this order: an `Insert` per new address (in address order, the set's), a `Remove`
//!   then an `Insert` per address whose weight or metadata changed, a `Remove` per
//!   vanished address (in the order they were inserted). Inserts come first so that a
//!   consumer applying one change at a time never sees a set emptier than needed: a
//!   full replacement never passes through the empty set;
//! * snapshots the consumer has not caught up with are merged: the stream always yields
//!   the difference between what it yielded and the *newest* set, never a stale
//!   intermediate one (snapshots are full sets, see [`crate::resolve`]);
//! * a resolver error yields nothing: the last set stays, as in our
//!   [`Channel`](crate::Channel) (a registry that cannot be read is no evidence that its
//!   instances are gone); [`Changes::last_error`] tells it;
//! * the stream ends once the resolver is gone (every [`SnapshotSender`] dropped), after
//!   the rest of the difference; dropping the stream lets the resolver stop its watch.
//!
//! A snapshot costs its differences from the last one taken, whatever is still to
//! yield: the changes it carries ([`ResolverState::changes`]) when it is the next one,
//! else the two sets compared by walking them together and skipping what they share
//! (O(C log N) for C differences); only the first set is read whole. What is still to
//! yield is kept by kind and order, so a snapshot that arrives while the consumer lags
//! updates only the addresses it touches. Either only when the stream is polled: an
//! idle consumer costs nothing, however often the set changes.
//!
//! [`discover`] (or [`Changes::discover`]) turns the stream into a
//! [`tower::discover::Discover`] whose services the caller builds per endpoint, e.g. a
//! tonic `Channel` per address, ready for `tower::balance::p2c::Balance`; [`feed`] keeps
//! tonic's `Channel::balance_channel` fed (below, with what that balancer still gets
//! wrong).
//!
//! # Feeding tonic's `balance_channel`
//!
//! [`feed`] spawns a task that forwards a [`Changes`] stream, compared by address only
//! (tonic's `Endpoint` carries no weight or metadata), into the change queue of a
//! balance channel, turning each inserted endpoint into a tonic `Endpoint` with the
//! caller's function. It ends when the resolver is gone (the channel keeps its last
//! set) or when every clone of the channel is dropped (the resolver's watch stops).
//!
//! ## tonic's queue is drained only while calls are made
//!
//! tonic's balancer reads its change queue only when a request polls it: an idle
//! channel applies nothing, and its bounded queue fills (measured against tonic 0.14.9
//! by the `tonic_feeder_keeps_the_balance_channel_current_while_idle` tests on real etcd
//! and consul: every change sent while idle stays queued until the next call, which
//! drains them all before it picks an endpoint). So the feeder
//! keeps going while the channel is idle without ever falling behind:
//!
//! * it takes a slot in the queue *before* it asks for the next change, and the
//!   [`Changes`] stream computes that change against the newest snapshot at that moment;
//!   when the queue is full the feeder waits, and the snapshots arriving meanwhile are
//!   merged rather than queued, so nothing stale piles up and nothing is lost;
//! * the first call after an idle spell applies the whole queue first. If the queue
//!   was full, the rest of the difference (often the removals, which come last) reaches
//!   tonic only with the calls after it. Give the queue room for the largest change you
//!   expect while idle: twice the largest endpoint set covers replacing all of it.
//!
//! ## What tonic's balancer still gets wrong (tonic 0.14)
//!
//! * an empty endpoint set (nothing resolved yet, or every instance gone) makes every
//!   call wait forever: request timeouts do not end it, only a deadline around the call
//!   (`tokio::time::timeout`);
//! * no failover: an endpoint whose process died stays in rotation until the registry
//!   drops it, since its connect errors are reported to the call that picked it, which
//!   fails;
//! * "p2c" over a constant load, i.e. uniform random choice; no round robin, no weights.
//!
//! Prefer our [`Channel`](crate::Channel) unless you need tonic's channel itself; it
//! has none of these faults and needs no feeder.
//!
//! # Why
//!
//! Our [`Channel`](crate::Channel) stays the recommended way to call a discovered
//! service: it fails fast on an empty set, moves a request a dead endpoint could not
//! take to a live one, watches for frozen peers, and applies updates with no traffic.
//! These adapters are how the resolvers plug into the rest of the tower ecosystem, for
//! users who already build on tower's middleware or tonic's channel.
//!
//! [`SnapshotSender`]: crate::resolve::SnapshotSender

mod feed;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures_util::Stream;
use tokio::sync::watch::error::RecvError;
use tokio_util::sync::ReusableBoxFuture;

pub use self::feed::{TonicChange, balance_channel, feed, http_endpoint};
pub use tower::discover::Change;

use crate::driver::{Driver, require_runtime, resolver_of};
use crate::error::Result;
use crate::resolve::{
    self, Endpoint, EndpointSet, Resolver, ResolverState, SetChange, SnapshotReceiver,
    SnapshotSender,
};
use crate::target::Target;

type Wait = ReusableBoxFuture<'static, (Result<(), RecvError>, SnapshotReceiver)>;

async fn next_snapshot(mut rx: SnapshotReceiver) -> (Result<(), RecvError>, SnapshotReceiver) {
    let changed = rx.changed().await;
    (changed, rx)
}

/// What the stream has yielded for one address.
#[derive(Debug)]
struct Yielded {
    endpoint: Endpoint,
    /// When it was inserted, to remove vanished addresses in a stable order.
    seq: u64,
}

/// The stream of [`Change`]s of one resolver; see the [module docs](self).
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use futures_util::StreamExt;
/// use dtmdriver_core::discover::{Change, Changes};
/// dtmdriver_core::use_driver("default")?; // e.g. "dtm-driver-gozero", its crate linked
/// let mut changes = Changes::from_target("direct:///127.0.0.1:50051,127.0.0.1:50052")?;
/// while let Some(change) = changes.next().await {
///     match change {
///         Change::Insert(addr, endpoint) => println!("+ {addr} weight {}", endpoint.weight),
///         Change::Remove(addr) => println!("- {addr}"),
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Changes {
    /// Waits for the next snapshot; `None` once the resolver is gone.
    wait: Option<Wait>,
    newest: Option<EndpointSet>,
    /// The version of the state `newest` came from.
    version: u64,
    last_error: Option<String>,
    yielded: HashMap<String, Yielded>,
    next_seq: u64,
    /// Still to yield, in this order: the insert completing a changed address's
    /// remove; new addresses (address order); changed ones (address order, each a
    /// remove then an insert); gone ones (by the `seq` they were inserted with).
    next_up: Option<(String, Endpoint)>,
    inserts: BTreeMap<String, Endpoint>,
    changed: BTreeMap<String, Endpoint>,
    removes: BTreeMap<u64, String>,
    by_address: bool,
}

impl fmt::Debug for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Changes")
            .field("yielded", &self.yielded.len())
            .field(
                "pending",
                &(self.inserts.len() + self.changed.len() + self.removes.len()),
            )
            .field("ended", &self.wait.is_none())
            .finish_non_exhaustive()
    }
}

impl Changes {
    /// The changes of the snapshots `rx` receives, starting with its current set.
    pub fn new(mut rx: SnapshotReceiver) -> Self {
        let state = rx.borrow_and_update().clone();
        let mut changes = Self {
            wait: Some(ReusableBoxFuture::new(next_snapshot(rx))),
            newest: None,
            version: 0,
            last_error: None,
            yielded: HashMap::new(),
            next_seq: 0,
            next_up: None,
            inserts: BTreeMap::new(),
            changed: BTreeMap::new(),
            removes: BTreeMap::new(),
            by_address: false,
        };
        changes.take(&state);
        changes
    }

    /// The changes of `target` through the resolver installed for its scheme (by
    /// [`use_driver`](crate::use_driver); `direct` and `passthrough` are built in).
    /// Must run inside a tokio runtime (resolvers spawn their watch).
    pub fn from_target(target: &str) -> Result<Self> {
        let parsed = Target::parse(target)?;
        Self::start(target, &parsed, resolve::resolver_for(&parsed)?)
    }

    /// The changes of `target` through `resolver`. Must run inside a tokio runtime.
    pub fn with_resolver(target: &str, resolver: Arc<dyn Resolver>) -> Result<Self> {
        Self::start(target, &Target::parse(target)?, resolver)
    }

    /// The changes of `target` through `driver`'s resolver for its scheme, without
    /// installing anything globally. Must run inside a tokio runtime.
    pub fn with_driver(target: &str, driver: &dyn Driver) -> Result<Self> {
        let parsed = Target::parse(target)?;
        let resolver = resolver_of(driver, &parsed)?;
        Self::start(target, &parsed, resolver)
    }

    fn start(given: &str, target: &Target, resolver: Arc<dyn Resolver>) -> Result<Self> {
        require_runtime(given, "resolve")?;
        let (tx, rx) = SnapshotSender::channel();
        resolver.resolve(target, tx)?;
        Ok(Self::new(rx))
    }

    /// Compares endpoints by address only: a weight or metadata change of a known
    /// address yields nothing. For consumers whose services do not depend on them
    /// (tonic's `Endpoint` has neither), so such a change does not drop a live
    /// connection to dial the same address again. Applies from the next snapshot on.
    pub fn addresses_only(mut self) -> Self {
        self.by_address = true;
        self
    }

    /// The resolver's newest error, as of the last poll; `None` after a good snapshot.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// A [`Discover`](tower::discover::Discover) over these changes whose services
    /// `make_service` builds per endpoint; see [`Discovered`].
    pub fn discover<F, S, E>(self, make_service: F) -> Discovered<F>
    where
        F: FnMut(&Endpoint) -> std::result::Result<S, E>,
        E: fmt::Display,
    {
        Discovered {
            changes: self,
            make_service,
            live: HashSet::new(),
        }
    }

    /// Notes a snapshot: what is still to yield becomes the difference between what
    /// was yielded and its set, recomputed for the addresses it touched alone (see the
    /// [module docs](self) for the cost).
    fn take(&mut self, state: &ResolverState) {
        self.last_error.clone_from(&state.last_error);
        let Some(set) = &state.endpoints else { return };
        if self.newest.as_ref().is_some_and(|n| n.ptr_eq(set)) {
            return;
        }
        let prev = self.newest.replace(set.clone());
        let next = self.version + 1 == state.version;
        self.version = state.version;
        // The addresses whose endpoint may differ from the last set taken; an address
        // changed twice in one state (gone and back) once.
        let mut touched: BTreeSet<&str> = BTreeSet::new();
        match (&prev, &state.changes) {
            (Some(_), Some(changes)) if next => touched.extend(changes.iter().map(SetChange::addr)),
            (Some(prev), _) => prev.diff(set, |step| {
                touched.insert(&step.unwrap_or_else(|gone| gone).addr);
            }),
            (None, _) => {
                touched.extend(set.iter().map(|e| e.addr.as_str()));
                touched.extend(self.yielded.keys().map(String::as_str));
            }
        }
        let touched: Vec<String> = touched.into_iter().map(str::to_string).collect();
        for addr in touched {
            let now = set.get(&addr);
            self.settle(addr, now);
        }
    }

    /// Brings what is still to yield for `addr` to what `now` (its endpoint in the
    /// newest set) asks, given what was yielded.
    fn settle(&mut self, addr: String, now: Option<&Endpoint>) {
        self.inserts.remove(&addr);
        self.changed.remove(&addr);
        let yielded = self.yielded.get(&addr);
        if let Some(y) = yielded {
            self.removes.remove(&y.seq);
        }
        if self.next_up.as_ref().is_some_and(|(a, _)| *a == addr) {
            // Its remove was yielded: the insert completes it, with the newest endpoint.
            self.next_up = now.map(|e| (addr, e.clone()));
            return;
        }
        match (now, yielded) {
            (Some(e), None) => {
                self.inserts.insert(addr, e.clone());
            }
            (Some(e), Some(y)) if !self.by_address && y.endpoint != *e => {
                self.changed.insert(addr, e.clone());
            }
            (None, Some(y)) => {
                self.removes.insert(y.seq, addr);
            }
            (Some(_), Some(_)) | (None, None) => {}
        }
    }

    /// The next change to yield, taken out of what is still to yield.
    fn next_change(&mut self) -> Option<Change<String, Endpoint>> {
        if let Some((addr, e)) = self.next_up.take() {
            return Some(Change::Insert(addr, e));
        }
        if let Some((addr, e)) = self.inserts.pop_first() {
            return Some(Change::Insert(addr, e));
        }
        if let Some((addr, e)) = self.changed.pop_first() {
            self.next_up = Some((addr.clone(), e));
            return Some(Change::Remove(addr));
        }
        self.removes
            .pop_first()
            .map(|(_, addr)| Change::Remove(addr))
    }

    /// Records a change as yielded.
    fn yield_change(&mut self, change: &Change<String, Endpoint>) {
        match change {
            Change::Insert(addr, endpoint) => {
                self.next_seq += 1;
                let y = Yielded {
                    endpoint: endpoint.clone(),
                    seq: self.next_seq,
                };
                self.yielded.insert(addr.clone(), y);
            }
            Change::Remove(addr) => {
                self.yielded.remove(addr);
            }
        }
    }
}

impl Stream for Changes {
    type Item = Change<String, Endpoint>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // Take every snapshot that arrived (the watch cell keeps only the newest), so
        // the pending difference is against the newest set.
        while let Some(wait) = &mut this.wait {
            match wait.poll(cx) {
                Poll::Pending => break,
                Poll::Ready((Ok(()), mut rx)) => {
                    let state = rx.borrow_and_update().clone();
                    wait.set(next_snapshot(rx));
                    this.take(&state);
                }
                Poll::Ready((Err(_), _)) => this.wait = None,
            }
        }
        match this.next_change() {
            Some(change) => {
                this.yield_change(&change);
                Poll::Ready(Some(change))
            }
            None if this.wait.is_none() => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

/// A [`tower::discover::Discover`] (key: the address, error: none) whose services are
/// built per endpoint by a caller's function; from [`discover`] or
/// [`Changes::discover`].
///
/// It yields the [`Changes`] with each endpoint turned into a service. An endpoint
/// whose service cannot be built is left out with a warning (one bad address must not
/// stop a balancer, and tower's balancers fail for good on a discovery error), and so
/// is its later removal. The stream ends when the resolver is gone; tower's `Balance`
/// then keeps the last set.
pub struct Discovered<F> {
    changes: Changes,
    make_service: F,
    /// Addresses whose service was yielded and not removed since.
    live: HashSet<String>,
}

impl<F> fmt::Debug for Discovered<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovered")
            .field("changes", &self.changes)
            .field("live", &self.live.len())
            .finish_non_exhaustive()
    }
}

// Nothing is pinned structurally: the stream is polled through `&mut`.
impl<F> Unpin for Discovered<F> {}

impl<F> Discovered<F> {
    /// The resolver's newest error, as of the last poll.
    pub fn last_error(&self) -> Option<&str> {
        self.changes.last_error()
    }
}

impl<F, S, E> Stream for Discovered<F>
where
    F: FnMut(&Endpoint) -> std::result::Result<S, E>,
    E: fmt::Display,
{
    type Item = std::result::Result<Change<String, S>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let Some(change) = ready!(Pin::new(&mut this.changes).poll_next(cx)) else {
                return Poll::Ready(None);
            };
            match change {
                Change::Insert(addr, endpoint) => match (this.make_service)(&endpoint) {
                    Ok(service) => {
                        this.live.insert(addr.clone());
                        return Poll::Ready(Some(Ok(Change::Insert(addr, service))));
                    }
                    Err(error) => tracing::warn!(
                        endpoint = %addr,
                        %error,
                        "discovered endpoint left out: its service could not be built"
                    ),
                },
                Change::Remove(addr) => {
                    if this.live.remove(&addr) {
                        return Poll::Ready(Some(Ok(Change::Remove(addr))));
                    }
                }
            }
        }
    }
}

/// A [`tower::discover::Discover`] of `target` through the resolver installed for its
/// scheme, with a service per endpoint built by `make_service`; ready for
/// `tower::balance::p2c::Balance`. Must run inside a tokio runtime.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use tower::load::{CompleteOnResponse, PendingRequests};
/// dtmdriver_core::use_driver("default")?; // e.g. "dtm-driver-gozero", its crate linked
/// let discover = dtmdriver_core::discover("direct:///127.0.0.1:50051,127.0.0.1:50052", |e| {
///     let channel = dtmdriver_core::discover::http_endpoint(e)?.connect_lazy();
///     // p2c compares loads: count each channel's calls in flight.
///     Ok::<_, tonic::transport::Error>(PendingRequests::new(channel, CompleteOnResponse::default()))
/// })?;
/// let balance = tower::balance::p2c::Balance::new(discover);
/// // Generated clients need a `Clone` service: wrap it in a `tower::buffer::Buffer`.
/// let channel = tower::buffer::Buffer::new(balance, 1024);
/// // let mut client = GreeterClient::new(channel);
/// # Ok(()) }
/// ```
pub fn discover<F, S, E>(target: &str, make_service: F) -> Result<Discovered<F>>
where
    F: FnMut(&Endpoint) -> std::result::Result<S, E>,
    E: fmt::Display,
{
    Ok(Changes::from_target(target)?.discover(make_service))
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use futures_util::future::FutureExt;

    use super::*;

    fn ep(port: u16) -> Endpoint {
        Endpoint::new(format!("10.0.0.1:{port}"))
    }

    fn a(port: u16) -> String {
        format!("10.0.0.1:{port}")
    }

    /// Every change ready now, as `+addr/weight` and `-addr`.
    fn drain(changes: &mut Changes) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(Some(change)) = changes.next().now_or_never() {
            out.push(match change {
                Change::Insert(addr, e) => format!("+{addr}/{}", e.weight),
                Change::Remove(addr) => format!("-{addr}"),
            });
        }
        out
    }

    #[test]
    fn starts_with_the_current_set_then_yields_differences_in_order() {
        let (tx, rx) = SnapshotSender::channel();
        tx.update(vec![ep(1), ep(2), ep(3)]);
        let mut changes = Changes::new(rx);
        assert_eq!(
            drain(&mut changes),
            [
                format!("+{}/1", a(1)),
                format!("+{}/1", a(2)),
                format!("+{}/1", a(3))
            ]
        );
        // 1 leaves, 4 and 5 come, 3 changes weight: inserts, then the change as
        // remove + insert, then the removal.
        tx.update(vec![ep(5), ep(2), ep(3).with_weight(7), ep(4)]);
        assert_eq!(
            drain(&mut changes),
            [
                format!("+{}/1", a(4)),
                format!("+{}/1", a(5)),
                format!("-{}", a(3)),
                format!("+{}/7", a(3)),
                format!("-{}", a(1)),
            ]
        );
        // A metadata change is a change too; the same set again is none.
        tx.update(vec![
            ep(5),
            ep(2).with_metadata("v", "2"),
            ep(3).with_weight(7),
            ep(4),
        ]);
        assert_eq!(
            drain(&mut changes),
            [format!("-{}", a(2)), format!("+{}/1", a(2))]
        );
        tx.update(vec![
            ep(5),
            ep(2).with_metadata("v", "2"),
            ep(3).with_weight(7),
            ep(4),
        ]);
        assert_eq!(drain(&mut changes), Vec::<String>::new());
        // Removals come in the order the addresses were (last) inserted: 3 was
        // inserted again before 2.
        tx.update(vec![]);
        assert_eq!(
            drain(&mut changes),
            [
                format!("-{}", a(4)),
                format!("-{}", a(5)),
                format!("-{}", a(3)),
                format!("-{}", a(2)),
            ]
        );
    }

    #[test]
    fn nothing_before_the_first_resolution_and_errors_keep_the_set() {
        let (tx, rx) = SnapshotSender::channel();
        let mut changes = Changes::new(rx);
        assert_eq!(drain(&mut changes), Vec::<String>::new());
        tx.error("registry down");
        assert_eq!(drain(&mut changes), Vec::<String>::new());
        assert_eq!(changes.last_error(), Some("registry down"));
        tx.update(vec![ep(1)]);
        assert_eq!(drain(&mut changes), [format!("+{}/1", a(1))]);
        assert_eq!(changes.last_error(), None);
        tx.error("registry down again");
        assert_eq!(drain(&mut changes), Vec::<String>::new());
        assert_eq!(changes.last_error(), Some("registry down again"));
    }

    #[test]
    fn merges_snapshots_the_consumer_has_not_caught_up_with() {
        let (tx, rx) = SnapshotSender::channel();
        tx.update(vec![ep(1), ep(2)]);
        let mut changes = Changes::new(rx);
        // Half of the first difference taken, then the set moves on twice.
        assert!(matches!(
            changes.next().now_or_never(),
            Some(Some(Change::Insert(..)))
        ));
        tx.update(vec![ep(2), ep(3)]);
        tx.update(vec![ep(3), ep(4)]);
        // Against what was yielded (1), the newest set is: +3 +4 -1. Neither 2 (never
        // yielded, gone) nor a stale insert of it appears.
        assert_eq!(
            drain(&mut changes),
            [
                format!("+{}/1", a(3)),
                format!("+{}/1", a(4)),
                format!("-{}", a(1))
            ]
        );
    }

    #[test]
    fn ends_when_the_resolver_is_gone_after_the_rest_of_the_difference() {
        let (tx, rx) = SnapshotSender::channel();
        let mut changes = Changes::new(rx);
        tx.update(vec![ep(1)]);
        drop(tx);
        assert_eq!(drain(&mut changes), [format!("+{}/1", a(1))]);
        assert!(matches!(changes.next().now_or_never(), Some(None)));
    }

    #[test]
    fn addresses_only_ignores_weight_and_metadata_changes() {
        let (tx, rx) = SnapshotSender::channel();
        tx.update(vec![ep(1)]);
        let mut changes = Changes::new(rx).addresses_only();
        assert_eq!(drain(&mut changes), [format!("+{}/1", a(1))]);
        tx.update(vec![ep(1).with_weight(9).with_metadata("k", "v"), ep(2)]);
        assert_eq!(drain(&mut changes), [format!("+{}/1", a(2))]);
    }

    #[test]
    fn an_address_gone_and_back_in_one_state_counts_once() {
        let (tx, rx) = tokio::sync::watch::channel(ResolverState::default());
        let mut changes = Changes::new(rx);
        let state = |version: u64, set: Vec<Endpoint>, changes: Vec<SetChange>| ResolverState {
            endpoints: Some(set.into_iter().collect()),
            changes: Some(changes.into()),
            last_error: None,
            version,
        };
        tx.send_replace(state(1, vec![ep(1), ep(2)], vec![]));
        assert_eq!(drain(&mut changes).len(), 2);
        // 2 left and came back with another weight, 3 came and left: one change.
        tx.send_replace(state(
            2,
            vec![ep(1), ep(2).with_weight(4)],
            vec![
                SetChange::Remove(a(2)),
                SetChange::Put(ep(3)),
                SetChange::Put(ep(2).with_weight(4)),
                SetChange::Remove(a(3)),
            ],
        ));
        assert_eq!(
            drain(&mut changes),
            [format!("-{}", a(2)), format!("+{}/4", a(2))]
        );
        // A state skipped: the sets are compared (these two share nothing).
        tx.send_replace(state(9, vec![ep(5)], vec![SetChange::Put(ep(7))]));
        assert_eq!(
            drain(&mut changes),
            [
                format!("+{}/1", a(5)),
                format!("-{}", a(1)),
                format!("-{}", a(2))
            ]
        );
    }

    /// A consumer that lags by any amount, over states that follow one another or skip
    /// some: what it has been yielded, applied in order, is always on its way to the
    /// newest set, reaches it when drained, and never holds an address twice.
    #[test]
    fn a_lagging_consumer_ends_at_the_newest_set_whatever_it_skipped() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        for round in 0..40 {
            let (tx, rx) = SnapshotSender::channel();
            let mut model: BTreeMap<u16, u32> = (0..50).map(|p| (p, 1)).collect();
            tx.apply(model.keys().map(|p| (format!("k{p}"), Some(ep(*p)))));
            let mut changes = Changes::new(rx);
            let mut view: BTreeMap<String, u32> = BTreeMap::new();
            for _ in 0..60 {
                // One to five states between two polls: with one, the consumer takes
                // the next state's changes; with more, it skips some and compares sets.
                for _ in 0..rng.random_range(1..6) {
                    let p = rng.random_range(0..80u16);
                    let key = format!("k{p}");
                    if rng.random_bool(0.3) {
                        model.remove(&p);
                        tx.apply([(key, None)]);
                    } else {
                        let w = rng.random_range(1..4);
                        model.insert(p, w);
                        tx.apply([(key, Some(ep(p).with_weight(w)))]);
                    }
                }
                // Take a random part of what is ready.
                for _ in 0..rng.random_range(0..30) {
                    match changes.next().now_or_never() {
                        Some(Some(Change::Insert(addr, e))) => {
                            assert!(
                                view.insert(addr, e.weight).is_none(),
                                "round {round}: inserted twice"
                            );
                        }
                        Some(Some(Change::Remove(addr))) => {
                            assert!(
                                view.remove(&addr).is_some(),
                                "round {round}: removed unknown"
                            );
                        }
                        _ => break,
                    }
                }
            }
            while let Some(Some(change)) = changes.next().now_or_never() {
                match change {
                    Change::Insert(addr, e) => assert!(view.insert(addr, e.weight).is_none()),
                    Change::Remove(addr) => assert!(view.remove(&addr).is_some()),
                }
            }
            let want: BTreeMap<String, u32> = model.iter().map(|(p, w)| (a(*p), *w)).collect();
            assert_eq!(view, want, "round {round}");
        }
    }

    #[test]
    fn discovered_leaves_out_endpoints_without_a_service_and_their_removal() {
        let (tx, rx) = SnapshotSender::channel();
        tx.update(vec![ep(1), ep(2)]);
        let mut discovered = Changes::new(rx).discover(|e: &Endpoint| {
            if e.addr.ends_with(":2") {
                Err("no service for port 2")
            } else {
                Ok(e.addr.clone())
            }
        });
        let mut next = || match discovered.next().now_or_never() {
            Some(Some(Ok(Change::Insert(k, s)))) => format!("+{k}={s}"),
            Some(Some(Ok(Change::Remove(k)))) => format!("-{k}"),
            Some(None) => "end".into(),
            None => "pending".into(),
        };
        assert_eq!(next(), format!("+{}={}", a(1), a(1)));
        assert_eq!(next(), "pending");
        tx.update(vec![ep(3)]);
        assert_eq!(next(), format!("+{}={}", a(3), a(3)));
        assert_eq!(next(), format!("-{}", a(1)));
        assert_eq!(next(), "pending");
        drop(tx);
        assert_eq!(next(), "end");
    }

    #[test]
    fn needs_a_runtime_to_resolve_a_target() {
        let err = Changes::from_target("direct:///127.0.0.1:1").unwrap_err();
        assert!(err.to_string().contains("no tokio runtime"), "{err}");
    }
}
