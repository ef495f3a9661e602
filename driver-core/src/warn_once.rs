//! [`first_warning`]: whether a decoder's warning about a registry entry is news to this
//! process; [`warn_once!`](crate::warn_once!): the log line that follows from it.
//!
//! Contract: `first_warning(subject, why)` is true the first time `subject` (an
//! instance, a key) is reported, and again when it is reported for another reason;
//! false while it is reported again for the same one. The process remembers the last
//! [`REMEMBERED`] subjects and then forgets them all at once, so a fault that persists
//! is said again at most once per that many other subjects. Callers log at WARN when it
//! is true and at DEBUG otherwise, so a DEBUG log still holds every occurrence:
//! [`warn_once!`](crate::warn_once!) writes that line.
//!
//! Why: consul's blocking queries answer with the whole service on every change, so a
//! decoder meets the same undialable instance on every answer, and every subscriber of
//! the service decodes it: a few bad registrations in a busy service wrote a WARN line
//! per instance, per change, per subscriber.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{LazyLock, Mutex};

/// How many subjects the process remembers before it forgets them all.
pub const REMEMBERED: usize = 4096;

/// Each subject's hash with the hash of the reason it was last reported for.
static SEEN: LazyLock<(RandomState, Mutex<HashMap<u64, u64>>)> =
    LazyLock::new(|| (RandomState::new(), Mutex::new(HashMap::new())));

/// Whether `subject` has not been reported for `why` yet; see the [module docs](self).
///
/// ```
/// use dtmdriver_core::warn_once::first_warning;
/// assert!(first_warning("consul instance doc-a", "no port"));
/// assert!(!first_warning("consul instance doc-a", "no port"));
/// assert!(first_warning("consul instance doc-a", "no address"));
/// assert!(first_warning("consul instance doc-b", "no address"));
/// ```
pub fn first_warning(subject: &str, why: &str) -> bool {
    let (hasher, seen) = &*SEEN;
    let (subject, why) = (hasher.hash_one(subject), hasher.hash_one(why));
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    if seen.get(&subject) == Some(&why) {
        return false;
    }
    if seen.len() >= REMEMBERED {
        seen.clear();
    }
    seen.insert(subject, why);
    true
}

/// Logs a `tracing` event at WARN when [`first_warning`]`(subject, why)` holds and at
/// DEBUG otherwise: `warn_once!(subject, why, fields…, "message")`, the fields and
/// message as `tracing::warn!` takes them. `subject` and `why` are anything that
/// derefs to `str`.
///
/// ```
/// let (id, why) = ("doc-c", "no port");
/// dtmdriver_core::warn_once!(format!("my instance {id}"), why, %id, %why, "skipping an instance");
/// assert!(!dtmdriver_core::warn_once::first_warning("my instance doc-c", "no port"));
/// ```
#[macro_export]
macro_rules! warn_once {
    ($subject:expr, $why:expr, $($event:tt)+) => {
        if $crate::warn_once::first_warning(&$subject, &$why) {
            $crate::__private::tracing::warn!($($event)+)
        } else {
            $crate::__private::tracing::debug!($($event)+)
        }
    };
}
