//! One [`Report`] rendered as CloudWatch `MetricDatum`s: pure data, no I/O.
//!
//! Kept apart from the client in [`super`] so that every rule CloudWatch
//! enforces on a datum (at most 150 `Values`, no `SampleCount` of 0, no NaN, percent
//! within 0..=100) is unit-tested without an endpoint.

use std::time::Duration;

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit, StatisticSet};

use crate::error::ConfigError;
use crate::notify::finite;
use crate::notify::metric_names::{
    APP_TIME, REQUEST_COUNT, SERVER_WAIT, SHED_COUNT, TIME_IN_QUEUE, UTILIZATION,
};
use crate::tracker::report::{MetricReport, Report};

/// CloudWatch accepts at most this many distinct `Values` per datum.
pub(crate) const MAX_VALUES: usize = 150;

/// Unit of the three time metrics. Seconds by default, because alarms built for
/// request-time-tracker compare against thresholds in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    /// Values as the tracker measures them.
    Seconds,
    /// Values × 1000, for dashboards that think in milliseconds.
    Milliseconds,
}

impl TimeUnit {
    /// Parses `--cloudwatch-unit`.
    pub fn parse(value: &str) -> Result<TimeUnit, ConfigError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "seconds" | "s" => Ok(TimeUnit::Seconds),
            "milliseconds" | "ms" => Ok(TimeUnit::Milliseconds),
            _ => Err(ConfigError(format!(
                "--cloudwatch-unit must be seconds or milliseconds (got '{value}')"
            ))),
        }
    }

    /// The option value, for `--print-config`.
    pub fn name(self) -> &'static str {
        match self {
            TimeUnit::Seconds => "seconds",
            TimeUnit::Milliseconds => "milliseconds",
        }
    }

    fn scale(self) -> f64 {
        match self {
            TimeUnit::Seconds => 1.0,
            TimeUnit::Milliseconds => 1000.0,
        }
    }

    fn standard_unit(self) -> StandardUnit {
        match self {
            TimeUnit::Seconds => StandardUnit::Seconds,
            TimeUnit::Milliseconds => StandardUnit::Milliseconds,
        }
    }
}

/// 1 (high resolution) when reports come more often than once a minute, so that
/// CloudWatch keeps each interval apart instead of folding them into one minute;
/// 60 otherwise, which is cheaper.
pub(crate) fn storage_resolution(interval: Duration) -> i32 {
    if interval < Duration::from_secs(60) {
        1
    } else {
        60
    }
}

/// What every datum of one call shares.
pub(crate) struct Common<'a> {
    /// From `--cloudwatch-dimension`, already validated.
    pub dimensions: &'a [Dimension],
    /// Unit of the time metrics.
    pub unit: TimeUnit,
    /// See [`storage_resolution`].
    pub storage_resolution: i32,
}

/// The datums of one PutMetricData call, in a fixed order. A time metric without
/// samples is left out: CloudWatch rejects a `SampleCount` of 0, and a made-up zero
/// would drag averages down. The counts and `Utilization` are always sent, so an idle
/// host still reports that it is idle.
pub(crate) fn build(report: &Report, common: &Common<'_>) -> Vec<MetricDatum> {
    let timestamp = DateTime::from(report.timestamp);
    let mut data = Vec::with_capacity(6);
    for (name, metric) in [
        (TIME_IN_QUEUE, &report.queue_time),
        (SERVER_WAIT, &report.server_wait),
        (APP_TIME, &report.app_time),
    ] {
        if let Some(datum) = timing_datum(name, metric, common, timestamp) {
            data.push(datum);
        }
    }
    let utilization_percent = (finite(report.utilization) * 100.0).clamp(0.0, 100.0);
    for (name, value, unit) in [
        (REQUEST_COUNT, report.requests() as f64, StandardUnit::Count),
        (SHED_COUNT, report.shed as f64, StandardUnit::Count),
        (UTILIZATION, utilization_percent, StandardUnit::Percent),
    ] {
        data.push(
            datum(name, common, timestamp)
                .value(value)
                .unit(unit)
                .build(),
        );
    }
    data
}

fn datum(
    name: &str,
    common: &Common<'_>,
    timestamp: DateTime,
) -> aws_sdk_cloudwatch::types::builders::MetricDatumBuilder {
    MetricDatum::builder()
        .metric_name(name)
        .set_dimensions(Some(common.dimensions.to_vec()))
        .timestamp(timestamp)
        .storage_resolution(common.storage_resolution)
}

/// CloudWatch takes either `StatisticValues` or `Values`/`Counts` in one datum, not
/// both (InvalidParameterCombination). `Values`/`Counts` is the one that lets
/// CloudWatch answer percentiles (p90, p99), so that is what goes out, made exact
/// where an autoscaler looks: the counts add up to the sample count, the smallest and
/// largest values are the exact min and max, and Σ value × count is the exact sum.
/// Without a distribution (it never happens with the tracker's reports), the
/// statistics go out as `StatisticValues`.
fn timing_datum(
    name: &str,
    metric: &MetricReport,
    common: &Common<'_>,
    timestamp: DateTime,
) -> Option<MetricDatum> {
    if metric.count == 0 {
        return None;
    }
    let scale = common.unit.scale();
    let min = finite(metric.min) * scale;
    let max = (finite(metric.max) * scale).max(min);
    let sum =
        (finite(metric.sum) * scale).clamp(min * metric.count as f64, max * metric.count as f64);
    let builder = datum(name, common, timestamp).unit(common.unit.standard_unit());
    let (values, counts) = values_and_counts(&metric.distribution, scale);
    let total: f64 = counts.iter().sum();
    if values.is_empty() || total != metric.count as f64 {
        let stats = StatisticSet::builder()
            .sample_count(metric.count as f64)
            .sum(sum)
            .minimum(min)
            .maximum(max)
            .build();
        return Some(builder.statistic_values(stats).build());
    }
    let (values, counts) = exact_points(values, counts, min, max, sum);
    Some(
        builder
            .set_values(Some(values))
            .set_counts(Some(counts))
            .build(),
    )
}

/// Pins the extremes to the exact `min` and `max` and moves interior values (within
/// `[min, max]`, largest counts first) until Σ value × count equals `sum`.
pub(crate) fn exact_points(
    values: Vec<f64>,
    counts: Vec<f64>,
    min: f64,
    max: f64,
    sum: f64,
) -> (Vec<f64>, Vec<f64>) {
    let mut points: Vec<(f64, f64)> = values.into_iter().zip(counts).collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    pin(&mut points, min, true);
    pin(&mut points, max, false);
    // Pinning may have split a point off; merge the closest interior neighbours
    // until CloudWatch's limit holds again.
    while points.len() > MAX_VALUES && points.len() > 3 {
        let i = (1..points.len() - 2)
            .min_by(|a, b| {
                let ga = points[a + 1].0 - points[*a].0;
                let gb = points[b + 1].0 - points[*b].0;
                ga.total_cmp(&gb)
            })
            .unwrap_or(1);
        let (v1, c1) = points[i];
        let (v2, c2) = points[i + 1];
        points[i] = ((v1 * c1 + v2 * c2) / (c1 + c2), c1 + c2);
        points.remove(i + 1);
    }
    let pinned = |i: usize, len: usize| i == 0 || i + 1 == len;
    for _ in 0..4 {
        let have: f64 = points.iter().map(|(v, c)| v * c).sum();
        let residual = sum - have;
        if residual.abs() <= 1e-9 * sum.abs().max(1.0) {
            break;
        }
        let len = points.len();
        let mut order: Vec<usize> = (0..len).filter(|i| !pinned(*i, len)).collect();
        order.sort_by(|a, b| points[*b].1.total_cmp(&points[*a].1));
        let mut left = residual;
        for i in order {
            let (v, c) = points[i];
            let moved = (v + left / c).clamp(min, max);
            left -= (moved - v) * c;
            points[i].0 = moved;
            if left.abs() <= 1e-12 {
                break;
            }
        }
    }
    points.into_iter().unzip()
}

/// Makes the first (or last) point sit exactly at `at`, splitting one sample off when
/// the point holds several.
fn pin(points: &mut Vec<(f64, f64)>, at: f64, first: bool) {
    let Some(&(v, c)) = (if first { points.first() } else { points.last() }) else {
        return;
    };
    if v == at {
        return;
    }
    if c <= 1.0 {
        let i = if first { 0 } else { points.len() - 1 };
        points[i].0 = at;
    } else if first {
        points[0].1 -= 1.0;
        points.insert(0, (at, 1.0));
    } else {
        let last = points.len() - 1;
        points[last].1 -= 1.0;
        points.push((at, 1.0));
    }
}

/// `Values`/`Counts` from the tracker's distribution, scaled to the unit. Empty and
/// non-finite entries are dropped (CloudWatch rejects NaN and would fail the whole
/// call). The tracker promises at most [`MAX_VALUES`] entries; should it ever send
/// more, neighbours are merged (count-weighted mean) rather than the call failing.
pub(crate) fn values_and_counts(distribution: &[(f64, u64)], scale: f64) -> (Vec<f64>, Vec<f64>) {
    let points: Vec<(f64, u64)> = distribution
        .iter()
        .filter(|(v, c)| *c > 0 && v.is_finite())
        .map(|&(v, c)| (v * scale, c))
        .collect();
    if points.len() > MAX_VALUES {
        return merge_to(&points, MAX_VALUES);
    }
    points.into_iter().map(|(v, c)| (v, c as f64)).unzip()
}

/// Merges sorted neighbours (count-weighted mean) down to at most `limit` points.
fn merge_to(points: &[(f64, u64)], limit: usize) -> (Vec<f64>, Vec<f64>) {
    let mut points = points.to_vec();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let chunk = points.len().div_ceil(limit.max(1));
    points
        .chunks(chunk.max(1))
        .map(|group| {
            let count: u64 = group.iter().map(|p| p.1).sum();
            let weighted: f64 = group.iter().map(|p| p.0 * p.1 as f64).sum();
            (weighted / count.max(1) as f64, count as f64)
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::testing::decile_report;

    fn common(dims: &[Dimension], unit: TimeUnit) -> Common<'_> {
        Common {
            dimensions: dims,
            unit,
            storage_resolution: 1,
        }
    }

    fn find<'a>(data: &'a [MetricDatum], name: &str) -> Option<&'a MetricDatum> {
        data.iter().find(|d| d.metric_name() == Some(name))
    }

    #[test]
    fn every_metric_with_units_and_statistics() {
        let dims = [Dimension::builder().name("Env").value("prod").build()];
        let data = build(&decile_report(), &common(&dims, TimeUnit::Seconds));
        let names: Vec<_> = data.iter().filter_map(|d| d.metric_name()).collect();
        // AppTime has no samples, so it is left out rather than sent with SampleCount 0.
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

        let q = find(&data, TIME_IN_QUEUE).unwrap();
        assert_eq!(q.unit(), Some(&StandardUnit::Seconds));
        assert!(
            q.statistic_values().is_none(),
            "CloudWatch rejects StatisticValues together with Values"
        );
        assert_eq!(q.values().len(), 10);
        assert_eq!(q.counts(), [1.0; 10]);
        let sum: f64 = q.values().iter().zip(q.counts()).map(|(v, c)| v * c).sum();
        assert!((sum - 4.5).abs() < 1e-9, "{sum}");
        assert_eq!(q.values()[0], 0.0);
        assert_eq!(q.values()[9], 0.9);
        assert_eq!(q.dimensions(), dims);
        assert_eq!(q.storage_resolution(), Some(1));
        assert!(q.timestamp().is_some());

        let sw = find(&data, SERVER_WAIT).unwrap();
        assert!(sw.values().is_empty(), "no distribution: statistics only");
        assert_eq!(sw.statistic_values().unwrap().sample_count(), Some(12.0));

        let requests = find(&data, REQUEST_COUNT).unwrap();
        assert_eq!(
            (requests.value(), requests.unit()),
            (Some(12.0), Some(&StandardUnit::Count))
        );
        assert_eq!(find(&data, SHED_COUNT).unwrap().value(), Some(2.0));
        let util = find(&data, UTILIZATION).unwrap();
        assert_eq!(
            (util.value(), util.unit()),
            (Some(37.5), Some(&StandardUnit::Percent))
        );
    }

    #[test]
    fn milliseconds_scale_values_and_statistics() {
        let data = build(&decile_report(), &common(&[], TimeUnit::Milliseconds));
        let q = find(&data, TIME_IN_QUEUE).unwrap();
        assert_eq!(q.unit(), Some(&StandardUnit::Milliseconds));
        let sum: f64 = q.values().iter().zip(q.counts()).map(|(v, c)| v * c).sum();
        assert!((sum - 4500.0).abs() < 1e-6, "{sum}");
        assert_eq!(
            q.counts().iter().sum::<f64>(),
            10.0,
            "counts are never scaled"
        );
        assert_eq!(q.values()[9], 900.0);
    }

    #[test]
    fn idle_interval_still_sends_counts() {
        let mut report = decile_report();
        report.queue_time = MetricReport::default();
        report.server_wait = MetricReport::default();
        report.status_classes = [0; 5];
        report.shed = 0;
        report.utilization = f64::NAN;
        let data = build(&report, &common(&[], TimeUnit::Seconds));
        let names: Vec<_> = data.iter().filter_map(|d| d.metric_name()).collect();
        assert_eq!(names, [REQUEST_COUNT, SHED_COUNT, UTILIZATION]);
        assert!(data.iter().all(|d| d.value() == Some(0.0)));
    }

    #[test]
    fn utilization_is_clamped_to_a_percentage() {
        let mut report = decile_report();
        report.utilization = 1.7;
        let data = build(&report, &common(&[], TimeUnit::Seconds));
        assert_eq!(find(&data, UTILIZATION).unwrap().value(), Some(100.0));
    }

    #[test]
    fn values_are_capped_at_150_and_keep_count_and_sum() {
        let dist: Vec<(f64, u64)> = (0..1000).map(|i| (i as f64 / 1000.0, 2)).collect();
        let (values, counts) = values_and_counts(&dist, 1.0);
        assert!(values.len() <= MAX_VALUES && values.len() == counts.len());
        assert_eq!(counts.iter().sum::<f64>(), 2000.0);
        let sum: f64 = values.iter().zip(&counts).map(|(v, c)| v * c).sum();
        let exact: f64 = dist.iter().map(|(v, c)| v * *c as f64).sum();
        assert!((sum - exact).abs() < 1e-6, "{sum} vs {exact}");
        assert!(values.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn exact_points_keep_count_sum_min_and_max() {
        // A coarse distribution (bin midpoints) whose weighted sum is off.
        let values = vec![0.012, 0.05, 0.11, 0.4];
        let counts = vec![5.0, 20.0, 10.0, 3.0];
        let (v, c) = exact_points(values, counts, 0.01, 0.42, 2.5);
        assert_eq!(c.iter().sum::<f64>(), 38.0);
        assert_eq!(v.first(), Some(&0.01));
        assert_eq!(v.last(), Some(&0.42));
        let sum: f64 = v.iter().zip(&c).map(|(v, c)| v * c).sum();
        assert!((sum - 2.5).abs() < 1e-9, "{sum}");
        assert!(v.iter().all(|x| (0.01..=0.42).contains(x)));
        assert!(v.len() <= MAX_VALUES);

        let many: Vec<f64> = (1..=150).map(|i| i as f64 / 1000.0).collect();
        let (v, c) = exact_points(many, vec![2.0; 150], 0.0005, 0.2, 22.0);
        assert!(v.len() <= MAX_VALUES, "{}", v.len());
        assert_eq!(c.iter().sum::<f64>(), 300.0);
        let sum: f64 = v.iter().zip(&c).map(|(v, c)| v * c).sum();
        assert!((sum - 22.0).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn empty_and_non_finite_points_are_dropped() {
        let (values, counts) = values_and_counts(&[(0.1, 0), (f64::NAN, 3), (0.2, 4)], 1.0);
        assert_eq!((values, counts), (vec![0.2], vec![4.0]));
    }

    #[test]
    fn storage_resolution_follows_the_interval() {
        assert_eq!(storage_resolution(Duration::from_secs(10)), 1);
        assert_eq!(storage_resolution(Duration::from_millis(59_999)), 1);
        assert_eq!(storage_resolution(Duration::from_secs(60)), 60);
    }

    #[test]
    fn unit_parsing() {
        assert_eq!(TimeUnit::parse("Milliseconds"), Ok(TimeUnit::Milliseconds));
        assert_eq!(TimeUnit::parse("seconds"), Ok(TimeUnit::Seconds));
        assert!(TimeUnit::parse("minutes")
            .unwrap_err()
            .0
            .contains("--cloudwatch-unit"));
    }
}
