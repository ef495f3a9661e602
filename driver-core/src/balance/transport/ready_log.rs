//! [`ReadyLog`]: which connections entered or left the rotation, for one channel.
//!
//! Contract: every connection a channel watches ([`Connection::watch_ready`]) appends
//! its address here each time its ready flag changes, after the flag's store, under
//! a count that rises by one per entry. A reader that has caught up to count `e` gets,
//! from [`since`](ReadyLog::since), the count now and the addresses of every flag
//! change after `e` (an address may appear more than once), or `None` when the log no
//! longer holds all of them: it keeps the newest [`capacity`](ReadyLog::set_capacity)
//! entries (at least [`MIN_CAPACITY`]), and a reader that fell further behind reads
//! every slot's flag instead.
//!
//! Why: the channel's list of ready slots used to follow a bare counter, so one flag
//! change meant reading every slot's connection again (three pointers away and cold:
//! 5 ms for 100,000 endpoints, 270 µs for 10,000, on this project's 2-core machine),
//! on the next call, under a lock the other calls waited on. With the addresses the
//! list is brought up to date by what changed (see `table`). Sized to the set
//! (1/16 of it), a reader that must read every flag has first missed at least
//! N / 16 changes, so a change never costs more than about 16 reads of a flag.
//!
//! The log also wakes the channel's calls waiting for an endpoint
//! ([`state_changed`](ReadyLog::state_changed)) whenever a watched connection publishes
//! any state (connecting, ready, ejected, unresponsive): one wait per call, whatever
//! the number of endpoints, where each waiting call used to subscribe to every
//! connection of the set.
//!
//! [`Connection::watch_ready`]: super::connection::Connection::watch_ready

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The least number of entries a log keeps.
pub(crate) const MIN_CAPACITY: usize = 16;

/// A channel's record of its connections' ready-flag changes; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct ReadyLog {
    /// Entries so far (the count of the newest entry).
    count: AtomicU64,
    /// How many entries are kept (beyond [`MIN_CAPACITY`]).
    capacity: AtomicUsize,
    /// The newest entries, oldest first, each with its count.
    entries: Mutex<VecDeque<(u64, Arc<str>)>>,
    /// Woken whenever a watched connection publishes a state.
    states: Notify,
}

impl ReadyLog {
    /// Entries so far: a reader whose list reflects this count is up to date.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Keeps about `capacity` entries (never fewer than [`MIN_CAPACITY`]).
    pub(crate) fn set_capacity(&self, capacity: usize) {
        self.capacity
            .store(capacity.max(MIN_CAPACITY), Ordering::Relaxed);
    }

    /// Notes that the ready flag of the connection to `addr` changed (call after the
    /// flag's store).
    pub(crate) fn record(&self, addr: &Arc<str>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let cap = self.capacity.load(Ordering::Relaxed).max(MIN_CAPACITY);
        while entries.len() >= cap {
            entries.pop_front();
        }
        // Counted under the lock: entries stay in count order, and a reader that
        // sees the count sees the entry.
        let n = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        entries.push_back((n, addr.clone()));
        if entries.capacity() > 4 * cap {
            entries.shrink_to(2 * cap);
        }
    }

    /// Wakes every call waiting in [`Self::state_changed`].
    pub(crate) fn announce_state(&self) {
        self.states.notify_waiters();
    }

    /// Resolves at the next state a watched connection publishes after it was created
    /// and enabled (`Notified::enable`): enable it before reading the states.
    pub(crate) fn state_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.states.notified()
    }

    /// The count now and the addresses whose flag changed after count `seen`, or
    /// `None` if some of those entries are no longer kept.
    pub(crate) fn since(&self, seen: u64) -> Option<(u64, Vec<Arc<str>>)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.count.load(Ordering::Acquire);
        if seen > now {
            return None;
        }
        let missing = (now - seen) as usize;
        if missing > entries.len() {
            return None;
        }
        let changed = entries
            .iter()
            .skip(entries.len() - missing)
            .map(|(_, addr)| addr.clone())
            .collect();
        Some((now, changed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_gets_what_changed_since_or_is_told_it_fell_behind() {
        let log = ReadyLog::default();
        let a: Arc<str> = "10.0.0.1:80".into();
        let b: Arc<str> = "10.0.0.2:80".into();
        assert_eq!(log.since(0), Some((0, vec![])));
        log.record(&a);
        log.record(&b);
        log.record(&a);
        assert_eq!(log.count(), 3);
        assert_eq!(log.since(1), Some((3, vec![b.clone(), a.clone()])));
        assert_eq!(log.since(3), Some((3, vec![])));
        // A list never built (its count past every entry) reads every flag.
        assert_eq!(log.since(u64::MAX), None);
        // Only the newest MIN_CAPACITY entries are kept.
        for _ in 0..MIN_CAPACITY {
            log.record(&b);
        }
        assert_eq!(log.since(2), None);
        let (now, changed) = log.since(3).expect("still kept");
        assert_eq!(
            (now, changed.len()),
            (3 + MIN_CAPACITY as u64, MIN_CAPACITY)
        );
        assert!(changed.iter().all(|c| *c == b));
    }

    #[test]
    fn the_log_keeps_a_share_of_the_set() {
        let log = ReadyLog::default();
        log.set_capacity(100);
        let a: Arc<str> = "10.0.0.1:80".into();
        for _ in 0..250 {
            log.record(&a);
        }
        assert_eq!(log.since(150).map(|(_, c)| c.len()), Some(100));
        assert_eq!(log.since(149), None);
    }
}
