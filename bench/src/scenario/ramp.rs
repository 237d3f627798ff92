//! The autoscaling ramp, shared by `scenario` and `autoscale`: its load (open model,
//! stamped with the due time) and what the client sees of it per second.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::cli::LoadShape;
use crate::load::request::StampAt;
use crate::load::stats::Second;
use crate::load::{LoadConfig, Model};
use crate::runner::apps::App;
use crate::schedule::{Schedule, Step};

/// The ramp's load shape: `app`'s requests, each stamped in `stamp_header` with its
/// due time (when it "reached the proxy"), 60 s per request. `duration` and `warmup`
/// only matter for a closed-loop probe made from it; the ramp itself is timed by its
/// schedule.
pub fn shape(
    app: &App,
    connections: usize,
    threads: usize,
    stamp_header: &str,
    keep_alive: bool,
) -> LoadShape {
    LoadShape {
        connections,
        threads,
        duration: 3.0,
        requests: None,
        rate: None,
        warmup: 0.0,
        timeout: 60.0,
        no_keep_alive: !keep_alive,
        method: app.method.to_string(),
        body_size: app.body_size,
        headers: Vec::new(),
        stamp_header: Some(stamp_header.to_string()),
        stamp_at: StampAt::Due,
    }
}

/// The ramp's load: `shape` against `url` as an open model of `levels × capacity`,
/// `step` per level.
pub fn config(
    shape: &LoadShape,
    url: &str,
    capacity: f64,
    levels: &[f64],
    step: Duration,
) -> Result<LoadConfig> {
    let mut cfg = shape.to_config(url)?;
    cfg.model = Model::Open {
        schedule: schedule(capacity, levels, step),
    };
    Ok(cfg)
}

/// Steps of `levels × capacity`, `step` long each.
pub fn schedule(capacity: f64, levels: &[f64], step: Duration) -> Schedule {
    Schedule::steps(
        levels
            .iter()
            .map(|l| Step {
                rate: capacity * l,
                duration: step,
            })
            .collect(),
    )
}

/// The app's service time: the mean latency of the first level, leaving out its first
/// second (connections still opening). At the first level (20% by default) nothing
/// queues, so latency is service time plus a constant transport cost.
pub fn service_time(series: &[Second], step_secs: usize) -> f64 {
    let first = series.iter().take(step_secs.max(2)).skip(1);
    let (sum, n) = first.fold((0u64, 0u64), |(s, n), x| (s + x.latency_sum_us, n + x.ok));
    if n == 0 {
        0.0
    } else {
        sum as f64 / n as f64 / 1e6
    }
}

/// One second of a ramp as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Client {
    /// Seconds since start (the second's start).
    pub t: f64,
    /// Requests due in this second.
    pub offered: u64,
    /// Successful answers in this second.
    pub throughput: u64,
    /// Failed requests that ended in this second.
    pub errors: u64,
    /// Mean client-measured latency − service time, seconds (`None` without answers).
    pub client_queue: Option<f64>,
}

impl Client {
    /// Second `i` of the generator's series, `service` seconds of app time subtracted.
    pub fn of(i: usize, s: &Second, service: f64) -> Client {
        Client {
            t: i as f64,
            offered: s.offered,
            throughput: s.ok,
            errors: s.errors,
            client_queue: (s.ok > 0).then(|| (s.mean_latency() - service).max(0.0)),
        }
    }
}

/// One second of the scenario, as plotted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Row {
    #[serde(flatten)]
    pub client: Client,
    /// rwsgi's reported mean queue time for the interval around this second.
    pub server_queue: Option<f64>,
}

/// Joins the generator's series with rwsgi's interval means (by the second that holds
/// each interval's midpoint).
pub fn rows(series: &[Second], service: f64, server: &[(f64, f64)]) -> Vec<Row> {
    // Trailing seconds with nothing due and nothing answered are the run's shutdown.
    let len = series
        .iter()
        .rposition(|s| s.offered > 0 || s.ok > 0)
        .map_or(0, |i| i + 1);
    series[..len]
        .iter()
        .enumerate()
        .map(|(i, s)| Row {
            client: Client::of(i, s, service),
            server_queue: server
                .iter()
                .find(|(t, _)| t.floor() as usize == i)
                .map(|(_, q)| *q),
        })
        .collect()
}

/// How well the two queue-time curves agree where both exist: Pearson correlation and
/// mean absolute difference (seconds). `None` with fewer than 3 common seconds.
pub fn agreement(rows: &[Row]) -> Option<(f64, f64)> {
    let pairs: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| Some((r.client.client_queue?, r.server_queue?)))
        .collect();
    if pairs.len() < 3 {
        return None;
    }
    let n = pairs.len() as f64;
    let (mx, my) = pairs
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let (mut sxy, mut sxx, mut syy, mut mad) = (0.0, 0.0, 0.0, 0.0);
    for (x, y) in &pairs {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx).powi(2);
        syy += (y - my).powi(2);
        mad += (x - y).abs() / n;
    }
    let r = if sxx > 0.0 && syy > 0.0 {
        sxy / (sxx * syy).sqrt()
    } else {
        0.0
    };
    Some((r, mad))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sec(ok: u64, mean_ms: u64) -> Second {
        Second {
            ok,
            offered: ok,
            latency_sum_us: ok * mean_ms * 1000,
            ..Second::default()
        }
    }

    #[test]
    fn ramp_scales_levels_by_capacity() {
        let s = schedule(100.0, &[0.5, 1.5], Duration::from_secs(2));
        assert_eq!(s.total_requests(), 400);
        assert_eq!(s.step_list()[1].rate, 150.0);
    }

    #[test]
    fn service_time_skips_the_first_second() {
        let series = [sec(10, 50), sec(10, 10), sec(30, 12), sec(100, 500)];
        let st = service_time(&series, 3);
        assert!((st - 0.0115).abs() < 1e-9, "{st}");
        assert_eq!(service_time(&[], 3), 0.0);
    }

    #[test]
    fn rows_join_client_and_server_curves() {
        let idle = Second {
            offered: 5,
            ..Second::default()
        };
        let series = [sec(10, 10), sec(10, 30), idle, sec(0, 0)];
        let rows = rows(&series, 0.010, &[(1.5, 0.019)]);
        assert_eq!(rows.len(), 3, "the empty tail is trimmed");
        assert_eq!(rows[0].client.client_queue, Some(0.0));
        assert!((rows[1].client.client_queue.unwrap() - 0.020).abs() < 1e-9);
        assert_eq!(rows[1].server_queue, Some(0.019));
        assert_eq!(rows[2].client.client_queue, None);
    }

    #[test]
    fn agreement_of_tracking_curves() {
        let mk = |c: f64, s: f64| Row {
            client: Client {
                t: 0.0,
                offered: 0,
                throughput: 0,
                errors: 0,
                client_queue: Some(c),
            },
            server_queue: Some(s),
        };
        let rows: Vec<Row> = (0..10).map(|i| mk(i as f64, i as f64 + 0.1)).collect();
        let (r, mad) = agreement(&rows).unwrap();
        assert!((r - 1.0).abs() < 1e-9);
        assert!((mad - 0.1).abs() < 1e-9);
        assert!(agreement(&rows[..2]).is_none());
    }
}
