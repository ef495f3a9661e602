//! How many endpoint events the process logs above DEBUG: [`admit`].
//!
//! Contract: of the events of endpoints (ejected, connection lost, readmitted, not
//! answering, answering again), at most [`SHOWN`] in a window of [`WINDOW`] are logged
//! at their own level (WARN or INFO), process-wide; the rest go to DEBUG, so a DEBUG log
//! still holds every one. The first event held back in a window says so in one WARN
//! line, and the first event after such a window counts them in one INFO line. A
//! channel's `status()` shows every endpoint's state, whatever the log shows.
//!
//! Why: an address's connect failures are reported once per outage (`task`), but ten
//! thousand endpoints failing together (a network partition, a data centre restarting)
//! would still write ten thousand WARN lines in a few seconds, and as many INFO lines
//! when they come back. A log that grows with the size of the set is a log nobody reads
//! and a disk that fills.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Endpoint events logged at their own level per window.
pub(crate) const SHOWN: u32 = 20;

/// The window: it starts at the first event after the last one ended.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// What to do with one event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Log it at its level; `hidden_before` events of the last window went to DEBUG.
    Show { hidden_before: u64 },
    /// Log it at DEBUG; `first` if it is the first held back in this window.
    Hide { first: bool },
}

/// The count of one window.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    started: Option<Instant>,
    shown: u32,
    hidden: u64,
}

impl Budget {
    /// The verdict on an event at `now`.
    pub(crate) fn admit(&mut self, now: Instant) -> Verdict {
        let mut hidden_before = 0;
        if self
            .started
            .is_none_or(|s| now.saturating_duration_since(s) >= WINDOW)
        {
            hidden_before = self.hidden;
            *self = Self {
                started: Some(now),
                ..Self::default()
            };
        }
        if self.shown < SHOWN {
            self.shown += 1;
            return Verdict::Show { hidden_before };
        }
        self.hidden += 1;
        Verdict::Hide {
            first: self.hidden == 1,
        }
    }
}

static BUDGET: Mutex<Budget> = Mutex::new(Budget {
    started: None,
    shown: 0,
    hidden: 0,
});

/// Whether to log an endpoint event at its own level (else at DEBUG); logs the notes
/// of the [module docs](self) as they fall due.
pub(crate) fn admit() -> bool {
    let verdict = BUDGET
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .admit(Instant::now());
    match verdict {
        Verdict::Show { hidden_before } => {
            if hidden_before > 0 {
                tracing::info!(
                    hidden = hidden_before,
                    "{hidden_before} endpoint events of the last {} s were logged at DEBUG only",
                    WINDOW.as_secs()
                );
            }
            true
        }
        Verdict::Hide { first } => {
            if first {
                tracing::warn!(
                    "more than {SHOWN} endpoint events in {} s: the rest of them go to DEBUG \
                     (a channel's status() shows every endpoint's state)",
                    WINDOW.as_secs()
                );
            }
            false
        }
    }
}

/// Logs an endpoint event at `$level` (a `tracing::Level` constant) if [`admit`] lets
/// it, else at DEBUG: one message, written once.
macro_rules! endpoint_event {
    ($level:expr, $($event:tt)+) => {
        if $crate::balance::transport::log_budget::admit() {
            tracing::event!($level, $($event)+)
        } else {
            tracing::event!(tracing::Level::DEBUG, $($event)+)
        }
    };
}
pub(crate) use endpoint_event;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_shows_its_first_events_and_the_next_one_counts_the_rest() {
        let mut budget = Budget::default();
        let t0 = Instant::now();
        for _ in 0..SHOWN {
            assert_eq!(budget.admit(t0), Verdict::Show { hidden_before: 0 });
        }
        assert_eq!(budget.admit(t0), Verdict::Hide { first: true });
        for _ in 0..4 {
            assert_eq!(
                budget.admit(t0 + WINDOW / 2),
                Verdict::Hide { first: false }
            );
        }
        // A new window starts at the first event after this one ended.
        let t1 = t0 + WINDOW + Duration::from_millis(1);
        assert_eq!(budget.admit(t1), Verdict::Show { hidden_before: 5 });
        assert_eq!(budget.admit(t1), Verdict::Show { hidden_before: 0 });
        // A quiet window holds nothing back and has nothing to count.
        assert_eq!(
            budget.admit(t1 + WINDOW * 3),
            Verdict::Show { hidden_before: 0 }
        );
    }
}
