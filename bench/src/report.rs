//! A load run's summary: what people read (human text) and what tools read (JSON).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::load::stats::Second;
use crate::load::LoadOutcome;

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// The summary of one load run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Successful (2xx) answers per second over the measurement window.
    pub rps: f64,
    /// Successful answers in the window.
    pub ok: u64,
    /// Failed requests in the window.
    pub errors: u64,
    /// Failed requests by kind (only kinds that occurred).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Measurement window, seconds.
    pub window_s: f64,
    /// Latency of successful requests (from the due time in the open model).
    pub latency_ms: Latency,
    /// Response body bytes per second.
    pub body_bytes_per_s: f64,
    /// Per-second counts over the whole run, warm-up included.
    pub series: Vec<Second>,
}

impl LoadReport {
    /// Summarises a run.
    pub fn from_outcome(o: &LoadOutcome) -> Self {
        let s = &o.stats;
        let window_s = o.window.as_secs_f64();
        let per_s = |n: f64| if window_s > 0.0 { n / window_s } else { 0.0 };
        let h = &s.latency;
        let ms = |us: u64| us as f64 / 1000.0;
        let latency_ms = if h.is_empty() {
            Latency::default()
        } else {
            Latency {
                mean: h.mean() / 1000.0,
                p50: ms(h.value_at_quantile(0.50)),
                p90: ms(h.value_at_quantile(0.90)),
                p99: ms(h.value_at_quantile(0.99)),
                max: ms(h.max()),
            }
        };
        Self {
            rps: per_s(s.ok as f64),
            ok: s.ok,
            errors: s.errors.total(),
            errors_by_kind: s
                .errors
                .nonzero()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            window_s,
            latency_ms,
            body_bytes_per_s: per_s(s.body_bytes as f64),
            series: s.series.clone(),
        }
    }

    /// A few lines for a terminal.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let l = &self.latency_ms;
        let _ = writeln!(
            out,
            "{:.0} req/s  ({} ok, {} errors in {:.2} s)",
            self.rps, self.ok, self.errors, self.window_s
        );
        let _ = writeln!(
            out,
            "latency ms  mean {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
            l.mean, l.p50, l.p90, l.p99, l.max
        );
        if self.body_bytes_per_s > 0.0 {
            let _ = writeln!(
                out,
                "body        {:.1} MiB/s",
                self.body_bytes_per_s / (1024.0 * 1024.0)
            );
        }
        if !self.errors_by_kind.is_empty() {
            let kinds: Vec<String> = self
                .errors_by_kind
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(out, "errors      {}", kinds.join(", "));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::stats::{ErrorKind, Stats};
    use std::time::Duration;

    #[test]
    fn summarises_counts_and_percentiles() {
        let mut stats = Stats::new();
        for us in 1..=1000u64 {
            stats.record_latency(us * 10);
        }
        stats.ok = 1000;
        stats.body_bytes = 2000;
        stats.errors.add(ErrorKind::Status5xx);
        let r = LoadReport::from_outcome(&LoadOutcome {
            stats,
            window: Duration::from_secs(2),
        });
        assert_eq!(r.rps, 500.0);
        assert_eq!(r.body_bytes_per_s, 1000.0);
        assert_eq!(r.errors, 1);
        assert_eq!(r.errors_by_kind["status_5xx"], 1);
        assert!(
            (r.latency_ms.p50 - 5.0).abs() < 0.01,
            "{}",
            r.latency_ms.p50
        );
        assert!(
            (r.latency_ms.p99 - 9.9).abs() < 0.02,
            "{}",
            r.latency_ms.p99
        );
        assert!((r.latency_ms.max - 10.0).abs() < 0.02);
        let text = r.human();
        assert!(text.contains("500 req/s"));
        assert!(text.contains("status_5xx 1"));
    }

    #[test]
    fn an_empty_run_reports_zeros() {
        let r = LoadReport::from_outcome(&LoadOutcome {
            stats: Stats::new(),
            window: Duration::ZERO,
        });
        assert_eq!(r.rps, 0.0);
        assert_eq!(r.latency_ms, Latency::default());
    }
}
