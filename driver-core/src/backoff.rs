//! Exponential backoff, the one every retry loop of the project uses: registry engines
//! reconnecting a watch or re-registering, and the channel's connections redialling an
//! endpoint.
//!
//! Delays grow by a factor (2 unless told otherwise) from `first` up to `max`, each
//! optionally spread by a random ± jitter so that many clients do not retry in step.
//! Engines use a short `max` (half a second), no jitter, so that a registry coming back
//! is noticed at once, which the fault tests require; connections grow 1.6× with ±20%
//! jitter, as grpc-go's connection backoff does.

use std::time::Duration;

/// Doubling delays between attempts, capped; [`reset`](Backoff::reset) after a success.
///
/// ```
/// use std::time::Duration;
/// use dtmdriver_core::backoff::Backoff;
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
    factor: f64,
    jitter: f64,
}

impl Backoff {
    /// The engines' default: 50 ms, doubling, at most 500 ms.
    pub const ENGINE: (Duration, Duration) =
        (Duration::from_millis(50), Duration::from_millis(500));

    /// Starts at `first`, doubles, never exceeds `max`; no jitter.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first.min(max),
            factor: 2.0,
            jitter: 0.0,
        }
    }

    /// Grows the delay by `factor` per attempt instead of doubling it (values below 1,
    /// and non-numbers, count as 1: a constant delay).
    ///
    /// ```
    /// use std::time::Duration;
    /// use dtmdriver_core::backoff::Backoff;
    /// let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).factor(1.5);
    /// assert_eq!(b.next_delay(), Duration::from_millis(100));
    /// assert_eq!(b.next_delay(), Duration::from_millis(150));
    /// ```
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = if factor.is_finite() {
            factor.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// Spreads each delay at random by up to ± `fraction` of it (clamped to 0..=1), so
    /// that many clients failing together do not retry in step. The spread applies
    /// after the cap: a delay at `max` may come out up to `fraction` above it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dtmdriver_core::backoff::Backoff;
    /// let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).jitter(0.2);
    /// let d = b.next_delay();
    /// assert!(d >= Duration::from_millis(80) && d <= Duration::from_millis(120));
    /// ```
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
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
        self.next = Duration::try_from_secs_f64(self.next.as_secs_f64() * self.factor)
            .unwrap_or(self.max)
            .min(self.max);
        if self.jitter == 0.0 {
            return d;
        }
        let spread = 1.0 - self.jitter + rand::random::<f64>() * 2.0 * self.jitter;
        Duration::try_from_secs_f64(d.as_secs_f64() * spread).unwrap_or(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_and_jitter_stay_within_their_bounds() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000)).factor(1.6).jitter(0.2);
        let mut nominal = 100.0f64;
        for _ in 0..12 {
            let d = b.next_delay().as_secs_f64() * 1000.0;
            assert!(
                d >= nominal * 0.8 - 1e-6 && d <= nominal * 1.2 + 1e-6,
                "{d} vs {nominal}"
            );
            nominal = (nominal * 1.6).min(1000.0);
        }
        // Hostile settings: no panic, no shrinking, no delay beyond the cap.
        let mut b = Backoff::new(ms(10), ms(50))
            .factor(f64::NAN)
            .jitter(f64::INFINITY);
        assert_eq!(b.next_delay(), ms(10));
        assert_eq!(b.next_delay(), ms(10));
        let mut b = Backoff::new(Duration::MAX, Duration::MAX).factor(1e300);
        assert_eq!(b.next_delay(), Duration::MAX);
        assert_eq!(b.next_delay(), Duration::MAX);
    }
}
