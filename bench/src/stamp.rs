//! The queue-time stamp the generator adds so that it can stand in for nginx.
//!
//! nginx's `proxy_set_header X-RequestTime $msec;` sends the wall-clock time in seconds
//! with millisecond resolution (`1700000000.123`). rwsgi subtracts that stamp from its
//! own dispatch time, so the generator must produce exactly that format, from the wall
//! clock, and cheaply enough to be done on every request.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest `$msec` value we produce: 20 digits of seconds, a dot and 3 digits.
const MAX_LEN: usize = 24;

/// Maps the monotonic clock the generator schedules with onto the wall clock.
///
/// Scheduling uses [`Instant`] (it never jumps), but the stamp must be wall-clock time:
/// one pair of readings taken at start converts any later instant without a syscall.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    /// Monotonic reading taken together with `wall`.
    base_instant: Instant,
    /// Wall-clock reading taken together with `base_instant`, as time since the epoch.
    base_wall: Duration,
}

impl WallClock {
    /// Reads both clocks now.
    pub fn now() -> Self {
        let base_instant = Instant::now();
        let base_wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Self {
            base_instant,
            base_wall,
        }
    }

    /// Wall-clock time (since the epoch) of a monotonic instant.
    pub fn wall(&self, at: Instant) -> Duration {
        if at >= self.base_instant {
            self.base_wall + (at - self.base_instant)
        } else {
            self.base_wall.saturating_sub(self.base_instant - at)
        }
    }
}

/// A formatted `$msec` stamp, kept on the stack: formatting it allocates nothing.
#[derive(Clone, Copy)]
pub struct Msec {
    buf: [u8; MAX_LEN],
    len: usize,
}

impl Msec {
    /// Formats a time since the epoch as nginx's `$msec`: seconds, a dot, milliseconds
    /// (truncated, as nginx does).
    pub fn new(since_epoch: Duration) -> Self {
        let mut buf = [0u8; MAX_LEN];
        let mut secs = since_epoch.as_secs();
        let millis = since_epoch.subsec_millis();
        // Seconds are written backwards into a scratch area, then moved to the front.
        let mut digits = [0u8; 20];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (secs % 10) as u8;
            n += 1;
            secs /= 10;
            if secs == 0 {
                break;
            }
        }
        for i in 0..n {
            buf[i] = digits[n - 1 - i];
        }
        buf[n] = b'.';
        buf[n + 1] = b'0' + (millis / 100) as u8;
        buf[n + 2] = b'0' + (millis / 10 % 10) as u8;
        buf[n + 3] = b'0' + (millis % 10) as u8;
        Self { buf, len: n + 4 }
    }

    /// The stamp's bytes, ASCII only, valid as an HTTP header value.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Debug for Msec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(self.as_bytes()).unwrap_or("?"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(d: Duration) -> String {
        String::from_utf8(Msec::new(d).as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn formats_like_nginx_msec() {
        assert_eq!(
            fmt(Duration::from_millis(1_700_000_000_123)),
            "1700000000.123"
        );
        assert_eq!(
            fmt(Duration::from_millis(1_700_000_000_005)),
            "1700000000.005"
        );
        assert_eq!(
            fmt(Duration::from_millis(1_700_000_000_050)),
            "1700000000.050"
        );
        assert_eq!(fmt(Duration::ZERO), "0.000");
    }

    #[test]
    fn truncates_sub_millisecond_parts() {
        assert_eq!(fmt(Duration::new(12, 999_999_999)), "12.999");
    }

    #[test]
    fn handles_the_largest_duration() {
        let s = fmt(Duration::new(u64::MAX, 0));
        assert_eq!(s, format!("{}.000", u64::MAX));
    }

    #[test]
    fn wall_clock_follows_the_monotonic_clock() {
        let clock = WallClock::now();
        let later = clock.base_instant + Duration::from_millis(1500);
        assert_eq!(
            clock.wall(later) - clock.base_wall,
            Duration::from_millis(1500)
        );
        let earlier = clock.base_instant - Duration::from_millis(10);
        assert_eq!(
            clock.base_wall - clock.wall(earlier),
            Duration::from_millis(10)
        );
    }

    #[test]
    fn wall_clock_is_close_to_system_time() {
        let clock = WallClock::now();
        let sys = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let ours = clock.wall(Instant::now());
        let diff = sys.abs_diff(ours);
        assert!(diff < Duration::from_millis(50), "{diff:?}");
    }
}
