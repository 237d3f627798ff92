//! The merged, per-interval report that every notifier sink receives.
//!
//! This is plain data, rendered once by the master from the merged histograms, so
//! that a sink never touches a histogram and never needs the tracker's internals.
//! All durations are in seconds (`f64`), as request-time-tracker reported them.

use std::time::{Duration, SystemTime};

/// Summary of one timing metric (`queue_time`, `server_wait`, `app_time`) over one
/// interval, merged across all workers of this host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricReport {
    /// Number of samples recorded in the interval.
    pub count: u64,
    /// Sum of all samples, seconds. With `count` this gives the exact mean.
    pub sum: f64,
    /// Smallest sample, seconds (0 when `count` is 0).
    pub min: f64,
    /// Largest sample, seconds (0 when `count` is 0).
    pub max: f64,
    /// Percentiles from the HDR histogram, relative error ≤ 1%.
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    /// At most 150 distinct `(value_seconds, count)` pairs whose counts add up to
    /// `count`: what CloudWatch's `Values`/`Counts` take so it can compute percentiles.
    pub distribution: Vec<(f64, u64)>,
    /// Cumulative Prometheus-style buckets `(upper_bound_seconds, count_le)` for this
    /// interval only, over [`PROMETHEUS_BUCKETS`]; the `+Inf` bucket is `count`.
    pub buckets: Vec<(f64, u64)>,
}

impl MetricReport {
    /// Mean in seconds, 0 when there were no samples.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// Bucket bounds (seconds) used for the Prometheus histograms.
pub const PROMETHEUS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// What happened to the queue header of each request in the interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StampCounts {
    /// A trusted, parseable stamp within `--queue-max-age`: recorded in `queue_time`.
    pub ok: u64,
    /// No queue header on the request (or no `--queue-header` configured).
    pub missing: u64,
    /// Unparseable, negative, before 2000, or older than `--queue-max-age`.
    pub invalid: u64,
    /// A stamp in the future (clock skew): recorded as a zero queue time.
    pub future: u64,
    /// A stamp from a peer outside `--queue-header-trusted-from`: ignored.
    pub untrusted: u64,
}

/// The server's own WARN and ERROR log lines in the interval, by the names of
/// gunicorn's statsd counters (`gunicorn.log.*`), from every process of the host
/// (`logging.rs` counts them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogLines {
    /// A worker killed for `--timeout` (gunicorn's `WORKER TIMEOUT`, its one
    /// critical line), or a hook's `log.critical`.
    pub critical: u64,
    /// Every other ERROR line (not the app's own `wsgi.errors` writes).
    pub error: u64,
    /// WARN lines.
    pub warning: u64,
    /// The app or a server hook raised (its traceback is logged): gunicorn's
    /// `log.exception` lines.
    pub exception: u64,
}

impl LogLines {
    pub fn add(&mut self, other: &LogLines) {
        self.critical = self.critical.saturating_add(other.critical);
        self.error = self.error.saturating_add(other.error);
        self.warning = self.warning.saturating_add(other.warning);
        self.exception = self.exception.saturating_add(other.exception);
    }
}

/// One interval's report for the whole host.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Wall-clock end of the interval; sinks use it as the metric timestamp.
    pub timestamp: SystemTime,
    /// Length of the interval this report covers (the last one on shutdown may be short).
    pub interval: Duration,
    /// Host name, used as the Redis key suffix and as a default dimension.
    pub hostname: String,
    /// Live worker processes when the report was merged.
    pub workers: u32,
    /// `dispatch − proxy stamp`, only for requests with an `ok` or `future` stamp
    /// (shed requests included).
    pub queue_time: MetricReport,
    /// `dispatch − arrival` (monotonic), for every dispatched request (shed
    /// requests included).
    pub server_wait: MetricReport,
    /// `response finished − dispatch`, for every request that reached the app.
    pub app_time: MetricReport,
    /// Queue header outcomes.
    pub stamps: StampCounts,
    /// Requests answered 503 by `--max-queue-time` without calling the app.
    pub shed: u64,
    /// Connections aborted for a too-slow client (`--client-body-timeout`,
    /// `--send-timeout`).
    pub client_timeouts: u64,
    /// Responses by status class: index 0 is 1xx, … index 4 is 5xx.
    pub status_classes: [u64; 5],
    /// Responses by exact code, `(code, count)` ascending, codes seen only.
    pub status_codes: Vec<(u16, u64)>,
    /// Busy Python-thread time ÷ (threads × interval), merged over workers, 0..=1.
    pub utilization: f64,
    /// The server's WARN/ERROR log lines (gunicorn's `gunicorn.log.*` counters).
    pub log_lines: LogLines,
}

impl Report {
    /// All requests answered in the interval (shed ones included).
    pub fn requests(&self) -> u64 {
        self.status_classes.iter().sum()
    }
}
