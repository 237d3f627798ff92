//! One [`Report`] rendered as Azure Monitor custom-metric bodies: pure data, no I/O.
//!
//! The ingestion API takes one metric per POST, shaped as Azure documents it:
//!
//! ```json
//! {"time": "2026-11-25T17:00:00Z",
//!  "data": {"baseData": {
//!     "metric": "TimeInQueue", "namespace": "rwsgi",
//!     "dimNames": ["Env"],
//!     "series": [{"dimValues": ["prod"], "min": 0.0, "max": 0.9, "sum": 4.5, "count": 10}]}}}
//! ```
//!
//! Time metrics are in seconds (Azure custom metrics carry no unit). A counter is one
//! pre-aggregated sample (`min = max = sum = value`, `count = 1`), so Azure's *Sum*
//! gives the total; `Utilization` is a percentage. A time metric without samples is
//! left out, because Azure rejects a `count` below 1.

use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::notify::finite;
use crate::notify::metric_names::{
    APP_TIME, REQUEST_COUNT, SERVER_WAIT, SHED_COUNT, TIME_IN_QUEUE, UTILIZATION,
};
use crate::tracker::report::{MetricReport, Report};

/// The pre-aggregated numbers of one series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Series {
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: u64,
}

impl Series {
    fn single(value: f64) -> Series {
        let v = finite(value);
        Series {
            min: v,
            max: v,
            sum: v,
            count: 1,
        }
    }

    fn of(metric: &MetricReport) -> Option<Series> {
        if metric.count == 0 {
            return None;
        }
        let min = finite(metric.min);
        Some(Series {
            min,
            max: finite(metric.max).max(min),
            sum: finite(metric.sum),
            count: metric.count,
        })
    }
}

/// `(metric name, body)` for every metric of the report, in a fixed order.
pub(crate) fn bodies(
    report: &Report,
    namespace: &str,
    dimensions: &[(String, String)],
) -> Vec<(&'static str, Value)> {
    let time = iso8601(report.timestamp);
    let utilization_percent = (finite(report.utilization) * 100.0).clamp(0.0, 100.0);
    let series: [(&'static str, Option<Series>); 6] = [
        (TIME_IN_QUEUE, Series::of(&report.queue_time)),
        (SERVER_WAIT, Series::of(&report.server_wait)),
        (APP_TIME, Series::of(&report.app_time)),
        (
            REQUEST_COUNT,
            Some(Series::single(report.requests() as f64)),
        ),
        (SHED_COUNT, Some(Series::single(report.shed as f64))),
        (UTILIZATION, Some(Series::single(utilization_percent))),
    ];
    series
        .into_iter()
        .filter_map(|(name, s)| s.map(|s| (name, body(&time, name, namespace, dimensions, s))))
        .collect()
}

/// One POST body. Without dimensions, `dimNames`/`dimValues` are left out, as the
/// API documents them as optional.
pub(crate) fn body(
    time: &str,
    metric: &str,
    namespace: &str,
    dimensions: &[(String, String)],
    s: Series,
) -> Value {
    let mut series = json!({"min": s.min, "max": s.max, "sum": s.sum, "count": s.count});
    let mut base = json!({"metric": metric, "namespace": namespace, "series": []});
    if !dimensions.is_empty() {
        let names: Vec<&str> = dimensions.iter().map(|(n, _)| n.as_str()).collect();
        let values: Vec<&str> = dimensions.iter().map(|(_, v)| v.as_str()).collect();
        base["dimNames"] = json!(names);
        series["dimValues"] = json!(values);
    }
    base["series"] = json!([series]);
    json!({"time": time, "data": {"baseData": base}})
}

/// UTC, whole seconds, `Z` suffix: the form Azure's examples use.
pub(crate) fn iso8601(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::testing::decile_report;
    use std::time::Duration;

    #[test]
    fn time_is_iso8601_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_900);
        assert_eq!(iso8601(t), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn body_field_by_field() {
        let dims = vec![
            ("Env".to_string(), "prod".to_string()),
            ("Role".into(), "web".into()),
        ];
        let report = decile_report();
        let all = bodies(&report, "rwsgi", &dims);
        let names: Vec<_> = all.iter().map(|(n, _)| *n).collect();
        // AppTime has no samples in the sample report: left out (Azure wants count ≥ 1).
        assert_eq!(
            names,
            [
                TIME_IN_QUEUE,
                SERVER_WAIT,
                REQUEST_COUNT,
                SHED_COUNT,
                UTILIZATION
            ]
        );

        let (_, q) = &all[0];
        assert_eq!(q["time"], json!(iso8601(report.timestamp)));
        let base = &q["data"]["baseData"];
        assert_eq!(base["metric"], "TimeInQueue");
        assert_eq!(base["namespace"], "rwsgi");
        assert_eq!(base["dimNames"], json!(["Env", "Role"]));
        let series = base["series"].as_array().unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0]["dimValues"], json!(["prod", "web"]));
        assert_eq!(series[0]["min"], json!(0.0));
        assert_eq!(series[0]["max"], json!(0.9));
        assert_eq!(series[0]["sum"], json!(4.5));
        assert_eq!(series[0]["count"], json!(10));
        assert_eq!(
            q.as_object().unwrap().len(),
            2,
            "only time and data at the top"
        );

        let util = &all[4].1["data"]["baseData"]["series"][0];
        assert_eq!(
            (
                util["min"].clone(),
                util["max"].clone(),
                util["sum"].clone(),
                util["count"].clone()
            ),
            (json!(37.5), json!(37.5), json!(37.5), json!(1))
        );
        let requests = &all[2].1["data"]["baseData"]["series"][0];
        assert_eq!(
            (requests["sum"].clone(), requests["count"].clone()),
            (json!(12.0), json!(1))
        );
    }

    #[test]
    fn no_dimensions_means_no_dim_fields() {
        let all = bodies(&decile_report(), "ns", &[]);
        let base = &all[0].1["data"]["baseData"];
        assert!(base.get("dimNames").is_none());
        assert!(base["series"][0].get("dimValues").is_none());
    }

    #[test]
    fn non_finite_numbers_never_reach_the_json() {
        let mut report = decile_report();
        report.queue_time.sum = f64::NAN;
        report.queue_time.max = f64::INFINITY;
        report.utilization = f64::NAN;
        for (_, body) in bodies(&report, "ns", &[]) {
            let s = &body["data"]["baseData"]["series"][0];
            for key in ["min", "max", "sum"] {
                assert!(s[key].is_f64() || s[key].is_u64(), "{key} = {}", s[key]);
            }
            assert!(s["min"].as_f64() <= s["max"].as_f64());
        }
    }
}
