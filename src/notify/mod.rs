//! The notifier: hands each interval's merged [`Report`] to every configured sink.
//!
//! The master owns the timer and calls [`Notifier::publish`] once per interval. That
//! call never waits on a sink: every sink runs in its own tokio task behind its own
//! bounded backlog (see [`runner`]), with its own timeout, retries and log throttling,
//! so a dead CloudWatch endpoint costs a log line, never a request and never another
//! sink's report.
//!
//! This file owns the contract between the master and the sinks: [`NotifyConfig`]
//! (validated once at start), [`SinkConfig`] / [`Sink`] (closed enums dispatched with
//! `match`), [`SinkError`] and [`Notifier`]. Each sink lives in its own file with its
//! own config struct: [`log`], [`prometheus`], [`statsd`].
//!
//! # Adding a sink (the cloud sinks plug in here)
//!
//! 1. Create `src/notify/<name>.rs` with `<Name>Config` (`from_args(&NotifyArgs) ->
//!    Result<Self, String>`, `Display` with secrets masked, `async build(&self) ->
//!    Result<<Name>Sink, String>`) and `<Name>Sink` (`name() -> &'static str`,
//!    `async send(&mut self, &Report) -> Result<(), SinkError>`); declare the module
//!    below.
//! 2. Add a `<Name>` variant to [`SinkConfig`] and to [`Sink`], then fill in the match
//!    arms the compiler points at. In [`SinkConfig::from_args`] this replaces the
//!    "not built in this branch" arm marked `CLOUD SINKS PLUG IN HERE`.
//!
//! The framework does the rest: timeouts, retries while [`SinkError::retryable`],
//! throttled warnings, backlog, shutdown flush.

pub mod log;
pub mod prometheus;
mod runner;
pub mod statsd;
#[cfg(test)]
mod testing;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, warn};

use crate::cli::{LogFormat, NotifyArgs};
use crate::tracker::report::Report;

use runner::{Counters, Policy};

/// Reports queued per sink before the oldest is dropped: a sink that is down for a
/// few intervals catches up with recent data instead of growing memory without bound.
/// tokio's broadcast ring rounds capacities up to a power of two; this one is exact.
pub const BACKLOG: usize = 4;

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
// Sink kinds and configs
// ---------------------------------------------------------------------------------

/// Every sink name `--notify` accepts, built in this branch or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SinkKind {
    Log,
    Prometheus,
    Statsd,
    CloudWatch,
    Azure,
    Redis,
}

impl SinkKind {
    /// All kinds, in the order the help text lists them.
    pub const ALL: [SinkKind; 6] = [
        SinkKind::Log,
        SinkKind::Prometheus,
        SinkKind::Statsd,
        SinkKind::CloudWatch,
        SinkKind::Azure,
        SinkKind::Redis,
    ];

    /// The name used in `--notify` and as the `sink` field of log lines.
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::Log => "log",
            SinkKind::Prometheus => "prometheus",
            SinkKind::Statsd => "statsd",
            SinkKind::CloudWatch => "cloudwatch",
            SinkKind::Azure => "azure",
            SinkKind::Redis => "redis",
        }
    }

    /// Case-insensitive lookup of a `--notify` value.
    pub fn parse(name: &str) -> Option<SinkKind> {
        let name = name.trim();
        SinkKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name))
    }
}

/// One sink's validated options: what [`Notifier::start`] builds a [`Sink`] from.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkConfig {
    Log(log::LogConfig),
    Prometheus(prometheus::PrometheusConfig),
    Statsd(statsd::StatsdConfig),
}

impl SinkConfig {
    /// Validates the options of one sink kind.
    pub fn from_args(
        kind: SinkKind,
        args: &NotifyArgs,
        log_format: LogFormat,
    ) -> Result<SinkConfig, String> {
        match kind {
            SinkKind::Log => Ok(SinkConfig::Log(log::LogConfig::new(log_format))),
            SinkKind::Prometheus => {
                prometheus::PrometheusConfig::from_args(args).map(SinkConfig::Prometheus)
            }
            SinkKind::Statsd => statsd::StatsdConfig::from_args(args).map(SinkConfig::Statsd),
            // CLOUD SINKS PLUG IN HERE: replace this arm with one arm per cloud sink,
            // e.g. `SinkKind::CloudWatch => cloudwatch::CloudWatchConfig::from_args(args)
            // .map(SinkConfig::CloudWatch)`.
            SinkKind::CloudWatch | SinkKind::Azure | SinkKind::Redis => Err(format!(
                "--notify {} is not built in this branch",
                kind.name()
            )),
        }
    }

    /// Which kind of sink this configures.
    pub fn kind(&self) -> SinkKind {
        match self {
            SinkConfig::Log(_) => SinkKind::Log,
            SinkConfig::Prometheus(_) => SinkKind::Prometheus,
            SinkConfig::Statsd(_) => SinkKind::Statsd,
        }
    }

    /// Builds the sink; sinks that own a listener bind it here so a bad address fails
    /// the start instead of the first report.
    pub async fn build(&self) -> Result<Sink, String> {
        Ok(match self {
            SinkConfig::Log(c) => Sink::Log(c.build()),
            SinkConfig::Prometheus(c) => Sink::Prometheus(c.build().await?),
            SinkConfig::Statsd(c) => Sink::Statsd(c.build()),
        })
    }
}

/// `name (options)`, secrets masked: what `--print-config` shows for each sink.
impl fmt::Display for SinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkConfig::Log(c) => c.fmt(f),
            SinkConfig::Prometheus(c) => c.fmt(f),
            SinkConfig::Statsd(c) => c.fmt(f),
        }
    }
}

/// The validated notifier options: the interval and the sinks, checked once at start
/// so that a typo fails the launch, not the first report ten seconds later.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    /// Time between reports; also each sink's retry budget and log-throttle window.
    interval: Duration,
    /// In `--notify` order, each kind at most once.
    sinks: Vec<SinkConfig>,
}

impl NotifyConfig {
    /// Validates `--notify-interval` and every named sink's options.
    ///
    /// `--notify` values may also be comma separated. With `--queue-header` given and
    /// no sink named, the `log` sink is the default, so the measurement is visible
    /// without any further flag.
    pub fn from_args(
        args: &NotifyArgs,
        queue_header_set: bool,
        log_format: LogFormat,
    ) -> Result<NotifyConfig, String> {
        let interval = parse_interval(args.notify_interval)?;
        let mut kinds: Vec<SinkKind> = Vec::new();
        for name in args.sinks.iter().flat_map(|s| s.split(',')) {
            let kind = SinkKind::parse(name).ok_or_else(|| {
                let expected: Vec<&str> = SinkKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown sink '{}' in --notify (expected {})",
                    name.trim(),
                    expected.join(", ")
                )
            })?;
            if kinds.contains(&kind) {
                return Err(format!("--notify {} is given twice", kind.name()));
            }
            kinds.push(kind);
        }
        if kinds.is_empty() && queue_header_set {
            kinds.push(SinkKind::Log);
        }
        let sinks = kinds
            .into_iter()
            .map(|kind| SinkConfig::from_args(kind, args, log_format))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NotifyConfig { interval, sinks })
    }

    /// Time between reports (`--notify-interval`): the master's timer period.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The sinks that will run, for `--print-config` (each is `Display`).
    pub fn sinks(&self) -> &[SinkConfig] {
        &self.sinks
    }
}

fn parse_interval(secs: f64) -> Result<Duration, String> {
    // Display would spell 1e300 with 300 digits.
    let shown = if secs.abs() < 1e15 {
        secs.to_string()
    } else {
        format!("{secs:e}")
    };
    if secs.is_nan() || secs <= 0.0 {
        return Err(format!("--notify-interval must be > 0 (got {shown})"));
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("--notify-interval is too large (got {shown})"))
}

/// Checks that `value` looks like `HOST:PORT` (`[v6]:PORT` too); resolution happens
/// when the sink connects or binds. `option` names the flag in the message.
pub(crate) fn check_host_port(
    option: &str,
    value: &str,
    allow_port_zero: bool,
) -> Result<(), String> {
    let bad = || format!("{option} must be HOST:PORT (got '{value}')");
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains(['[', ']']) {
        return Err(bad());
    }
    if host.contains(':') && !value.starts_with('[') {
        return Err(format!(
            "{option}: write an IPv6 address as [ADDR]:PORT (got '{value}')"
        ));
    }
    match port.parse::<u16>() {
        Ok(0) if !allow_port_zero => Err(format!(
            "{option} needs a port other than 0 (got '{value}')"
        )),
        Ok(_) => Ok(()),
        Err(_) => Err(bad()),
    }
}

// ---------------------------------------------------------------------------------
// Sinks
// ---------------------------------------------------------------------------------

/// A running sink. A closed enum rather than a trait object: the set of sinks is
/// known at compile time and each `send` future stays a concrete, `Send` type.
pub enum Sink {
    Log(log::LogSink),
    Prometheus(prometheus::PrometheusSink),
    Statsd(statsd::StatsdSink),
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
    pub async fn start(config: NotifyConfig) -> Result<Notifier, String> {
        let mut sinks = Vec::with_capacity(config.sinks.len());
        for sink in &config.sinks {
            sinks.push(sink.build().await?);
        }
        Ok(Notifier::spawn(config.interval, sinks))
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
        let until = Instant::now() + deadline;
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
mod config_tests;
#[cfg(test)]
mod framework_tests;
