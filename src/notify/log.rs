//! The `log` sink: one line per interval through `tracing` (target `rwsgi::notify`).
//!
//! It is the default sink when `--queue-header` is given, so it is what most people
//! see first. In human mode the line is a compact sentence with adaptive units; in
//! JSON mode (`--log-format json`) the same numbers are flat structured fields, in
//! seconds, so a log shipper can graph them without parsing text; they include each
//! metric's sum and min, so that the interval's exact mean is in the line too.

use std::fmt::{self, Write as _};

use tracing::info;

use super::SinkError;
use crate::cli::LogFormat;
use crate::tracker::report::{MetricReport, Report};

/// The `tracing` target of report lines, so they can be filtered on their own.
pub const TARGET: &str = "rwsgi::notify";

/// Options of the `log` sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Follows `--log-format`: a sentence for people, fields for machines.
    pub format: LogFormat,
}

impl LogConfig {
    pub fn new(format: LogFormat) -> LogConfig {
        LogConfig { format }
    }

    pub fn build(&self) -> LogSink {
        LogSink {
            format: self.format,
        }
    }
}

impl fmt::Display for LogConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = match self.format {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        };
        write!(f, "log (format {format})")
    }
}

/// Writes each report as one log line.
#[derive(Debug)]
pub struct LogSink {
    format: LogFormat,
}

impl LogSink {
    pub fn name(&self) -> &'static str {
        "log"
    }

    /// Never fails: if the log itself is broken there is nowhere to report that.
    pub async fn send(&mut self, report: &Report) -> Result<(), SinkError> {
        self.emit(report);
        Ok(())
    }

    /// Emits the line synchronously (tests capture it with a scoped subscriber).
    fn emit(&self, r: &Report) {
        match self.format {
            LogFormat::Human => info!(target: TARGET, "{}", human_line(r)),
            LogFormat::Json => {
                let [s1, s2, s3, s4, s5] = r.status_classes;
                let (q, w, a) = (&r.queue_time, &r.server_wait, &r.app_time);
                info!(
                    target: TARGET,
                    interval_s = r.interval.as_secs_f64(),
                    workers = r.workers,
                    requests = r.requests(),
                    status_1xx = s1, status_2xx = s2, status_3xx = s3, status_4xx = s4, status_5xx = s5,
                    queue_time_count = q.count, queue_time_sum = q.sum, queue_time_min = q.min,
                    queue_time_p50 = q.p50, queue_time_p90 = q.p90,
                    queue_time_p99 = q.p99, queue_time_max = q.max,
                    server_wait_count = w.count, server_wait_sum = w.sum, server_wait_min = w.min,
                    server_wait_p50 = w.p50, server_wait_p90 = w.p90,
                    server_wait_p99 = w.p99, server_wait_max = w.max,
                    app_time_count = a.count, app_time_sum = a.sum, app_time_min = a.min,
                    app_time_p50 = a.p50, app_time_p90 = a.p90,
                    app_time_p99 = a.p99, app_time_max = a.max,
                    stamps_ok = r.stamps.ok, stamps_missing = r.stamps.missing,
                    stamps_invalid = r.stamps.invalid, stamps_future = r.stamps.future,
                    stamps_untrusted = r.stamps.untrusted,
                    shed = r.shed,
                    client_timeouts = r.client_timeouts,
                    utilization = r.utilization,
                    "queue time report"
                );
            }
        }
    }
}

/// `queue time 10.0s: 120 requests (2xx 118, 5xx 2), shed 0, client timeouts 0, utilization 42.0%,
/// 2 workers | queue_time n=100 p50=12.0ms … | stamps ok=100 missing=20 …`
fn human_line(r: &Report) -> String {
    let mut s = format!(
        "queue time {:.1}s: {} requests",
        r.interval.as_secs_f64(),
        r.requests()
    );
    let classes: Vec<String> = r
        .status_classes
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| format!("{}xx {n}", i + 1))
        .collect();
    if !classes.is_empty() {
        let _ = write!(s, " ({})", classes.join(", "));
    }
    let _ = write!(
        s,
        ", shed {}, client timeouts {}, utilization {:.1}%, {} workers",
        r.shed,
        r.client_timeouts,
        r.utilization * 100.0,
        r.workers
    );
    for (name, m) in [
        ("queue_time", &r.queue_time),
        ("server_wait", &r.server_wait),
        ("app_time", &r.app_time),
    ] {
        let _ = write!(s, " | {name} {}", metric(m));
    }
    let st = &r.stamps;
    let _ = write!(
        s,
        " | stamps ok={} missing={} invalid={} future={} untrusted={}",
        st.ok, st.missing, st.invalid, st.future, st.untrusted
    );
    s
}

fn metric(m: &MetricReport) -> String {
    if m.count == 0 {
        return "n=0".to_owned();
    }
    format!(
        "n={} p50={} p90={} p99={} max={}",
        m.count,
        secs(m.p50),
        secs(m.p90),
        secs(m.p99),
        secs(m.max)
    )
}

/// Seconds in the unit that keeps three significant digits readable.
fn secs(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2}s")
    } else if s >= 0.001 {
        format!("{:.1}ms", s * 1e3)
    } else {
        format!("{:.0}µs", s * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::notify::testing::sample_report;

    /// Collects everything a subscriber writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8")
        }
    }

    fn capture(format: LogFormat, report: &Report) -> String {
        let buf = Buffer::default();
        let writer = buf.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false);
        let sink = LogConfig::new(format).build();
        match format {
            LogFormat::Json => {
                tracing::subscriber::with_default(builder.json().finish(), || sink.emit(report))
            }
            LogFormat::Human => {
                tracing::subscriber::with_default(builder.finish(), || sink.emit(report))
            }
        }
        buf.text()
    }

    #[test]
    fn json_mode_emits_structured_fields_in_seconds() {
        let report = sample_report(1);
        let out = capture(LogFormat::Json, &report);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).expect("one JSON object");
        assert_eq!(v["target"], TARGET);
        assert_eq!(v["level"], "INFO");
        let f = &v["fields"];
        assert_eq!(f["message"], "queue time report");
        assert_eq!(f["requests"], report.requests());
        assert_eq!(f["status_2xx"], report.status_classes[1]);
        assert_eq!(f["status_5xx"], report.status_classes[4]);
        assert_eq!(f["workers"], report.workers);
        assert_eq!(f["queue_time_count"], report.queue_time.count);
        assert_eq!(f["queue_time_p99"], report.queue_time.p99);
        assert_eq!(f["queue_time_sum"], report.queue_time.sum);
        assert_eq!(f["queue_time_min"], report.queue_time.min);
        assert_eq!(f["server_wait_sum"], report.server_wait.sum);
        assert_eq!(f["app_time_min"], report.app_time.min);
        assert_eq!(f["server_wait_max"], report.server_wait.max);
        assert_eq!(f["app_time_p50"], report.app_time.p50);
        assert_eq!(f["stamps_invalid"], report.stamps.invalid);
        assert_eq!(f["stamps_untrusted"], report.stamps.untrusted);
        assert_eq!(f["shed"], report.shed);
        assert_eq!(f["utilization"], report.utilization);
        assert_eq!(f["interval_s"], report.interval.as_secs_f64());
    }

    #[test]
    fn human_mode_is_one_readable_line() {
        let report = sample_report(1);
        let out = capture(LogFormat::Human, &report);
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(
            out.contains("INFO rwsgi::notify: queue time 10.0s: "),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "{} requests (2xx {}, 5xx {})",
                report.requests(),
                report.status_classes[1],
                report.status_classes[4]
            )),
            "{out}"
        );
        assert!(
            out.contains("| queue_time n=4 p50=20.0ms p90=150.0ms p99=1.20s max=1.20s"),
            "{out}"
        );
        assert!(out.contains("utilization 42.0%"), "{out}");
        assert!(
            out.contains("stamps ok=4 missing=2 invalid=1 future=0 untrusted=1"),
            "{out}"
        );
    }

    #[test]
    fn human_line_handles_an_empty_interval() {
        let mut report = sample_report(1);
        report.queue_time = MetricReport::default();
        report.status_classes = [0; 5];
        let line = human_line(&report);
        assert!(line.contains(": 0 requests, shed"), "{line}");
        assert!(line.contains("| queue_time n=0 |"), "{line}");
    }

    #[test]
    fn units_adapt_to_magnitude() {
        assert_eq!(secs(2.5), "2.50s");
        assert_eq!(secs(0.0123), "12.3ms");
        assert_eq!(secs(0.000_25), "250µs");
        assert_eq!(secs(0.0), "0µs");
    }
}
