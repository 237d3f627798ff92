//! The comparison's data: one record per run, and the medians the table shows.
//!
//! Everything here is plain serialisable data, so `render` can redraw the table and
//! the chart from the JSON of an earlier run without running anything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::report::Latency;

/// How the comparison was run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// UTC date and time of the start, `YYYY-MM-DD HH:MM`.
    pub date: String,
    /// CPU cores of the machine (shared by servers and generator).
    pub cores: usize,
    /// Worker processes of every server.
    pub workers: usize,
    /// Rounds; each cell is the median over them.
    pub rounds: usize,
    /// Seconds of measured load per run.
    pub duration_s: f64,
    /// Seconds of warm-up load before each measurement.
    pub warmup_s: f64,
    /// Generator threads.
    pub client_threads: usize,
    /// Whether this was a `--quick` run.
    pub quick: bool,
    /// Apps in table order.
    pub apps: Vec<String>,
    /// Servers in table order.
    pub servers: Vec<String>,
    /// The 1-minute load average before starting: a busy machine skews everything.
    pub loadavg_before: String,
}

/// One server on one app in one round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub round: usize,
    pub app: String,
    pub server: String,
    /// Successful requests per second.
    pub rps: f64,
    pub latency_ms: Latency,
    /// Failed requests.
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Peak resident memory of all the server's processes during the load, bytes.
    pub rss_peak_bytes: u64,
    /// Seconds from start to the first answer.
    pub ready_s: f64,
    /// Share of all cores used by other processes during the load (noise).
    #[serde(default)]
    pub other_cpu: f64,
    /// wrk's req/s on the same server right after (every answer; see `wrk_errors`).
    #[serde(default)]
    pub wrk_rps: Option<f64>,
    /// wrk's non-2xx/3xx answers and socket errors.
    #[serde(default)]
    pub wrk_errors: u64,
}

/// A server that did not run, or a run that failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub server: String,
    /// The app, when only that app's run failed.
    pub app: Option<String>,
    pub reason: String,
}

/// Medians over the rounds for one server on one app.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub app: String,
    pub server: String,
    /// Rounds that produced a record.
    pub rounds: usize,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub rss_mib: f64,
    /// Errors summed over the rounds.
    pub errors: u64,
    /// Lowest and highest req/s over the rounds: the spread behind the median.
    #[serde(default)]
    pub rps_min: f64,
    #[serde(default)]
    pub rps_max: f64,
    /// Median of wrk's req/s over the rounds that ran it.
    #[serde(default)]
    pub wrk_rps: Option<f64>,
    /// wrk's errors summed over the rounds.
    #[serde(default)]
    pub wrk_errors: u64,
}

/// A whole comparison, as written to latest.json.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub meta: Meta,
    pub notes: Vec<Note>,
    pub runs: Vec<RunRecord>,
    pub cells: Vec<Cell>,
}

impl Comparison {
    /// Recomputes the medians from the runs.
    pub fn summarise(&mut self) {
        let mut groups: BTreeMap<(String, String), Vec<&RunRecord>> = BTreeMap::new();
        for r in &self.runs {
            groups
                .entry((r.app.clone(), r.server.clone()))
                .or_default()
                .push(r);
        }
        self.cells = groups
            .into_iter()
            .map(|((app, server), runs)| Cell {
                rounds: runs.len(),
                rps: median(runs.iter().map(|r| r.rps)),
                p50_ms: median(runs.iter().map(|r| r.latency_ms.p50)),
                p99_ms: median(runs.iter().map(|r| r.latency_ms.p99)),
                rss_mib: median(runs.iter().map(|r| r.rss_peak_bytes as f64 / MIB)),
                errors: runs.iter().map(|r| r.errors).sum(),
                rps_min: runs.iter().map(|r| r.rps).fold(f64::INFINITY, f64::min),
                rps_max: runs.iter().map(|r| r.rps).fold(0.0, f64::max),
                wrk_rps: runs
                    .iter()
                    .any(|r| r.wrk_rps.is_some())
                    .then(|| median(runs.iter().filter_map(|r| r.wrk_rps))),
                wrk_errors: runs.iter().map(|r| r.wrk_errors).sum(),
                app,
                server,
            })
            .collect();
    }

    /// Median and largest share of the machine's CPU used by other processes
    /// during the runs.
    pub fn noise(&self) -> (f64, f64) {
        let v = self.runs.iter().map(|r| r.other_cpu);
        (median(v.clone()), v.fold(0.0, f64::max))
    }

    /// The cell of a server on an app.
    pub fn cell(&self, app: &str, server: &str) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.app == app && c.server == server)
    }

    /// `a ÷ b` of the median req/s on an app, when both ran.
    pub fn ratio(&self, app: &str, a: &str, b: &str) -> Option<f64> {
        let a = self.cell(app, a)?.rps;
        let b = self.cell(app, b)?.rps;
        (b > 0.0).then(|| a / b)
    }

    /// `a ÷ b` of the median wrk req/s on an app, when wrk ran on both.
    pub fn ratio_wrk(&self, app: &str, a: &str, b: &str) -> Option<f64> {
        let a = self.cell(app, a)?.wrk_rps?;
        let b = self.cell(app, b)?.wrk_rps?;
        (b > 0.0).then(|| a / b)
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// Median (mean of the middle two for an even count); 0 for none. NaNs sort last.
pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `YYYY-MM-DD HH:MM` (UTC) of a Unix time, without a date library.
pub fn utc_date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(round: usize, server: &str, rps: f64, rss: u64) -> RunRecord {
        RunRecord {
            round,
            app: "hello".into(),
            server: server.into(),
            rps,
            latency_ms: Latency {
                p50: rps / 1000.0,
                p99: rps / 100.0,
                ..Latency::default()
            },
            errors: 1,
            rss_peak_bytes: rss,
            ..RunRecord::default()
        }
    }

    #[test]
    fn medians_merge_the_rounds() {
        let mut c = Comparison {
            runs: vec![
                run(0, "rwsgi", 300.0, 30 << 20),
                run(1, "rwsgi", 100.0, 10 << 20),
                run(2, "rwsgi", 200.0, 20 << 20),
                run(0, "granian", 100.0, 50 << 20),
                run(1, "granian", 200.0, 70 << 20),
            ],
            ..Comparison::default()
        };
        c.summarise();
        let r = c.cell("hello", "rwsgi").unwrap();
        assert_eq!((r.rounds, r.rps, r.rss_mib, r.errors), (3, 200.0, 20.0, 3));
        assert_eq!(r.p99_ms, 2.0);
        assert_eq!((r.rps_min, r.rps_max), (100.0, 300.0));
        let g = c.cell("hello", "granian").unwrap();
        assert_eq!((g.rounds, g.rps, g.rss_mib), (2, 150.0, 60.0));
        assert_eq!(c.ratio("hello", "rwsgi", "granian"), Some(200.0 / 150.0));
        assert_eq!(c.ratio("hello", "rwsgi", "bjoern"), None);
    }

    #[test]
    fn median_handles_edge_cases() {
        assert_eq!(median([].into_iter()), 0.0);
        assert_eq!(median([5.0].into_iter()), 5.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
    }

    #[test]
    fn formats_utc_dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00");
        assert_eq!(utc_date(1_700_000_000), "2023-11-14 22:13");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00");
    }

    #[test]
    fn survives_a_json_round_trip() {
        let mut c = Comparison {
            runs: vec![run(0, "rwsgi", 1.0, 1)],
            ..Comparison::default()
        };
        c.summarise();
        let back: Comparison = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
