//! One log line per interval for errors that can repeat on every request or every
//! accept (a full disk under the access log, a worker out of file descriptors): the
//! first occurrence is logged at once, later ones within the interval only counted,
//! and the next line says how many were left out. Lock-free, so a hot error path
//! costs two atomic operations. [`refused_request`]: the WARNING line of a refused
//! request (a malformed head in `server/`, a header `--header-map refuse` turns away
//! in `dispatch/`), a few per second at most.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::contract::Peer;

/// How often a repeating error is logged.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Decides whether a repeating error is logged now.
#[derive(Debug, Default)]
pub struct Throttle {
    /// Milliseconds since [`epoch`] before which nothing more is logged
    /// (0: log the next one).
    quiet_until: AtomicU64,
    /// Occurrences not logged since the last line.
    skipped: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Throttle {
    pub const fn new() -> Throttle {
        Throttle {
            quiet_until: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// `Some(skipped)`, the number of occurrences left out since the last line, if
    /// this one should be logged; `None` if it is only counted.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(epoch().elapsed())
    }

    fn allow_at(&self, now: Duration) -> Option<u64> {
        // +1 so that the first call (now = 0) is not mistaken for "quiet until 0".
        let now_ms = now.as_millis() as u64 + 1;
        let until = self.quiet_until.load(Ordering::Relaxed);
        if now_ms < until
            || self
                .quiet_until
                .compare_exchange(
                    until,
                    now_ms + INTERVAL.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.skipped.swap(0, Ordering::Relaxed))
    }
}

/// Refused requests logged per second at most (per worker); the rest are counted
/// and the count is given on the next line that is logged.
const WARNINGS_PER_SECOND: u64 = 10;
static WARN_SECOND: AtomicU64 = AtomicU64::new(0);
static WARN_IN_SECOND: AtomicU64 = AtomicU64::new(0);
static WARN_SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// One WARNING line for a malformed or refused request, naming the peer and the
/// reason; at most [`WARNINGS_PER_SECOND`], so a flood leaves a trace (with how many
/// lines it skipped) without filling the disk.
pub fn refused_request(peer: &Peer, reason: &dyn std::fmt::Display) {
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if WARN_SECOND.swap(second, Ordering::Relaxed) != second {
        WARN_IN_SECOND.store(0, Ordering::Relaxed);
    }
    if WARN_IN_SECOND.fetch_add(1, Ordering::Relaxed) >= WARNINGS_PER_SECOND {
        WARN_SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let suppressed = WARN_SUPPRESSED.swap(0, Ordering::Relaxed);
    let peer = match peer {
        Peer::Tcp(a) => a.to_string(),
        Peer::Unix => "unix socket".to_string(),
    };
    if suppressed > 0 {
        tracing::warn!(%peer, %reason, suppressed, "malformed request refused ({suppressed} more not logged)");
    } else {
        tracing::warn!(%peer, %reason, "malformed request refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_counting_the_rest() {
        let t = Throttle::new();
        assert_eq!(t.allow_at(Duration::ZERO), Some(0));
        for ms in 1..100 {
            assert_eq!(t.allow_at(Duration::from_millis(ms)), None);
        }
        assert_eq!(t.allow_at(INTERVAL - Duration::from_millis(2)), None);
        assert_eq!(t.allow_at(INTERVAL), Some(100));
        assert_eq!(t.allow_at(INTERVAL + Duration::from_millis(1)), None);
        assert_eq!(t.allow_at(INTERVAL * 3), Some(1));
    }
}
