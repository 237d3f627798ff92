//! The last interval's values, ready to read without arithmetic: the gauges beside
//! the Prometheus histograms and the body of `GET /queue-time.json`.
//!
//! An autoscaler that cannot read histogram buckets (KEDA's `metrics-api` scaler,
//! fly-autoscaler's simple expressions, a shell script) needs one number per signal.
//! The histograms answer "over any window you like" with `histogram_quantile`; these
//! answer "over the last `--notify-interval`", computed exactly from the merged HDR
//! histograms (percentiles within 1%). Both views come from the same [`Report`], so
//! they never disagree about what was measured. `docs/metrics.md` lists every name.

use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

use serde::Serialize;

use crate::tracker::report::{MetricReport, Report};

/// The statistics published per timing metric, as the `stat` label and JSON keys.
const STATS: [&str; 5] = ["avg", "p50", "p90", "p99", "max"];

/// One timing metric over the last interval, in seconds (all 0 with no samples).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Stats {
    /// Samples in the interval: 0 means "nothing measured", not "no wait".
    pub count: u64,
    pub avg: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Stats {
    fn of(m: &MetricReport) -> Stats {
        Stats {
            count: m.count,
            avg: finite(m.mean()),
            p50: finite(m.p50),
            p90: finite(m.p90),
            p99: finite(m.p99),
            max: finite(m.max),
        }
    }

    /// The values in [`STATS`] order.
    fn values(&self) -> [f64; 5] {
        [self.avg, self.p50, self.p90, self.p99, self.max]
    }
}

/// A NaN or infinity would make the JSON invalid and a gauge useless to a scaler.
fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// The body of `/queue-time.json`; field names carry their unit, as Prometheus
/// names do, so a `valueLocation` reads like the metric it mirrors.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct LastInterval {
    /// Reports received since start; 0 means every value below is a placeholder.
    pub reports: u64,
    /// Length of the interval the values cover.
    pub interval_seconds: f64,
    /// Wall-clock end of that interval, Unix seconds (0 before the first report).
    pub timestamp_seconds: f64,
    pub hostname: String,
    pub workers: u32,
    /// Requests answered in the interval, shed ones included.
    pub requests: u64,
    /// `dispatch − proxy stamp`, for requests with a trusted stamp.
    pub queue_time_seconds: Stats,
    /// `dispatch − arrival`, for every dispatched request.
    pub server_wait_seconds: Stats,
    /// `response finished − dispatch`.
    pub app_time_seconds: Stats,
    /// Busy Python-thread time ÷ (threads × interval), 0..=1.
    pub utilization_ratio: f64,
    /// Requests answered 503 by `--max-queue-time` in the interval.
    pub shed: u64,
}

impl LastInterval {
    /// Replaces the values with `report`'s.
    pub fn update(&mut self, report: &Report) {
        *self = LastInterval {
            reports: self.reports + 1,
            interval_seconds: report.interval.as_secs_f64(),
            timestamp_seconds: report
                .timestamp
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            hostname: report.hostname.clone(),
            workers: report.workers,
            requests: report.requests(),
            queue_time_seconds: Stats::of(&report.queue_time),
            server_wait_seconds: Stats::of(&report.server_wait),
            app_time_seconds: Stats::of(&report.app_time),
            utilization_ratio: finite(report.utilization).clamp(0.0, 1.0),
            shed: report.shed,
        };
    }

    /// `/queue-time.json`.
    pub fn to_json(&self) -> String {
        // Plain numbers and strings only: serialisation cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// The `rwsgi_interval_*` gauges in the text exposition format. `header` writes
    /// a family's HELP and TYPE lines; `float` spells a value.
    pub fn render_gauges(
        &self,
        out: &mut String,
        header: fn(&mut String, &str, &str, &str),
        float: fn(f64) -> String,
    ) {
        let timings = [
            (
                "rwsgi_interval_queue_time_seconds",
                "Queue time (dispatch minus proxy stamp) over the last interval, by statistic.",
                &self.queue_time_seconds,
            ),
            (
                "rwsgi_interval_server_wait_seconds",
                "Server wait (dispatch minus arrival) over the last interval, by statistic.",
                &self.server_wait_seconds,
            ),
            (
                "rwsgi_interval_app_time_seconds",
                "App time (response finished minus dispatch) over the last interval, by statistic.",
                &self.app_time_seconds,
            ),
        ];
        for (name, help, stats) in timings {
            header(out, name, help, "gauge");
            for (stat, v) in STATS.iter().zip(stats.values()) {
                let _ = writeln!(out, "{name}{{stat=\"{stat}\"}} {}", float(v));
            }
        }
        let plain = [
            (
                "rwsgi_interval_queue_time_samples",
                "Requests with a trusted queue stamp in the last interval (0: the queue-time gauges measured nothing).",
                self.queue_time_seconds.count as f64,
            ),
            (
                "rwsgi_interval_requests",
                "Requests answered in the last interval, shed ones included.",
                self.requests as f64,
            ),
            (
                "rwsgi_interval_utilization_ratio",
                "Busy Python-thread time over threads times interval, last interval.",
                self.utilization_ratio,
            ),
            (
                "rwsgi_interval_length_seconds",
                "Length of the interval the rwsgi_interval_* gauges cover (0 before the first report).",
                self.interval_seconds,
            ),
            (
                "rwsgi_interval_end_timestamp_seconds",
                "Unix time at which the interval of the rwsgi_interval_* gauges ended.",
                self.timestamp_seconds,
            ),
        ];
        for (name, help, v) in plain {
            header(out, name, help, "gauge");
            let _ = writeln!(out, "{name} {}", float(v));
        }
    }
}
