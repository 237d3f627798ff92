//! Validated notifier options: which sinks run ([`SinkKind`], [`SinkConfig`]) and how
//! often ([`NotifyConfig`]), checked once at start so that a typo fails the launch,
//! not the first report an interval later. Every error names the option to fix.
//!
//! Each sink validates its own options in its own file (`LogConfig`,
//! `PrometheusConfig`, `StatsdConfig`, …); this file only dispatches to them.

use std::fmt;
use std::time::Duration;

use super::{azure, cloudwatch, log, prometheus, redis, statsd, Sink};
use crate::cli::{LogFormat, NotifyArgs};
use crate::error::ConfigError;

/// Longest `--notify-interval` accepted: one day.
const MAX_INTERVAL_SECS: f64 = 86_400.0;

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

/// One sink's validated options: what [`Notifier::start`](super::Notifier::start)
/// builds a [`Sink`] from.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkConfig {
    Log(log::LogConfig),
    Prometheus(prometheus::PrometheusConfig),
    Statsd(statsd::StatsdConfig),
    CloudWatch(cloudwatch::CloudWatchConfig),
    Azure(azure::AzureConfig),
    Redis(redis::RedisConfig),
}

impl SinkConfig {
    /// Validates the options of one sink kind.
    pub fn from_args(
        kind: SinkKind,
        args: &NotifyArgs,
        log_format: LogFormat,
    ) -> Result<SinkConfig, ConfigError> {
        match kind {
            SinkKind::Log => Ok(SinkConfig::Log(log::LogConfig::new(log_format))),
            SinkKind::Prometheus => {
                prometheus::PrometheusConfig::from_args(args).map(SinkConfig::Prometheus)
            }
            SinkKind::Statsd => statsd::StatsdConfig::from_args(args).map(SinkConfig::Statsd),
            SinkKind::CloudWatch => {
                cloudwatch::CloudWatchConfig::from_args(args).map(SinkConfig::CloudWatch)
            }
            SinkKind::Azure => azure::AzureConfig::from_args(args).map(SinkConfig::Azure),
            SinkKind::Redis => redis::RedisConfig::from_args(args).map(SinkConfig::Redis),
        }
    }

    /// Which kind of sink this configures.
    pub fn kind(&self) -> SinkKind {
        match self {
            SinkConfig::Log(_) => SinkKind::Log,
            SinkConfig::Prometheus(_) => SinkKind::Prometheus,
            SinkConfig::Statsd(_) => SinkKind::Statsd,
            SinkConfig::CloudWatch(_) => SinkKind::CloudWatch,
            SinkConfig::Azure(_) => SinkKind::Azure,
            SinkConfig::Redis(_) => SinkKind::Redis,
        }
    }

    /// Builds the sink; sinks that own a listener bind it here so a bad address fails
    /// the start instead of the first report.
    pub async fn build(&self) -> Result<Sink, ConfigError> {
        Ok(match self {
            SinkConfig::Log(c) => Sink::Log(c.build()),
            SinkConfig::Prometheus(c) => Sink::Prometheus(c.build().await?),
            SinkConfig::Statsd(c) => Sink::Statsd(c.build()),
            SinkConfig::CloudWatch(c) => Sink::CloudWatch(c.build().await?),
            SinkConfig::Azure(c) => Sink::Azure(c.build().await?),
            SinkConfig::Redis(c) => Sink::Redis(c.build().await?),
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
            SinkConfig::CloudWatch(c) => c.fmt(f),
            SinkConfig::Azure(c) => c.fmt(f),
            SinkConfig::Redis(c) => c.fmt(f),
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
    ) -> Result<NotifyConfig, ConfigError> {
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
                return Err(ConfigError(format!(
                    "--notify {} is given twice",
                    kind.name()
                )));
            }
            kinds.push(kind);
        }
        if kinds.is_empty() && queue_header_set {
            kinds.push(SinkKind::Log);
        }
        // `--statsd-host` alone turns statsd on, as in gunicorn.
        if args.statsd_host.is_some() && !kinds.contains(&SinkKind::Statsd) {
            kinds.push(SinkKind::Statsd);
        }
        let sinks = kinds
            .into_iter()
            .map(|kind| SinkConfig::from_args(kind, args, log_format))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NotifyConfig { interval, sinks })
    }

    /// Time between reports (`--notify-interval`): the master's timer period.
    /// Hands AWS keys from Django settings to the CloudWatch sink, if configured.
    pub fn set_aws_keys(&mut self, keys: crate::config::django::AwsKeys) {
        for sink in &mut self.sinks {
            if let SinkConfig::CloudWatch(c) = sink {
                c.aws_keys = Some(keys.clone());
            }
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The sinks that will run, for `--print-config` (each is `Display`).
    pub fn sinks(&self) -> &[SinkConfig] {
        &self.sinks
    }
}

fn parse_interval(secs: f64) -> Result<Duration, ConfigError> {
    // Display would spell 1e300 with 300 digits.
    let shown = if secs.abs() < 1e15 {
        secs.to_string()
    } else {
        format!("{secs:e}")
    };
    if secs.is_nan() || secs <= 0.0 {
        return Err(ConfigError(format!(
            "--notify-interval must be > 0 (got {shown})"
        )));
    }
    // A report less than daily is useless for autoscaling, and the bound keeps
    // deadline arithmetic (`now + interval`) far from overflow.
    if secs > MAX_INTERVAL_SECS {
        return Err(ConfigError(format!(
            "--notify-interval must be at most {MAX_INTERVAL_SECS} (got {shown})"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Checks that `value` looks like `HOST:PORT` (`[v6]:PORT` too); resolution happens
/// when the sink connects or binds. `option` names the flag in the message.
pub(crate) fn check_host_port(
    option: &str,
    value: &str,
    allow_port_zero: bool,
) -> Result<(), ConfigError> {
    let bad = || format!("{option} must be HOST:PORT (got '{value}')");
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains(['[', ']']) {
        return Err(ConfigError(bad()));
    }
    if host.contains(':') && !value.starts_with('[') {
        return Err(ConfigError(format!(
            "{option}: write an IPv6 address as [ADDR]:PORT (got '{value}')"
        )));
    }
    match port.parse::<u16>() {
        Ok(0) if !allow_port_zero => Err(ConfigError(format!(
            "{option} needs a port other than 0 (got '{value}')"
        ))),
        Ok(_) => Ok(()),
        Err(_) => Err(ConfigError(bad())),
    }
}

#[cfg(test)]
mod tests;
