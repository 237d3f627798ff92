//! `--notify redis`: the latest snapshot and a short history per host, in Redis.
//!
//! This file owns the options ([`RedisConfig`]), the key schema and the connection.
//! [`redact_url`] keeps the password of `--redis-url` out of every message.
//!
//! # Key schema (for apps and autoscalers such as KEDA)
//!
//! Each interval, in one `MULTI`/`EXEC`:
//!
//! - **`{prefix}:{hostname}`**, a hash, overwritten: `count`, `sum`, `avg`, `min`,
//!   `p50`, `p90`, `p99`, `max` of `queue_time` in seconds; `server_wait_count`,
//!   `server_wait_avg`, `server_wait_p99`, `app_time_count`, `app_time_avg`,
//!   `app_time_p99` (seconds); `requests` and `shed` (this interval); `utilization`
//!   (0..1); `workers`; `interval` (seconds); `timestamp` (unix seconds, end of the
//!   interval). It expires 3 × `--notify-interval` after the last write, so a host
//!   that stops reporting disappears instead of holding a stale number.
//! - **`{prefix}:{hostname}:history`**, a list, newest first: one compact JSON entry
//!   per interval, `{"t":unix,"n":count,"avg":s,"p50":s,"p90":s,"p99":s,"max":s,"u":0..1,"req":n}`,
//!   trimmed to `ceil(--redis-history / --notify-interval)` entries, same expiry.
//!
//! A fleet-wide value is the hashes of `SCAN MATCH {prefix}:*` (skipping
//! `:history`), e.g. the maximum `p90`. KEDA's `redis` scaler reads list lengths,
//! not hash fields; point KEDA at the prometheus sink or a metrics-api adapter.
//!
//! # Outages
//!
//! Connecting is lazy and bounded by [`CONNECT_TIMEOUT`], so a dead Redis costs one
//! fast failure per attempt and never blocks start-up or a request. After any
//! error the [`ConnectionManager`] is dropped and the next attempt makes a fresh
//! one: its built-in reconnect keeps a failed lazy connect cached until the next
//! I/O error, which would cost one more lost report once Redis is back.

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RetryMethod;

pub use super::redact::redact_url;
use super::redact::{scrub, truncate};
use super::SinkError;
use crate::cli::NotifyArgs;
use crate::error::ConfigError;
use crate::tracker::report::Report;

#[cfg(test)]
mod tests;

/// A Redis that takes longer than this to accept a connection counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound of one MULTI/EXEC round trip.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest error text passed on.
const MAX_MESSAGE: usize = 300;

// ---------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------

/// Validated `--redis-*` options. `Debug` and `Display` mask the URL's password.
#[derive(Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL; may hold a password, hence never printed raw.
    pub url: String,
    /// First part of every key, so several apps can share one Redis.
    pub key_prefix: String,
    /// How far back `{prefix}:{hostname}:history` reaches.
    pub history: Duration,
    /// `--notify-interval`: sets the TTL and the history length.
    pub interval: Duration,
}

impl RedisConfig {
    /// Checks every `--redis-*` option; errors name the option and never show the
    /// password.
    pub fn from_args(args: &NotifyArgs) -> Result<RedisConfig, ConfigError> {
        let url = args
            .redis_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or("--notify redis needs --redis-url (redis://HOST:PORT/DB or rediss://...)")?;
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(ConfigError(format!(
                "--redis-url must start with redis:// or rediss:// (got '{}')",
                redact_url(url)
            )));
        }
        redis::Client::open(url)
            .map_err(|_| format!("--redis-url '{}' is not a valid Redis URL", redact_url(url)))?;
        let key_prefix = args.redis_key_prefix.trim();
        if key_prefix.is_empty() {
            return Err("--redis-key-prefix must not be empty".into());
        }
        let history = args.redis_history;
        if !(history.is_finite() && history > 0.0) {
            return Err(ConfigError(format!(
                "--redis-history must be > 0 seconds (got {history})"
            )));
        }
        Ok(RedisConfig {
            url: url.to_string(),
            key_prefix: key_prefix.to_string(),
            history: Duration::try_from_secs_f64(history)
                .map_err(|_| format!("--redis-history is too large (got {history})"))?,
            interval: interval(args.notify_interval)?,
        })
    }

    /// Makes the client; connects lazily, so a Redis that is down at start-up costs
    /// a log line on the first report, not a failed start.
    pub async fn build(&self) -> Result<RedisSink, ConfigError> {
        let client = redis::Client::open(self.url.as_str()).map_err(|_| {
            format!(
                "--redis-url '{}' is not a valid Redis URL",
                redact_url(&self.url)
            )
        })?;
        tracing::info!(sink = "redis", url = %redact_url(&self.url), "redis sink ready (connects on first report)");
        let password = client
            .get_connection_info()
            .redis_settings()
            .password()
            .map(str::to_string);
        Ok(RedisSink {
            client,
            manager: None,
            password,
            key_prefix: self.key_prefix.clone(),
            history_len: history_len(self.history, self.interval),
            ttl: ttl(self.interval),
        })
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("history", &self.history)
            .field("interval", &self.interval)
            .finish()
    }
}

/// `redis (url=…, …)` for `--print-config`, password masked.
impl fmt::Display for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "redis (url={}, key-prefix={}, history={}s)",
            redact_url(&self.url),
            self.key_prefix,
            self.history.as_secs_f64()
        )
    }
}

/// `--notify-interval`, which sets the TTL and the history length.
fn interval(secs: f64) -> Result<Duration, ConfigError> {
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(ConfigError(format!(
            "--notify-interval must be > 0 seconds (got {secs})"
        ))),
    }
}

/// Entries kept in the history list: enough to span `history`, at least one.
pub(crate) fn history_len(history: Duration, interval: Duration) -> usize {
    let n = (history.as_secs_f64() / interval.as_secs_f64()).ceil();
    if n.is_finite() && n >= 1.0 {
        n.min(1_000_000.0) as usize
    } else {
        1
    }
}

/// Three intervals: one late report is tolerated, a dead host expires.
pub(crate) fn ttl(interval: Duration) -> Duration {
    (interval * 3).max(Duration::from_millis(1))
}

/// `{prefix}:{hostname}` and `{prefix}:{hostname}:history`.
pub(crate) fn keys(prefix: &str, hostname: &str) -> (String, String) {
    let hash = format!("{prefix}:{hostname}");
    let history = format!("{hash}:history");
    (hash, history)
}

// ---------------------------------------------------------------------------------
// Sink
// ---------------------------------------------------------------------------------

/// A Redis client and, while Redis answers, a live connection.
pub struct RedisSink {
    /// Parsed `--redis-url`; cheap to clone into a new connection manager.
    client: redis::Client,
    /// `None` until the first send and after a connection-level error.
    manager: Option<ConnectionManager>,
    /// Scrubbed from error text, in case a library ever echoes it.
    password: Option<String>,
    /// `--redis-key-prefix`.
    key_prefix: String,
    /// See [`history_len`].
    history_len: usize,
    /// See [`ttl`].
    ttl: Duration,
}

impl RedisSink {
    /// Builds the sink from its config (same as [`RedisConfig::build`]).
    pub async fn build(config: RedisConfig) -> Result<RedisSink, ConfigError> {
        config.build().await
    }

    /// The `--notify` name, used as the `sink` field of log lines.
    pub fn name(&self) -> &'static str {
        "redis"
    }

    /// Writes the hash and the history entry of `report` in one transaction.
    pub async fn send(&mut self, report: &Report) -> Result<(), SinkError> {
        let pipe = self.pipeline(report);
        let manager = match &self.manager {
            Some(m) => m.clone(),
            None => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(0);
                let m = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
                    .map_err(|e| self.error(&e))?;
                self.manager = Some(m.clone());
                m
            }
        };
        let mut conn = manager;
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.manager = None;
                Err(self.error(&e))
            }
        }
    }

    /// `MULTI; DEL hash; HSET hash …; PEXPIRE hash; LPUSH history; LTRIM; PEXPIRE; EXEC`.
    /// The hash is replaced, not merged, so a field never outlives its report.
    pub(crate) fn pipeline(&self, report: &Report) -> redis::Pipeline {
        let (hash, history) = keys(&self.key_prefix, &report.hostname);
        let ttl_ms = self.ttl.as_millis().min(i64::MAX as u128) as i64;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(&hash)
            .ignore()
            .hset_multiple(&hash, &hash_fields(report))
            .ignore()
            .pexpire(&hash, ttl_ms)
            .ignore()
            .lpush(&history, history_entry(report))
            .ignore()
            .ltrim(&history, 0, self.history_len as isize - 1)
            .ignore()
            .pexpire(&history, ttl_ms)
            .ignore();
        pipe
    }

    fn error(&self, e: &redis::RedisError) -> SinkError {
        let secrets: Vec<&str> = self.password.iter().map(String::as_str).collect();
        SinkError {
            retryable: is_retryable(e),
            message: truncate(scrub(&format!("redis: {e}"), &secrets), MAX_MESSAGE),
        }
    }
}

/// Refused, reset, timed out, LOADING, failover: all pass with time. A refused
/// password does not: the redis crate files it under "reconnect", but retrying it
/// only repeats the refusal (and makes the server's auth-failure log noisy), so it
/// costs one attempt per interval, like any other permanent error.
pub(crate) fn is_retryable(e: &redis::RedisError) -> bool {
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        return false;
    }
    e.is_io_error() || !matches!(e.retry_method(), RetryMethod::NoRetry)
}

/// The hash fields of the module docs.
pub(crate) fn hash_fields(report: &Report) -> Vec<(&'static str, String)> {
    let q = &report.queue_time;
    let (sw, app) = (&report.server_wait, &report.app_time);
    vec![
        ("count", q.count.to_string()),
        ("sum", num(q.sum)),
        ("avg", num(q.mean())),
        ("min", num(q.min)),
        ("p50", num(q.p50)),
        ("p90", num(q.p90)),
        ("p99", num(q.p99)),
        ("max", num(q.max)),
        ("server_wait_count", sw.count.to_string()),
        ("server_wait_avg", num(sw.mean())),
        ("server_wait_p99", num(sw.p99)),
        ("app_time_count", app.count.to_string()),
        ("app_time_avg", num(app.mean())),
        ("app_time_p99", num(app.p99)),
        ("requests", report.requests().to_string()),
        ("shed", report.shed.to_string()),
        ("utilization", num(report.utilization)),
        ("workers", report.workers.to_string()),
        ("interval", num(report.interval.as_secs_f64())),
        ("timestamp", num(unix_seconds(report))),
    ]
}

/// One compact JSON line for the history list.
pub(crate) fn history_entry(report: &Report) -> String {
    let q = &report.queue_time;
    serde_json::json!({
        "t": unix_seconds(report),
        "n": q.count,
        "avg": fin(q.mean()),
        "p50": fin(q.p50),
        "p90": fin(q.p90),
        "p99": fin(q.p99),
        "max": fin(q.max),
        "u": fin(report.utilization),
        "req": report.requests(),
    })
    .to_string()
}

fn unix_seconds(report: &Report) -> f64 {
    report
        .timestamp
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| (d.as_secs_f64() * 1000.0).round() / 1000.0)
}

fn fin(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// Plain decimal that every Redis client parses (`HINCRBYFLOAT`-style, no NaN).
fn num(v: f64) -> String {
    fin(v).to_string()
}
