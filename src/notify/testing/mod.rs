//! Every test helper of the notifier and its sinks, in one place: reports with known
//! numbers (here), a scriptable sink ([`probe`]) and the real servers the sinks talk
//! to ([`services`]).

mod probe;
pub mod services;

pub use probe::ProbeSink;
pub(crate) use services::*;

use std::time::{Duration, SystemTime};

use crate::tracker::report::{MetricReport, Report, StampCounts, PROMETHEUS_BUCKETS};

/// A metric from its exact `(value, count)` distribution; percentiles are given, as
/// the tracker's HDR histogram would compute them.
pub fn metric(dist: &[(f64, u64)], p50: f64, p90: f64, p99: f64) -> MetricReport {
    let count = dist.iter().map(|d| d.1).sum();
    MetricReport {
        count,
        sum: dist.iter().map(|(v, c)| v * *c as f64).sum(),
        min: dist.iter().map(|d| d.0).fold(f64::INFINITY, f64::min),
        max: dist.iter().map(|d| d.0).fold(0.0, f64::max),
        p50,
        p90,
        p99,
        distribution: dist.to_vec(),
        buckets: PROMETHEUS_BUCKETS
            .iter()
            .map(|&le| (le, dist.iter().filter(|d| d.0 <= le).map(|d| d.1).sum()))
            .collect(),
    }
}

/// Ten queue times 0.0, 0.1, …, 0.9 s; twelve server waits; no app time (so that
/// "metric without samples" is covered); 12 requests, 2 shed; 37.5 % busy.
pub fn decile_report() -> Report {
    let queue_time = MetricReport {
        count: 10,
        sum: 4.5,
        min: 0.0,
        max: 0.9,
        p50: 0.4,
        p90: 0.8,
        p99: 0.9,
        distribution: (0..10).map(|i| (i as f64 / 10.0, 1)).collect(),
        buckets: Vec::new(),
    };
    Report {
        timestamp: SystemTime::now(),
        interval: Duration::from_secs(10),
        hostname: "web-1".into(),
        workers: 2,
        server_wait: MetricReport {
            count: 12,
            sum: 0.12,
            min: 0.001,
            max: 0.05,
            p99: 0.05,
            ..Default::default()
        },
        app_time: MetricReport::default(),
        queue_time,
        stamps: Default::default(),
        shed: 2,
        client_timeouts: 0,
        status_classes: [0, 10, 0, 0, 2],
        status_codes: vec![(200, 10), (503, 2)],
        utilization: 0.375,
        log_lines: Default::default(),
    }
}

/// Report number `n`: its `shed` is `n` and its timestamp `n` intervals after a fixed
/// epoch, so a test can tell reports apart; all other numbers are the same each time.
pub fn sample_report(n: u64) -> Report {
    let interval = Duration::from_secs(10);
    Report {
        timestamp: SystemTime::UNIX_EPOCH
            + Duration::from_secs(1_700_000_000)
            + interval * n as u32,
        interval,
        hostname: "web-1".to_owned(),
        workers: 2,
        queue_time: metric(&[(0.02, 2), (0.15, 1), (1.2, 1)], 0.02, 0.15, 1.2),
        server_wait: metric(&[(0.0005, 5), (0.003, 1)], 0.0005, 0.003, 0.003),
        app_time: metric(&[(0.01, 6), (0.3, 1)], 0.01, 0.3, 0.3),
        stamps: StampCounts {
            ok: 4,
            missing: 2,
            invalid: 1,
            future: 0,
            untrusted: 1,
        },
        shed: n,
        client_timeouts: 0,
        status_classes: [0, 6, 0, 0, 2],
        status_codes: vec![(200, 5), (201, 1), (500, 1), (503, 1)],
        utilization: 0.42,
        log_lines: crate::tracker::LogLines {
            warning: 3,
            ..Default::default()
        },
    }
}

/// Notifier options as clap parses them from `argv` (without the program name).
pub fn args(argv: &[&str]) -> crate::cli::NotifyArgs {
    use clap::Parser;
    let full = std::iter::once("rwsgi").chain(argv.iter().copied());
    crate::cli::Cli::try_parse_from(full)
        .expect("valid test arguments")
        .notify
}

/// Polls `cond` until it holds; panics after `limit` with `what`. For waiting on
/// work in another task, never for asserting timing.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
