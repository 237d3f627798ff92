//! Test support for the notifier: a realistic sample [`Report`] and a scriptable
//! [`ProbeSink`] that can hang, fail, and tell the test what it delivered.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, Semaphore};

use super::SinkError;
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

/// What a test keeps to steer and observe a [`ProbeSink`].
pub struct ProbeHandle {
    /// Each `send` takes one permit first: no permits means the sink hangs.
    pub gate: Arc<Semaphore>,
    /// `shed` (the report number) of each report the sink accepted, in order.
    pub delivered: mpsc::UnboundedReceiver<u64>,
    /// Calls to `send`, retries included.
    pub attempts: Arc<AtomicU32>,
}

/// A sink whose behaviour the test scripts.
pub struct ProbeSink {
    name: &'static str,
    gate: Arc<Semaphore>,
    delivered: mpsc::UnboundedSender<u64>,
    attempts: Arc<AtomicU32>,
    /// Attempts still to fail before sends succeed.
    failures_left: u32,
    /// Whether those failures are worth retrying.
    retryable: bool,
}

impl ProbeSink {
    /// An accepting sink named `name`.
    pub fn new(name: &'static str) -> (ProbeSink, ProbeHandle) {
        let gate = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
        let (tx, rx) = mpsc::unbounded_channel();
        let attempts = Arc::new(AtomicU32::new(0));
        let sink = ProbeSink {
            name,
            gate: gate.clone(),
            delivered: tx,
            attempts: attempts.clone(),
            failures_left: 0,
            retryable: true,
        };
        (
            sink,
            ProbeHandle {
                gate,
                delivered: rx,
                attempts,
            },
        )
    }

    /// A sink that hangs in `send` until the test adds permits to the gate.
    pub fn hanging(name: &'static str) -> (ProbeSink, ProbeHandle) {
        let (mut sink, mut handle) = ProbeSink::new(name);
        sink.gate = Arc::new(Semaphore::new(0));
        handle.gate = sink.gate.clone();
        (sink, handle)
    }

    /// Makes the first `times` attempts fail.
    pub fn failing(mut self, times: u32, retryable: bool) -> ProbeSink {
        self.failures_left = times;
        self.retryable = retryable;
        self
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub async fn send(&mut self, report: &Report) -> Result<(), SinkError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let permit = self
            .gate
            .acquire()
            .await
            .map_err(|_| SinkError::permanent("gate closed"))?;
        permit.forget();
        if self.failures_left > 0 {
            self.failures_left -= 1;
            return Err(SinkError {
                retryable: self.retryable,
                message: "probe failure".into(),
            });
        }
        let _ = self.delivered.send(report.shed);
        Ok(())
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
