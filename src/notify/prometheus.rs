//! The `prometheus` sink: serves `GET /metrics` on `--metrics-bind` in the text
//! exposition format 0.0.4.
//!
//! Prometheus pulls, rwsgi reports per interval, so each [`Report`] is added into
//! running totals (cumulative since start, as Prometheus counters and histograms must
//! be) and a scrape renders those totals, followed by the last interval's gauges
//! ([`LastInterval`]). `GET /queue-time.json` serves the same last-interval values as
//! JSON, for scalers that read one number from a JSON path (KEDA's `metrics-api`).
//! The listener is bound in [`PrometheusConfig::build`], at start, so a busy address
//! fails the launch.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::last_interval::LastInterval;
use super::{check_host_port, SinkError};
use crate::admin_http;
use crate::cli::NotifyArgs;
use crate::error::ConfigError;
use crate::tracker::report::{MetricReport, Report, PROMETHEUS_BUCKETS};

/// The content type of the text exposition format this sink writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Options of the `prometheus` sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrometheusConfig {
    /// `HOST:PORT` to serve `/metrics` on (port 0 picks a free one; tests use it).
    pub bind: String,
}

impl PrometheusConfig {
    pub fn from_args(args: &NotifyArgs) -> Result<PrometheusConfig, ConfigError> {
        let bind = args
            .metrics_bind
            .as_deref()
            .ok_or("--notify prometheus needs --metrics-bind HOST:PORT")?;
        check_host_port("--metrics-bind", bind, true)?;
        Ok(PrometheusConfig {
            bind: bind.to_owned(),
        })
    }

    /// Binds the listener and starts serving (all-zero metrics until the first report).
    pub async fn build(&self) -> Result<PrometheusSink, ConfigError> {
        let listener = TcpListener::bind(&self.bind)
            .await
            .map_err(|e| format!("--metrics-bind {}: cannot listen: {e}", self.bind))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("--metrics-bind {}: {e}", self.bind))?;
        let totals = Arc::new(Mutex::new(Totals::default()));
        let server = tokio::spawn(admin_http::serve(
            listener,
            "prometheus",
            handler(totals.clone()),
        ));
        Ok(PrometheusSink {
            totals,
            addr,
            server,
        })
    }
}

impl fmt::Display for PrometheusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "prometheus (metrics-bind {})", self.bind)
    }
}

/// Accumulates reports; the `/metrics` server it owns stops when it is dropped.
#[derive(Debug)]
pub struct PrometheusSink {
    /// Shared with the server task; locked for microseconds on each side.
    totals: Arc<Mutex<Totals>>,
    /// The bound address, which differs from the option when its port was 0.
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl PrometheusSink {
    pub fn name(&self) -> &'static str {
        "prometheus"
    }

    /// Where `/metrics` is served.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds the report to the totals; never fails.
    pub async fn send(&mut self, report: &Report) -> Result<(), SinkError> {
        lock(&self.totals).add(report);
        Ok(())
    }
}

impl Drop for PrometheusSink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A panic elsewhere cannot leave the totals half-updated in a harmful way (every
/// field is independent), so a poisoned lock is used as is.
fn lock(totals: &Mutex<Totals>) -> std::sync::MutexGuard<'_, Totals> {
    totals.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------
// Totals and rendering
// ---------------------------------------------------------------------------------

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const STAMP_RESULTS: [&str; 5] = ["ok", "missing", "invalid", "future", "untrusted"];

/// One cumulative histogram over [`PROMETHEUS_BUCKETS`].
#[derive(Debug, Clone, Default)]
struct Histogram {
    /// `le` counts, cumulative over buckets and over reports.
    buckets: [u64; PROMETHEUS_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn add(&mut self, m: &MetricReport) {
        for (total, &le) in self.buckets.iter_mut().zip(PROMETHEUS_BUCKETS) {
            *total += count_le(m, le);
        }
        self.sum += m.sum;
        self.count += m.count;
    }
}

/// Samples `≤ le` in one report. Looked up by bound, not by index, so a report whose
/// buckets skip a bound still yields monotonic counts (the nearest lower bound's count);
/// clamped to `count` so that `+Inf` stays the largest.
fn count_le(m: &MetricReport, le: f64) -> u64 {
    m.buckets
        .iter()
        .filter(|(ub, _)| *ub <= le * (1.0 + 1e-9))
        .map(|(_, c)| *c)
        .max()
        .unwrap_or(0)
        .min(m.count)
}

/// Everything `/metrics` shows: running totals plus the latest gauges.
#[derive(Debug, Clone, Default)]
struct Totals {
    queue_time: Histogram,
    server_wait: Histogram,
    app_time: Histogram,
    requests: [u64; 5],
    stamps: [u64; 5],
    shed: u64,
    client_timeouts: u64,
    utilization: f64,
    workers: u32,
    /// The latest report's values, for the `rwsgi_interval_*` gauges and the JSON.
    last: LastInterval,
}

impl Totals {
    fn add(&mut self, r: &Report) {
        self.queue_time.add(&r.queue_time);
        self.server_wait.add(&r.server_wait);
        self.app_time.add(&r.app_time);
        for (total, n) in self.requests.iter_mut().zip(r.status_classes) {
            *total += n;
        }
        let s = &r.stamps;
        for (total, n) in
            self.stamps
                .iter_mut()
                .zip([s.ok, s.missing, s.invalid, s.future, s.untrusted])
        {
            *total += n;
        }
        self.shed += r.shed;
        self.client_timeouts += r.client_timeouts;
        self.utilization = r.utilization;
        self.workers = r.workers;
        self.last.update(r);
    }

    fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let histograms = [
            (
                "rwsgi_queue_time_seconds",
                "Time from the proxy's queue stamp to dispatch to a Python thread.",
                &self.queue_time,
            ),
            (
                "rwsgi_server_wait_seconds",
                "Time from the request's arrival (kernel receive time on TCP) to dispatch to the app.",
                &self.server_wait,
            ),
            (
                "rwsgi_app_time_seconds",
                "Time from dispatch to the response finished.",
                &self.app_time,
            ),
        ];
        for (name, help, h) in histograms {
            header(&mut out, name, help, "histogram");
            for (le, n) in PROMETHEUS_BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {n}", float(*le));
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum {}", float(h.sum));
            let _ = writeln!(out, "{name}_count {}", h.count);
        }
        header(
            &mut out,
            "rwsgi_utilization_ratio",
            "Busy Python-thread time over threads times interval, latest interval.",
            "gauge",
        );
        let _ = writeln!(out, "rwsgi_utilization_ratio {}", float(self.utilization));
        header(
            &mut out,
            "rwsgi_workers",
            "Live worker processes at the latest report.",
            "gauge",
        );
        let _ = writeln!(out, "rwsgi_workers {}", self.workers);
        header(
            &mut out,
            "rwsgi_requests_total",
            "Responses by status class.",
            "counter",
        );
        for (class, n) in STATUS_CLASSES.iter().zip(self.requests) {
            let _ = writeln!(out, "rwsgi_requests_total{{status_class=\"{class}\"}} {n}");
        }
        header(
            &mut out,
            "rwsgi_queue_stamps_total",
            "Requests by outcome of the queue header.",
            "counter",
        );
        for (result, n) in STAMP_RESULTS.iter().zip(self.stamps) {
            let _ = writeln!(out, "rwsgi_queue_stamps_total{{result=\"{result}\"}} {n}");
        }
        header(
            &mut out,
            "rwsgi_shed_total",
            "Requests answered 503 by --max-queue-time without calling the app.",
            "counter",
        );
        let _ = writeln!(out, "rwsgi_shed_total {}", self.shed);
        header(
            &mut out,
            "rwsgi_client_timeouts_total",
            "Connections aborted for a too-slow client (--client-body-timeout, --send-timeout).",
            "counter",
        );
        let _ = writeln!(out, "rwsgi_client_timeouts_total {}", self.client_timeouts);
        self.last.render_gauges(&mut out, header, float);
        out
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A float as the exposition format spells it: `+Inf` and `NaN`, where Rust would
/// write `inf` and `NaN`.
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        v.to_string()
    }
}

// ---------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------

/// The JSON of the last interval's values.
const JSON_PATH: &str = "/queue-time.json";
/// The content type of [`JSON_PATH`].
const JSON_TYPE: &str = "application/json";

fn handler(totals: Arc<Mutex<Totals>>) -> admin_http::Handler {
    Arc::new(move |req| respond(req, &totals))
}

fn respond<B>(req: &Request<B>, totals: &Mutex<Totals>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path != "/metrics" && path != JSON_PATH {
        return admin_http::text(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics and /queue-time.json\n",
        );
    }
    if let Some(refused) = admin_http::refuse_writes(req) {
        return refused;
    }
    if path == JSON_PATH {
        admin_http::body(StatusCode::OK, lock(totals).last.to_json(), JSON_TYPE)
    } else {
        admin_http::body(StatusCode::OK, lock(totals).render(), CONTENT_TYPE)
    }
}

#[cfg(test)]
mod tests;
