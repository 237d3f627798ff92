//! One sink's task: takes reports off the shared ring and delivers them with a
//! timeout per attempt, bounded retries with jittered exponential backoff, and
//! warnings throttled to one per interval.
//!
//! Everything that keeps a slow or dead sink from hurting anyone else lives here, so
//! that a sink file only says how to talk to its backend.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Sink, SinkError, SinkStats, MAX_SEND_TIMEOUT};
use crate::tracker::report::Report;

/// How hard a sink tries to deliver one report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Policy {
    /// Total time one report may take, retries included, and the window in which at
    /// most one failure is logged: a report should be out before the next one is due.
    pub(super) interval: Duration,
    /// Bound of one attempt, so a black-holed endpoint cannot eat the whole budget.
    pub(super) send_timeout: Duration,
    /// Attempts per report, first one included.
    pub(super) max_attempts: u32,
    /// Delay before the first retry; doubled for each further one.
    pub(super) backoff_base: Duration,
}

impl Policy {
    pub(super) fn for_interval(interval: Duration) -> Policy {
        Policy {
            interval,
            send_timeout: interval.min(MAX_SEND_TIMEOUT),
            max_attempts: 4,
            backoff_base: Duration::from_millis(100).min(interval / 8),
        }
    }

    /// Jittered exponential delay after failed attempt number `attempt` (1-based).
    /// The jitter (×0.5..1.5) keeps many hosts from retrying in lockstep.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = 2f64.powi(attempt.saturating_sub(1).min(16) as i32);
        self.backoff_base.mul_f64(exp * (0.5 + fastrand::f64()))
    }
}

/// Counts shared between a sink's task and [`super::Notifier::stats`].
#[derive(Debug, Default)]
pub(super) struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self, name: &'static str) -> SinkStats {
        SinkStats {
            name,
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Runs until the ring is closed and drained (shutdown) or the task is aborted.
pub(super) async fn run(
    mut sink: Sink,
    mut rx: broadcast::Receiver<Report>,
    policy: Policy,
    deadline: watch::Receiver<Option<Instant>>,
    counters: Arc<Counters>,
) {
    let name = sink.name();
    let mut health = Health::default();
    loop {
        match rx.recv().await {
            Ok(report) => match deliver(&mut sink, &report, &policy, &deadline).await {
                Ok(()) => {
                    counters.delivered.fetch_add(1, Ordering::Relaxed);
                    if let Some(down_for) = health.on_success(Instant::now()) {
                        info!(
                            sink = name,
                            down_for_s = down_for.as_secs_f64(),
                            "sink recovered; reports are delivered again"
                        );
                    }
                }
                Err(e) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    if let Some(suppressed) = health.on_failure(Instant::now(), policy.interval) {
                        warn!(sink = name, error = %e, retryable = e.retryable, suppressed, "report not delivered");
                    }
                }
            },
            Err(RecvError::Lagged(n)) => {
                counters.dropped.fetch_add(n, Ordering::Relaxed);
                warn!(
                    sink = name,
                    dropped = n,
                    "sink fell behind; its oldest queued reports were dropped"
                );
            }
            Err(RecvError::Closed) => break,
        }
    }
}

/// Tries one report until it is accepted, a permanent error, the attempts, or the
/// time budget (the interval, cut short by a shutdown deadline) run out.
async fn deliver(
    sink: &mut Sink,
    report: &Report,
    policy: &Policy,
    deadline: &watch::Receiver<Option<Instant>>,
) -> Result<(), SinkError> {
    let budget_end = Instant::now() + policy.interval;
    let mut attempt = 0;
    loop {
        // Read each time: shutdown may start while this report is being retried.
        let end = match *deadline.borrow() {
            Some(d) => budget_end.min(d),
            None => budget_end,
        };
        let remaining = end.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(SinkError::retryable(
                "shutdown deadline passed before the report was sent",
            ));
        }
        attempt += 1;
        let limit = policy.send_timeout.min(remaining);
        let err = match tokio::time::timeout(limit, sink.send(report)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => SinkError::retryable(format!("no answer within {:.1}s", limit.as_secs_f64())),
        };
        if !err.retryable || attempt >= policy.max_attempts {
            return Err(err);
        }
        let delay = policy.backoff(attempt);
        if Instant::now() + delay >= end {
            return Err(err);
        }
        debug!(sink = sink.name(), attempt, error = %err, "retrying report");
        tokio::time::sleep(delay).await;
    }
}

/// Decides which outcomes deserve a log line: the first failure, then at most one
/// per interval while the sink stays down, and one line when it comes back.
#[derive(Debug, Default)]
struct Health {
    /// When the current run of failures began; `None` while the sink is healthy.
    down_since: Option<Instant>,
    /// When the last failure warning went out.
    last_warned: Option<Instant>,
    /// Failures not logged since that warning.
    suppressed: u64,
}

impl Health {
    /// Returns `Some(failures suppressed since the last warning)` when this failure
    /// should be logged.
    fn on_failure(&mut self, now: Instant, interval: Duration) -> Option<u64> {
        self.down_since.get_or_insert(now);
        let due = self
            .last_warned
            .is_none_or(|t| now.duration_since(t) >= interval);
        if due {
            self.last_warned = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }

    /// Returns how long the sink was down when this success ends an outage.
    fn on_success(&mut self, now: Instant) -> Option<Duration> {
        let since = self.down_since.take()?;
        self.last_warned = None;
        self.suppressed = 0;
        Some(now.duration_since(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_logs_first_failure_then_once_per_interval_then_recovery() {
        let interval = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut h = Health::default();
        assert_eq!(
            h.on_success(t0),
            None,
            "a healthy sink does not announce recovery"
        );
        assert_eq!(h.on_failure(t0, interval), Some(0));
        assert_eq!(h.on_failure(t0 + Duration::from_secs(3), interval), None);
        assert_eq!(h.on_failure(t0 + Duration::from_secs(9), interval), None);
        assert_eq!(
            h.on_failure(t0 + Duration::from_secs(10), interval),
            Some(2)
        );
        assert_eq!(h.on_failure(t0 + Duration::from_secs(11), interval), None);
        assert_eq!(
            h.on_success(t0 + Duration::from_secs(12)),
            Some(Duration::from_secs(12))
        );
        assert_eq!(h.on_success(t0 + Duration::from_secs(13)), None);
        // A new outage is announced at once, whatever the time since the last one.
        assert_eq!(
            h.on_failure(t0 + Duration::from_secs(14), interval),
            Some(0)
        );
    }

    #[test]
    fn policy_bounds_attempts_by_interval() {
        let short = Policy::for_interval(Duration::from_secs(1));
        assert_eq!(short.send_timeout, Duration::from_secs(1));
        assert_eq!(short.backoff_base, Duration::from_millis(100));
        let long = Policy::for_interval(Duration::from_secs(60));
        assert_eq!(long.send_timeout, MAX_SEND_TIMEOUT);
        let tiny = Policy::for_interval(Duration::from_millis(80));
        assert_eq!(tiny.backoff_base, Duration::from_millis(10));
    }

    #[test]
    fn backoff_grows_exponentially_with_bounded_jitter() {
        let p = Policy::for_interval(Duration::from_secs(10));
        for attempt in 1..=4u32 {
            let nominal = p.backoff_base * 2u32.pow(attempt - 1);
            for _ in 0..50 {
                let d = p.backoff(attempt);
                assert!(
                    d >= nominal / 2 && d < nominal * 3 / 2,
                    "attempt {attempt}: {d:?}"
                );
            }
        }
    }
}
