//! The `statsd` sink: one burst of UDP datagrams per interval to `--statsd-host`.
//!
//! # What is sent
//!
//! With `PREFIX` from `--statsd-prefix` (default `rwsgi`) and `TAGS` the
//! `|#k:v,k2:v2` suffix built from `--statsd-tag` (absent without tags):
//!
//! - `PREFIX.queue_time`, `PREFIX.server_wait`, `PREFIX.app_time`, in milliseconds:
//!   one line per distinct value of the report's `distribution`, with the count as a
//!   sample rate (`PREFIX.app_time:12.5|ms|@0.25` counts as 4 samples of 12.5 ms), so
//!   the server sees exact counts and a faithful distribution in at most 150 lines per
//!   metric instead of one line per request. Without tags the type is `ms` (a timer,
//!   understood by every statsd server); with tags, the server is by definition a
//!   DogStatsD one, and the type is `d`, a distribution aggregated globally.
//! - gauges `PREFIX.utilization` (0..1) and `PREFIX.workers`;
//! - counters `PREFIX.requests.2xx` (each class 1xx..5xx), `PREFIX.queue_stamps.ok`
//!   (`ok`, `missing`, `invalid`, `future`, `untrusted`) and `PREFIX.shed`, zeros
//!   included so that graphs show rates of 0 instead of gaps.
//!
//! - gunicorn's own request metrics, under gunicorn's names, so dashboards built on
//!   gunicorn keep working: counters `gunicorn.requests` and
//!   `gunicorn.request.status.CODE` (each code seen), the timer
//!   `gunicorn.request.duration` (ms, the `app_time` distribution as above, always
//!   `ms` as gunicorn sends it), the gauge `gunicorn.workers`, and the counters
//!   `gunicorn.log.critical`, `.error`, `.warning` and `.exception`: the server's
//!   own log lines of the interval (`logging.rs`), sent when not zero as gunicorn
//!   sends them only when a line is logged. They carry the
//!   prefix only when `--statsd-prefix` names one: gunicorn's default prefix is
//!   empty, rwsgi's (`rwsgi`) is not applied to gunicorn's names.
//!
//! Lines are packed, newline separated, into datagrams of at most 1432 bytes, which
//! fits any Ethernet path without fragmentation.
//!
//! The host is resolved on first use and again after any send error, so a statsd
//! agent that starts after rwsgi, or moves, is picked up without a restart.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::SystemTime;

use tokio::net::UdpSocket;

use super::{check_host_port, SinkError};
use crate::cli::NotifyArgs;
use crate::error::ConfigError;
use crate::tracker::report::Report;

/// Largest datagram sent: 1500 (Ethernet MTU) − 40 (IPv6) − 8 (UDP) − 20 of margin
/// for tunnels, the size DogStatsD clients use too.
pub const MAX_DATAGRAM: usize = 1432;

/// Options of the `statsd` sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsdConfig {
    /// `HOST:PORT` of the statsd server.
    pub host: String,
    /// Prepended to every metric name with a dot; empty for none.
    pub prefix: String,
    /// DogStatsD `key:value` tags on every line; their presence selects `|d`.
    pub tags: Vec<String>,
    /// Prepended to gunicorn's metric names: the prefix, unless it is rwsgi's default.
    pub gunicorn_prefix: String,
}

/// `--statsd-prefix`'s default, which gunicorn's names do not get (theirs is empty).
const DEFAULT_PREFIX: &str = "rwsgi";

impl StatsdConfig {
    pub fn from_args(args: &NotifyArgs) -> Result<StatsdConfig, ConfigError> {
        let host = args
            .statsd_host
            .as_deref()
            .ok_or("--notify statsd needs --statsd-host HOST:PORT")?;
        check_host_port("--statsd-host", host, false)?;
        let prefix = args.statsd_prefix.trim_end_matches('.');
        if prefix.contains(|c: char| ":|@#,".contains(c) || c.is_whitespace()) {
            return Err(ConfigError(format!(
                "--statsd-prefix must not contain ':', '|', '@', '#', ',' or whitespace (got '{}')",
                args.statsd_prefix
            )));
        }
        for tag in &args.statsd_tags {
            let well_formed = tag
                .split_once(':')
                .is_some_and(|(k, v)| !k.is_empty() && !v.is_empty())
                && !tag.contains(|c: char| "|,#".contains(c) || c.is_whitespace());
            if !well_formed {
                return Err(ConfigError(format!(
                    "--statsd-tag must be key:value without '|', ',', '#' or whitespace (got '{tag}')"
                )));
            }
        }
        Ok(StatsdConfig {
            host: host.to_owned(),
            prefix: prefix.to_owned(),
            tags: args.statsd_tags.clone(),
            gunicorn_prefix: if prefix == DEFAULT_PREFIX {
                String::new()
            } else {
                prefix.to_owned()
            },
        })
    }

    /// Cannot fail: the host is resolved when the first report goes out, so that a
    /// statsd agent started after rwsgi is not an error.
    pub fn build(&self) -> StatsdSink {
        StatsdSink {
            config: self.clone(),
            socket: None,
            pending: None,
        }
    }
}

impl fmt::Display for StatsdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "statsd (host {}, prefix '{}'", self.host, self.prefix)?;
        if !self.tags.is_empty() {
            write!(f, ", tags {}", self.tags.join(","))?;
        }
        f.write_str(")")
    }
}

/// Sends each report as a burst of datagrams.
#[derive(Debug)]
pub struct StatsdSink {
    config: StatsdConfig,
    /// Connected to the resolved host; dropped after an error to resolve again.
    socket: Option<UdpSocket>,
    /// The datagrams of the report being sent, kept across a retry so that it resumes
    /// after the last datagram sent instead of counting the first ones twice.
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    /// Identifies the report (one per interval).
    timestamp: SystemTime,
    datagrams: Vec<String>,
    /// Datagrams already sent.
    next: usize,
}

impl StatsdSink {
    pub fn name(&self) -> &'static str {
        "statsd"
    }

    /// Every error is retryable: resolution and sends fail transiently.
    pub async fn send(&mut self, report: &Report) -> Result<(), SinkError> {
        if self
            .pending
            .as_ref()
            .is_none_or(|p| p.timestamp != report.timestamp)
        {
            let datagrams = pack(&lines(report, &self.config), MAX_DATAGRAM);
            self.pending = Some(Pending {
                timestamp: report.timestamp,
                datagrams,
                next: 0,
            });
        }
        let socket = match self.socket.take() {
            Some(s) => s,
            None => connect(&self.config.host).await?,
        };
        let Some(pending) = self.pending.as_mut() else {
            return Ok(());
        };
        while let Some(datagram) = pending.datagrams.get(pending.next) {
            if let Err(e) = socket.send(datagram.as_bytes()).await {
                // Dropping the socket makes the retry resolve the host again.
                return Err(SinkError::retryable(format!(
                    "sending to --statsd-host {}: {e}",
                    self.config.host
                )));
            }
            pending.next += 1;
        }
        self.pending = None;
        self.socket = Some(socket);
        Ok(())
    }
}

async fn connect(host: &str) -> Result<UdpSocket, SinkError> {
    let err = |what: &str, e: &dyn fmt::Display| {
        SinkError::retryable(format!("--statsd-host {host}: {what}: {e}"))
    };
    let addr = tokio::net::lookup_host(host)
        .await
        .map_err(|e| err("cannot resolve", &e))?
        .next()
        .ok_or_else(|| err("cannot resolve", &"no address"))?;
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| err("cannot open a UDP socket", &e))?;
    // Connected, so that an ICMP "port unreachable" surfaces as an error on a later send.
    socket
        .connect(addr)
        .await
        .map_err(|e| err("cannot connect", &e))?;
    Ok(socket)
}

/// Every line of one report, in the order the module docs list them.
fn lines(r: &Report, c: &StatsdConfig) -> Vec<String> {
    let p = if c.prefix.is_empty() {
        String::new()
    } else {
        format!("{}.", c.prefix)
    };
    let tags = if c.tags.is_empty() {
        String::new()
    } else {
        format!("|#{}", c.tags.join(","))
    };
    let timer = if c.tags.is_empty() { "ms" } else { "d" };
    let mut out = Vec::with_capacity(64);
    for (name, m) in [
        ("queue_time", &r.queue_time),
        ("server_wait", &r.server_wait),
        ("app_time", &r.app_time),
    ] {
        timer_lines(&mut out, &format!("{p}{name}"), m, timer, &tags);
    }
    out.push(format!("{p}utilization:{}|g{tags}", r.utilization));
    out.push(format!("{p}workers:{}|g{tags}", r.workers));
    for (i, n) in r.status_classes.iter().enumerate() {
        out.push(format!("{p}requests.{}xx:{n}|c{tags}", i + 1));
    }
    let s = &r.stamps;
    let stamps = [
        ("ok", s.ok),
        ("missing", s.missing),
        ("invalid", s.invalid),
        ("future", s.future),
        ("untrusted", s.untrusted),
    ];
    for (result, n) in stamps {
        out.push(format!("{p}queue_stamps.{result}:{n}|c{tags}"));
    }
    out.push(format!("{p}shed:{}|c{tags}", r.shed));
    gunicorn_lines(&mut out, r, c, &tags);
    out
}

/// gunicorn's names for the same interval (see the module docs).
fn gunicorn_lines(out: &mut Vec<String>, r: &Report, c: &StatsdConfig, tags: &str) {
    let g = if c.gunicorn_prefix.is_empty() {
        "gunicorn".to_string()
    } else {
        format!("{}.gunicorn", c.gunicorn_prefix)
    };
    out.push(format!("{g}.requests:{}|c{tags}", r.requests()));
    timer_lines(
        out,
        &format!("{g}.request.duration"),
        &r.app_time,
        "ms",
        tags,
    );
    for (code, n) in &r.status_codes {
        out.push(format!("{g}.request.status.{code}:{n}|c{tags}"));
    }
    out.push(format!("{g}.workers:{}|g{tags}", r.workers));
    let l = &r.log_lines;
    for (level, n) in [
        ("critical", l.critical),
        ("error", l.error),
        ("warning", l.warning),
        ("exception", l.exception),
    ] {
        if n > 0 {
            out.push(format!("{g}.log.{level}:{n}|c{tags}"));
        }
    }
}

/// One line per distinct value of `m`'s distribution, in milliseconds, its count as
/// a sample rate.
fn timer_lines(
    out: &mut Vec<String>,
    name: &str,
    m: &crate::tracker::report::MetricReport,
    timer: &str,
    tags: &str,
) {
    // A tracker that gave no distribution still yields the right count and sum.
    let fallback = [(m.mean(), m.count)];
    let dist = if m.distribution.is_empty() {
        &fallback[..]
    } else {
        &m.distribution[..]
    };
    for &(secs, n) in dist.iter().filter(|d| d.1 > 0) {
        let ms = (secs * 1e6).round() / 1e3;
        if n == 1 {
            out.push(format!("{name}:{ms}|{timer}{tags}"));
        } else {
            out.push(format!("{name}:{ms}|{timer}|@{}{tags}", 1.0 / n as f64));
        }
    }
}

/// Joins lines with newlines into datagrams of at most `max` bytes; a single line
/// longer than that (only with absurd tags) goes alone rather than being lost.
fn pack(lines: &[String], max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in lines {
        if !current.is_empty() && current.len() + 1 + line.len() > max {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(line);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests;
