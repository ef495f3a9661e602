//! Bounded waiting for a condition, for tests that watch something change.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`wait_for`] checks; small, so measured waits are precise to a few ms.
const STEP: Duration = Duration::from_millis(2);

/// Checks `check` until it returns true and returns how long that took; panics naming
/// `what` once `within` has passed.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let start = std::time::Instant::now();
/// let took = test_support::wait_for("50 ms to pass", std::time::Duration::from_secs(1), || async {
///     start.elapsed().as_millis() >= 50
/// })
/// .await;
/// assert!(took.as_millis() >= 50);
/// # }
/// ```
pub async fn wait_for<F, Fut>(what: &str, within: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(STEP).await;
    }
}
