//! Exponential backoff for registry engines: reconnecting a watch, re-registering.
//!
//! Delays double from `first` up to `max`. Engines use a short `max` (half a second)
//! so that a registry coming back is noticed at once, which the fault tests require.

use std::time::Duration;

/// Doubling delays between attempts, capped; [`reset`](Backoff::reset) after a success.
///
/// ```
/// use std::time::Duration;
/// use driver_core::backoff::Backoff;
/// let mut b = Backoff::new(Duration::from_millis(50), Duration::from_millis(150));
/// assert_eq!(b.next_delay(), Duration::from_millis(50));
/// assert_eq!(b.next_delay(), Duration::from_millis(100));
/// assert_eq!(b.next_delay(), Duration::from_millis(150));
/// assert_eq!(b.next_delay(), Duration::from_millis(150));
/// b.reset();
/// assert_eq!(b.next_delay(), Duration::from_millis(50));
/// ```
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// The engines' default: 50 ms, doubling, at most 500 ms.
    pub const ENGINE: (Duration, Duration) =
        (Duration::from_millis(50), Duration::from_millis(500));

    /// Starts at `first`, doubles, never exceeds `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first.min(max),
        }
    }

    /// The engines' default backoff, see [`ENGINE`](Self::ENGINE).
    pub fn for_engine() -> Self {
        Self::new(Self::ENGINE.0, Self::ENGINE.1)
    }

    /// Starts over from the first delay.
    pub fn reset(&mut self) {
        self.next = self.first.min(self.max);
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}
