//! The notifier: hands each interval's merged [`Report`] to every configured sink.
//!
//! The master owns the timer and calls [`Notifier::publish`] once per interval. That
//! call never waits on a sink: every sink runs in its own tokio task behind its own
//! bounded backlog (`runner.rs`), with its own timeout, retries and log throttling,
//! so a dead CloudWatch endpoint costs a log line, never a request and never another
//! sink's report.
//!
//! This file owns the contract between the master and the sinks: [`Sink`] (a closed
//! enum dispatched with `match`), [`SinkError`] and [`Notifier`]. The options live in
//! `config.rs` ([`NotifyConfig`], [`SinkConfig`], [`SinkKind`]), and each sink in its
//! own file or folder with its own config struct: [`log`], [`prometheus`], [`statsd`],
//! [`cloudwatch`], [`azure`], [`redis`].
//!
//! # Adding a sink
//!
//! 1. Create `src/notify/<name>.rs` with `<Name>Config` (`from_args(&NotifyArgs) ->
//!    Result<Self, ConfigError>` whose errors name the option, `Display` with secrets
//!    masked, `async build(&self) -> Result<<Name>Sink, ConfigError>`) and `<Name>Sink`
//!    (`name() -> &'static str`, `async send(&mut self, &Report) -> Result<(),
//!    SinkError>`, cancel-safe at each `.await`); declare the module below.
//! 2. Add a `<Name>` variant to [`Sink`] (here) and to [`SinkConfig`] (`config.rs`),
//!    then fill in the match arms the compiler points at ([`SinkConfig::from_args`]
//!    among them).
//!
//! The framework does the rest: per-attempt timeout, retries while
//! [`SinkError::retryable`], one warning per interval, backlog, shutdown flush.

pub mod azure;
pub mod cloudwatch;
mod config;
mod dimensions;
mod last_interval;
pub mod log;
mod metric_names;
pub mod prometheus;
mod redact;
pub mod redis;
mod runner;
pub mod statsd;
#[cfg(test)]
pub(crate) mod testing;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, warn};

use crate::tracker::report::Report;

use crate::error::ConfigError;
pub(crate) use config::check_host_port;
pub use config::{NotifyConfig, SinkConfig, SinkKind};
use runner::{Counters, Policy};

/// Reports queued per sink before the oldest is dropped: a sink that is down for a
/// few intervals catches up with recent data instead of growing memory without bound.
/// tokio's broadcast ring rounds capacities up to a power of two; this one is exact.
pub const BACKLOG: usize = 4;

/// A metric value a cloud API accepts: NaN and infinities (which CloudWatch and Azure
/// reject, failing the whole call) become 0.
pub(crate) fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// Upper bound of one `send` attempt; an interval shorter than this bounds it instead.
pub const MAX_SEND_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------

/// Why one delivery attempt failed.
///
/// The framework retries (with backoff, within the interval) only when `retryable`,
/// and logs `message` at most once per interval, so `message` must never contain a
/// secret: no passwords, tokens or full URLs with credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkError {
    /// True for transient trouble (timeouts, throttling, 5xx, connection refused)
    /// where another attempt may succeed; false for errors that repeat (403, 400).
    pub retryable: bool,
    /// What went wrong, for the log line; free of secrets.
    pub message: String,
}

impl SinkError {
    /// A transient failure worth another attempt.
    pub fn retryable(message: impl Into<String>) -> Self {
        SinkError {
            retryable: true,
            message: message.into(),
        }
    }

    /// A failure that another attempt would only repeat.
    pub fn permanent(message: impl Into<String>) -> Self {
        SinkError {
            retryable: false,
            message: message.into(),
        }
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SinkError {}

// ---------------------------------------------------------------------------------
// Sinks
// ---------------------------------------------------------------------------------

/// A running sink. A closed enum rather than a trait object: the set of sinks is
/// known at compile time and each `send` future stays a concrete, `Send` type.
pub enum Sink {
    Log(log::LogSink),
    Prometheus(prometheus::PrometheusSink),
    Statsd(statsd::StatsdSink),
    CloudWatch(cloudwatch::CloudWatchSink),
    Azure(azure::AzureSink),
    Redis(redis::RedisSink),
    /// Scriptable sink that lets the framework tests hang, fail and observe.
    #[cfg(test)]
    Probe(testing::ProbeSink),
}

impl Sink {
    /// The sink's `--notify` name, used as the `sink` field of its log lines.
    pub fn name(&self) -> &'static str {
        match self {
            Sink::Log(s) => s.name(),
            Sink::Prometheus(s) => s.name(),
            Sink::Statsd(s) => s.name(),
            Sink::CloudWatch(s) => s.name(),
            Sink::Azure(s) => s.name(),
            Sink::Redis(s) => s.name(),
            #[cfg(test)]
            Sink::Probe(s) => s.name(),
        }
    }

    /// Delivers one report. The framework wraps this in a timeout and may drop the
    /// future midway, so a sink must stay consistent if cancelled at an `.await`.
    pub async fn send(&mut self, report: &Report) -> Result<(), SinkError> {
        match self {
            Sink::Log(s) => s.send(report).await,
            Sink::Prometheus(s) => s.send(report).await,
            Sink::Statsd(s) => s.send(report).await,
            Sink::CloudWatch(s) => s.send(report).await,
            Sink::Azure(s) => s.send(report).await,
            Sink::Redis(s) => s.send(report).await,
            #[cfg(test)]
            Sink::Probe(s) => s.send(report).await,
        }
    }
}

// ---------------------------------------------------------------------------------
// Notifier
// ---------------------------------------------------------------------------------

/// What one sink's task has done so far; for tests, diagnostics and self-metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkStats {
    /// The sink's `--notify` name.
    pub name: &'static str,
    /// Reports the sink accepted.
    pub delivered: u64,
    /// Reports given up on after the timeout, retries or a permanent error.
    pub failed: u64,
    /// Reports dropped unsent because the backlog was full (oldest first).
    pub dropped: u64,
}

/// One sink's task, as the notifier keeps track of it.
struct SinkTask {
    name: &'static str,
    counters: Arc<Counters>,
    handle: JoinHandle<()>,
}

/// The running sinks. Publish reports into it; shut it down to flush the last one.
/// Dropped without [`Notifier::shutdown`], its tasks drain their backlog unattended.
pub struct Notifier {
    /// One ring shared by all sink tasks; each task reads at its own pace, and a
    /// task that falls [`BACKLOG`] reports behind loses the oldest ones.
    tx: broadcast::Sender<Report>,
    /// Set once by [`Notifier::shutdown`]: retries stop at this instant.
    deadline: watch::Sender<Option<Instant>>,
    tasks: Vec<SinkTask>,
    /// Where the prometheus sink listens, if it runs (its port may have been 0).
    metrics_addr: Option<SocketAddr>,
}

impl Notifier {
    /// Builds every sink (prometheus binds `--metrics-bind` here) and starts one task
    /// per sink. Must run inside a tokio runtime.
    pub async fn start(config: NotifyConfig) -> Result<Notifier, ConfigError> {
        let mut sinks = Vec::with_capacity(config.sinks().len());
        for sink in config.sinks() {
            sinks.push(sink.build().await?);
        }
        Ok(Notifier::spawn(config.interval(), sinks))
    }

    /// Starts one task per already built sink.
    fn spawn(interval: Duration, sinks: Vec<Sink>) -> Notifier {
        let (tx, _) = broadcast::channel(BACKLOG);
        let (deadline, _) = watch::channel(None);
        let policy = Policy::for_interval(interval);
        let metrics_addr = sinks.iter().find_map(|s| match s {
            Sink::Prometheus(p) => Some(p.local_addr()),
            _ => None,
        });
        let tasks = sinks
            .into_iter()
            .map(|sink| {
                let name = sink.name();
                let counters = Arc::new(Counters::default());
                let handle = tokio::spawn(runner::run(
                    sink,
                    tx.subscribe(),
                    policy,
                    deadline.subscribe(),
                    counters.clone(),
                ));
                SinkTask {
                    name,
                    counters,
                    handle,
                }
            })
            .collect();
        Notifier {
            tx,
            deadline,
            tasks,
            metrics_addr,
        }
    }

    /// Queues a report for every sink. Never waits and never fails: a sink that is
    /// [`BACKLOG`] reports behind loses its oldest queued report instead.
    pub fn publish(&self, report: Report) {
        // The only error is "no receiver": there are no sinks, which is fine.
        let _ = self.tx.send(report);
    }

    /// Delivers what is queued (normally the final partial interval) and stops, giving
    /// up on sinks still busy at `deadline`; each of those costs one warning.
    pub async fn shutdown(self, deadline: Duration) {
        // Clamped so that a "wait forever" deadline cannot overflow the clock.
        let until = Instant::now() + deadline.min(Duration::from_secs(86_400));
        self.deadline.send_replace(Some(until));
        // Closing the ring lets each task drain what it has queued, then end.
        drop(self.tx);
        let waits = self.tasks.into_iter().map(|task| async move {
            let abort = task.handle.abort_handle();
            match tokio::time::timeout_at(until, task.handle).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    error!(sink = task.name, error = %e, "notifier task ended abnormally")
                }
                Err(_) => {
                    abort.abort();
                    warn!(
                        sink = task.name,
                        "sink still busy at the shutdown deadline; its queued reports are lost"
                    );
                }
            }
        });
        futures_util::future::join_all(waits).await;
    }

    /// Where `/metrics` is served when the prometheus sink runs.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Per-sink delivery counts, in `--notify` order.
    pub fn stats(&self) -> Vec<SinkStats> {
        self.tasks
            .iter()
            .map(|t| t.counters.snapshot(t.name))
            .collect()
    }
}

#[cfg(test)]
mod tests;
