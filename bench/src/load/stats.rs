//! What one generator thread counts, and how threads' counts merge into one.
//!
//! Each thread owns a [`Stats`] (no sharing, no atomics on the hot path); the run
//! merges them once at the end. Latency goes into an HDR histogram so that merging is
//! exact and percentiles stay within 0.1%.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency the histogram holds, µs (1 hour); larger values are clamped.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Why a request did not count as a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The TCP connect or the HTTP handshake failed.
    Connect,
    /// No complete response within the request timeout.
    Timeout,
    /// A 4xx answer.
    Status4xx,
    /// A 5xx answer.
    Status5xx,
    /// Any other non-2xx answer (1xx, 3xx).
    StatusOther,
    /// The server closed the connection before the response was complete.
    Closed,
    /// The response could not be parsed as HTTP/1.1.
    Parse,
    /// An I/O error while writing the request or reading the response head.
    Io,
    /// An error while reading the response body.
    Body,
}

impl ErrorKind {
    /// Every kind, in the order of [`ErrorCounts`].
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Status4xx,
        ErrorKind::Status5xx,
        ErrorKind::StatusOther,
        ErrorKind::Closed,
        ErrorKind::Parse,
        ErrorKind::Io,
        ErrorKind::Body,
    ];

    /// Name used in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Status4xx => "status_4xx",
            ErrorKind::Status5xx => "status_5xx",
            ErrorKind::StatusOther => "status_other",
            ErrorKind::Closed => "closed",
            ErrorKind::Parse => "parse",
            ErrorKind::Io => "io",
            ErrorKind::Body => "body",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Error counters, one per [`ErrorKind`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts([u64; 9]);

impl ErrorCounts {
    /// Counts one error.
    pub fn add(&mut self, kind: ErrorKind) {
        self.0[kind.index()] += 1;
    }

    /// The count of one kind.
    pub fn get(&self, kind: ErrorKind) -> u64 {
        self.0[kind.index()]
    }

    /// All errors.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Adds another thread's counts.
    pub fn merge(&mut self, other: &ErrorCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }

    /// `(name, count)` of the kinds that occurred.
    pub fn nonzero(&self) -> Vec<(&'static str, u64)> {
        ErrorKind::ALL
            .iter()
            .filter(|k| self.get(**k) > 0)
            .map(|k| (k.name(), self.get(*k)))
            .collect()
    }
}

/// Counts for one second of the run, indexed by seconds since the start.
///
/// Offered load is attributed to the second a request was *due*; completions,
/// errors and latency to the second the answer arrived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Requests due in this second.
    pub offered: u64,
    /// Successful answers that arrived in this second.
    pub ok: u64,
    /// Failed requests that ended in this second.
    pub errors: u64,
    /// Sum of the latencies (due → answer) of `ok`, µs.
    pub latency_sum_us: u64,
    /// Largest latency among `ok`, µs.
    pub latency_max_us: u64,
    /// Sum of the waits between due time and actual send, µs: time a request spent
    /// queued in the generator because every connection was busy.
    pub send_delay_sum_us: u64,
    /// Latencies of `ok` in √2-wide buckets from 1 ms ([`latency_bucket`]), so that a
    /// second's percentiles (the autoscale bench's p99) survive merging while the
    /// struct stays `Copy`.
    #[serde(default)]
    pub latency_buckets: [u32; LATENCY_BUCKETS],
}

/// Buckets of [`Second::latency_buckets`]: the last ends at 1 ms × 2^15.5 ≈ 46 s.
pub const LATENCY_BUCKETS: usize = 32;

/// The bucket of a latency: bucket `i` holds latencies up to 1 ms × √2^i.
pub fn latency_bucket(us: u64) -> usize {
    if us <= 1000 {
        return 0;
    }
    let i = (2.0 * (us as f64 / 1000.0).log2()).ceil() as usize;
    i.min(LATENCY_BUCKETS - 1)
}

impl Second {
    /// Adds another thread's counts for the same second.
    pub fn merge(&mut self, o: &Second) {
        self.offered += o.offered;
        self.ok += o.ok;
        self.errors += o.errors;
        self.latency_sum_us += o.latency_sum_us;
        self.latency_max_us = self.latency_max_us.max(o.latency_max_us);
        self.send_delay_sum_us += o.send_delay_sum_us;
        for (a, b) in self.latency_buckets.iter_mut().zip(o.latency_buckets) {
            *a += b;
        }
    }

    /// The `q` quantile of this second's latencies, seconds, as the geometric middle of
    /// its bucket (within ±19%); `None` without answers.
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency_buckets.iter().map(|&n| u64::from(n)).sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in self.latency_buckets.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                let upper = 0.001 * 2f64.powf(i as f64 / 2.0);
                return Some(if i == 0 {
                    upper
                } else {
                    upper / 2f64.powf(0.25)
                });
            }
        }
        None
    }

    /// Mean latency of the successful answers, seconds (0 without any).
    pub fn mean_latency(&self) -> f64 {
        if self.ok == 0 {
            0.0
        } else {
            self.latency_sum_us as f64 / self.ok as f64 / 1e6
        }
    }
}

/// Everything one thread (or, after merging, the whole run) counted.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of successful requests in the measurement window, µs, measured from
    /// the due time (open model) or the send time (closed loop).
    pub latency: Histogram<u64>,
    /// Successful requests in the measurement window.
    pub ok: u64,
    /// Failed requests in the measurement window.
    pub errors: ErrorCounts,
    /// Response body bytes received in the measurement window.
    pub body_bytes: u64,
    /// Per-second counts over the whole run, warm-up included.
    pub series: Vec<Second>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Empty counts.
    pub fn new() -> Self {
        Self {
            // 3 significant figures: 0.1% error; bounds are constants, so this cannot fail.
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .unwrap_or_else(|_| Histogram::new(3).expect("3 sigfig is valid")),
            ok: 0,
            errors: ErrorCounts::default(),
            body_bytes: 0,
            series: Vec::new(),
        }
    }

    /// The per-second slot for second `s`, growing the series as the run goes on.
    pub fn second(&mut self, s: usize) -> &mut Second {
        if s >= self.series.len() {
            self.series.resize(s + 1, Second::default());
        }
        &mut self.series[s]
    }

    /// Records a latency in µs into the histogram (clamped to its range).
    pub fn record_latency(&mut self, us: u64) {
        self.latency.saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    /// Adds another thread's counts.
    pub fn merge(&mut self, other: &Stats) {
        // Same bounds on both sides: adding cannot fail; if it ever did, the
        // percentiles would be missing that thread, which the counts still show.
        let _ = self.latency.add(&other.latency);
        self.ok += other.ok;
        self.errors.merge(&other.errors);
        self.body_bytes += other.body_bytes;
        for (s, o) in other.series.iter().enumerate() {
            self.second(s).merge(o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_counts_histograms_and_series() {
        let mut a = Stats::new();
        a.ok = 2;
        a.record_latency(1000);
        a.record_latency(3000);
        a.errors.add(ErrorKind::Timeout);
        a.second(1).ok = 2;
        a.second(1).latency_max_us = 3000;

        let mut b = Stats::new();
        b.ok = 1;
        b.record_latency(2000);
        b.errors.add(ErrorKind::Timeout);
        b.errors.add(ErrorKind::Connect);
        b.second(3).ok = 1;
        b.second(1).latency_max_us = 5000;
        b.body_bytes = 10;

        a.merge(&b);
        assert_eq!(a.ok, 3);
        assert_eq!(a.latency.len(), 3);
        assert_eq!(a.latency.value_at_quantile(0.5), 2000);
        assert_eq!(a.errors.get(ErrorKind::Timeout), 2);
        assert_eq!(a.errors.total(), 3);
        assert_eq!(a.errors.nonzero(), vec![("connect", 1), ("timeout", 2)]);
        assert_eq!(a.series.len(), 4);
        assert_eq!(a.series[1].ok, 2);
        assert_eq!(a.series[1].latency_max_us, 5000);
        assert_eq!(a.series[3].ok, 1);
        assert_eq!(a.body_bytes, 10);
    }

    #[test]
    fn latencies_are_clamped_not_lost() {
        let mut s = Stats::new();
        s.record_latency(0);
        s.record_latency(u64::MAX);
        assert_eq!(s.latency.len(), 2);
    }

    #[test]
    fn per_second_p99_comes_from_the_buckets() {
        assert_eq!(latency_bucket(500), 0);
        assert_eq!(latency_bucket(1000), 0);
        assert_eq!(latency_bucket(1001), 1);
        assert_eq!(latency_bucket(2000), 2);
        assert_eq!(latency_bucket(u64::MAX / 2), LATENCY_BUCKETS - 1);
        let mut a = Second::default();
        let mut b = Second::default();
        for _ in 0..98 {
            a.latency_buckets[latency_bucket(10_000)] += 1;
        }
        b.latency_buckets[latency_bucket(1_000_000)] += 2;
        a.merge(&b);
        let p99 = a.latency_quantile(0.99).expect("answers");
        assert!((0.8..1.2).contains(&p99), "{p99}");
        let p50 = a.latency_quantile(0.5).expect("answers");
        assert!((0.008..0.012).contains(&p50), "{p50}");
        assert_eq!(Second::default().latency_quantile(0.99), None);
    }
}
