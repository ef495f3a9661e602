//! The process's one liveness sweeper: a thread that checks, every [`CHECK`], the
//! connections that have calls pending or a ping on its way, idle connections that
//! ping while idle when their ping is due, and nothing else.
//!
//! Contract:
//!
//! - a call costs O(1) and takes no lock: [`Activity::call_started`] counts it and, only
//!   if the sweeper is not already watching the connection, queues the connection for
//!   it (an atomic flag, an `Arc` and a lock-free queue push; no task is woken);
//! - a connection with a call pending is always watched: it is queued when a call
//!   finds it unwatched, and the sweeper lets it go only once a check finds nothing
//!   pending and no ping on its way, checking again after clearing its flag (see
//!   `keep_watching`), so a call starting at that moment either sees the flag cleared and
//!   queues the connection, or is seen by the sweeper;
//! - every watched connection is checked at least every [`CHECK`], and at the moment
//!   its next step is due (a ping after [`SILENCE`](super::liveness::SILENCE) of
//!   silence, a ping unanswered for [`PROBE_TIMEOUT`](super::liveness::PROBE_TIMEOUT));
//!   a ping's answer wakes the sweeper at once. What a check does is `liveness`'s;
//! - a connection that pings while idle (`keepalive_while_idle`), with nothing pending
//!   and no ping on its way, is set aside in a heap until its keepalive ping is due
//!   ([`Probe::idle_until`]) and checked then, or as soon as a call starts on it (the
//!   call queues it as above: a set-aside connection is not flagged watched);
//! - a sweep's work is proportional to the connections with calls pending or a ping
//!   on its way, plus the set-aside ones falling due, not to all of them; with none,
//!   the thread sleeps until a call queues one or the first set-aside one falls due.
//!   Before the heap, every idle pinging connection was checked every tick: 20 checks
//!   a connection a second (`tests/idle_keepalive.rs`; `docs/performance.md`).
//!
//! Why one thread instead of a task per connection: with calls spread thin over many
//! connections (32 callers over 4,000 endpoints), every call found its connection idle
//! and woke that connection's watch task, which then armed a 50 ms timer and woke
//! again; that cost more than the pick and the call's own bookkeeping (see
//! `docs/performance.md`). A thread rather than a task: the connection pool is
//! process-wide and outlives any one tokio runtime (a test's, a blocking client's), and
//! the checks only read counters, send pings and publish states, none of which needs a
//! runtime.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::mpsc;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::task::{Wake, Waker};
use std::thread::Thread;
use std::time::Instant;

use super::liveness::{CHECK, Probe, Verdict, earliest};
use super::state::Activity;

/// What the sweeper is told.
enum Notice {
    /// A call started at this instant on a connection that was not watched.
    Busy(Arc<Activity>, Instant),
    /// The ping of a connection may have been answered.
    Answered(Weak<Activity>),
}

struct Sweeper {
    notices: mpsc::Sender<Notice>,
    thread: Thread,
    /// Set while the thread sleeps with nothing to watch: only a notice wakes it.
    sleeping: Arc<AtomicBool>,
}

/// `None` if the thread could not be started (said once, at ERROR).
static SWEEPER: LazyLock<Option<Sweeper>> = LazyLock::new(|| {
    let (notices, inbox) = mpsc::channel();
    let sleeping = Arc::new(AtomicBool::new(false));
    let flag = sleeping.clone();
    match std::thread::Builder::new()
        .name("dtmdriver-liveness".into())
        .spawn(move || sweep_forever(&inbox, &flag))
    {
        Ok(handle) => Some(Sweeper {
            notices,
            thread: handle.thread().clone(),
            sleeping,
        }),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the connections' liveness thread: \
                frozen endpoints will not be taken out of rotation (raise the thread limit)");
            None
        }
    }
});

/// Has the sweeper watch the connection of `activity` (a call started on it, or it
/// pings while idle), unless it does already. O(1), no lock.
pub(super) fn enlist(activity: &Arc<Activity>) {
    // SeqCst, as `keep_watching`'s clearing of the flag and the pending count: see there.
    if activity.watched.load(Ordering::SeqCst) || activity.watched.swap(true, Ordering::SeqCst) {
        return;
    }
    if let Some(sweeper) = SWEEPER.as_ref() {
        let _ = sweeper
            .notices
            .send(Notice::Busy(activity.clone(), Instant::now()));
        // Pairs with the fence in `sweep_forever`: either the thread sees the notice
        // before it sleeps, or this sees it asleep.
        fence(Ordering::SeqCst);
        if sweeper.sleeping.load(Ordering::Relaxed)
            && sweeper.sleeping.swap(false, Ordering::SeqCst)
        {
            sweeper.thread.unpark();
        }
    }
}

/// Watches a live connection (its probe, made with the waker that brings its pings'
/// answers to the sweeper) until the returned guard is dropped.
pub(super) fn watch(activity: &Arc<Activity>, probe: impl FnOnce(Waker) -> Probe) -> Watching {
    let probe = probe(Waker::from(Arc::new(Answered(Arc::downgrade(activity)))));
    let while_idle = probe.watched_while_idle();
    *lock(&activity.probe) = Some(probe);
    if while_idle {
        enlist(activity);
    }
    Watching {
        activity: activity.clone(),
    }
}

/// Ends the watch of a connection when dropped (the connection ended).
pub(super) struct Watching {
    activity: Arc<Activity>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        lock(&self.activity.probe).take();
    }
}

/// The waker of a connection's ping: tells the sweeper, and wakes it.
struct Answered(Weak<Activity>);

impl Wake for Answered {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(sweeper) = SWEEPER.as_ref() {
            let _ = sweeper.notices.send(Notice::Answered(self.0.clone()));
            sweeper.sleeping.store(false, Ordering::SeqCst);
            sweeper.thread.unpark();
        }
    }
}

fn lock(probe: &Mutex<Option<Probe>>) -> MutexGuard<'_, Option<Probe>> {
    probe.lock().unwrap_or_else(|e| e.into_inner())
}

/// Connections set aside until a due time: idle ones watched only for their
/// keepalive (see [`Probe::idle_until`]), earliest first.
#[derive(Default)]
struct SetAside(BinaryHeap<Reverse<Due>>);

/// One connection set aside, ordered by its due time alone.
struct Due(Instant, Arc<Activity>);

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

impl SetAside {
    /// Sets the connection of `probe` aside until `until`, unless an entry of it falls
    /// due by then already (that entry looks again when it does).
    fn put(&mut self, probe: &mut Probe, activity: &Arc<Activity>, until: Instant) {
        if probe.set_aside.is_some_and(|at| at <= until) {
            return;
        }
        probe.set_aside = Some(until);
        self.0.push(Reverse(Due(until, activity.clone())));
    }

    fn next_due(&self) -> Option<Instant> {
        self.0.peek().map(|Reverse(Due(at, _))| *at)
    }

    /// Checks every connection due by `now`: one still idle is set aside again, one
    /// that pinged (or found a call pending) joins the watched; stale entries (the
    /// connection ended, or was set aside again under another time) are dropped.
    fn wake_due(&mut self, now: Instant, watched: &mut Vec<Arc<Activity>>) {
        while self.next_due().is_some_and(|at| at <= now) {
            let Some(Reverse(Due(at, activity))) = self.0.pop() else {
                return;
            };
            let mut slot = lock(&activity.probe);
            let Some(probe) = slot.as_mut().filter(|p| p.set_aside == Some(at)) else {
                continue;
            };
            probe.set_aside = None;
            // Watched (or about to be) already: the watch sets it aside again when idle.
            if activity.watched.load(Ordering::SeqCst) {
                continue;
            }
            match check(probe, now, &activity) {
                Verdict::Closed => drop(slot.take()),
                Verdict::Idle => {}
                Verdict::Watch(_) => match probe.idle_until(&activity) {
                    Some(until) => self.put(probe, &activity, until),
                    None => {
                        drop(slot);
                        if !activity.watched.swap(true, Ordering::SeqCst) {
                            watched.push(activity);
                        }
                    }
                },
            }
        }
    }
}

/// Checks done so far by the sweeper, for `__private::liveness_checks`.
static CHECKS: AtomicU64 = AtomicU64::new(0);

/// How many connection checks the sweeper has made in this process.
pub(crate) fn checks() -> u64 {
    CHECKS.load(Ordering::Relaxed)
}

fn check(probe: &mut Probe, now: Instant, activity: &Activity) -> Verdict {
    CHECKS.fetch_add(1, Ordering::Relaxed);
    probe.check(now, activity)
}

fn sweep_forever(inbox: &mpsc::Receiver<Notice>, sleeping: &AtomicBool) {
    let mut watched: Vec<Arc<Activity>> = Vec::new();
    let mut set_aside = SetAside::default();
    let mut next_sweep: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let wake = earliest(next_sweep, set_aside.next_due());
        if next_sweep.is_none() {
            // Nothing watched: only a notice (or a set-aside connection's due time)
            // wakes the thread.
            sleeping.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            match inbox.try_recv() {
                Ok(notice) => take_in(notice, &mut watched),
                Err(_) => match wake {
                    Some(at) => std::thread::park_timeout(at.saturating_duration_since(now)),
                    None => std::thread::park(),
                },
            }
            sleeping.store(false, Ordering::SeqCst);
        } else if let Some(at) = wake.filter(|&at| at > now) {
            std::thread::park_timeout(at - now);
        }
        while let Ok(notice) = inbox.try_recv() {
            take_in(notice, &mut watched);
        }
        let now = Instant::now();
        set_aside.wake_due(now, &mut watched);
        if watched.is_empty() {
            next_sweep = None;
            continue;
        }
        let at = *next_sweep.get_or_insert(now + CHECK);
        if now < at {
            continue;
        }
        let mut due = None;
        watched.retain(|activity| {
            {
                let mut slot = lock(&activity.probe);
                let Some(probe) = slot.as_mut() else {
                    return keep_watching(activity);
                };
                match check(probe, now, activity) {
                    Verdict::Watch(next) => match probe.idle_until(activity) {
                        Some(until) => set_aside.put(probe, activity, until),
                        None => {
                            due = earliest(due, next.filter(|&d| d > now));
                            return true;
                        }
                    },
                    Verdict::Closed => drop(slot.take()),
                    Verdict::Idle => {}
                }
            }
            keep_watching(activity)
        });
        let tick = now + CHECK;
        next_sweep = (!watched.is_empty()).then(|| due.map_or(tick, |d| d.min(tick)));
    }
}

/// Takes a notice in: a newly busy connection joins the watch (its silence counted
/// from its call's start); an answered ping is taken at once.
fn take_in(notice: Notice, watched: &mut Vec<Arc<Activity>>) {
    match notice {
        Notice::Busy(activity, at) => {
            if let Some(probe) = lock(&activity.probe).as_mut() {
                probe.busy_since(at, &activity);
            }
            watched.push(activity);
        }
        Notice::Answered(activity) => {
            let Some(activity) = activity.upgrade() else {
                return;
            };
            let mut slot = lock(&activity.probe);
            if slot.as_mut().and_then(|probe| probe.take_answer(&activity)) == Some(false) {
                slot.take();
            }
        }
    }
}

/// Whether to keep watching a connection found with nothing to watch: only if a call
/// started on it meanwhile and no notice of it is on its way.
///
/// The flag is cleared before the pending count is read, and a call counts itself
/// before it reads the flag (both sequentially consistent): a call starting now either
/// finds the flag cleared and queues the connection again, or is counted here, and
/// then whoever sets the flag back keeps the connection watched (this sweep, or the
/// queued notice). No busy connection goes unwatched.
fn keep_watching(activity: &Activity) -> bool {
    activity.watched.store(false, Ordering::SeqCst);
    activity.pending.load(Ordering::SeqCst) > 0 && !activity.watched.swap(true, Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Waits up to 2 s (40 sweeps) for every activity's flag to say `watched`.
    fn settles(activities: &[Arc<Activity>], watched: impl Fn(&Activity) -> bool) -> bool {
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            if activities
                .iter()
                .all(|a| a.watched.load(Ordering::SeqCst) == watched(a))
            {
                return true;
            }
            if Instant::now() > until {
                return false;
            }
            std::thread::sleep(CHECK);
        }
    }

    #[test]
    fn a_busy_connection_is_always_watched_and_an_idle_one_let_go() {
        let activities: Vec<Arc<Activity>> = (0..8).map(|_| Arc::default()).collect();
        // Calls starting and ending as fast as four threads can, racing the sweeps;
        // each thread leaves a call pending on one activity of two.
        std::thread::scope(|s| {
            for t in 0..4 {
                let activities = &activities;
                s.spawn(move || {
                    let until = Instant::now() + Duration::from_millis(600);
                    let mut i = t;
                    while Instant::now() < until {
                        let a = &activities[i % activities.len()];
                        a.call_started();
                        a.call_ended();
                        i += 1;
                    }
                    activities[2 * t].call_started();
                });
            }
        });
        // Lost: a connection with a call pending that the sweeper does not watch.
        assert!(
            settles(&activities, |a| a.pending() > 0),
            "pending: {:?}, watched: {:?}",
            activities.iter().map(|a| a.pending()).collect::<Vec<_>>(),
            activities
                .iter()
                .map(|a| a.watched.load(Ordering::SeqCst))
                .collect::<Vec<_>>()
        );
        // Stuck: an idle connection that stays flagged (and so never queued again).
        for t in 0..4 {
            activities[2 * t].call_ended();
        }
        assert!(settles(&activities, |_| false), "{activities:?}");
    }

    #[test]
    fn connections_used_once_leave_the_watch() {
        let activities: Vec<Arc<Activity>> = (0..2000).map(|_| Arc::default()).collect();
        for a in &activities {
            a.call_started();
            a.call_ended();
        }
        assert!(settles(&activities, |_| false));
    }
}
