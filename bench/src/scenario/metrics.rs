//! Reading rwsgi's queue time from its prometheus `/metrics`, once a second.
//!
//! The family's `_sum` and `_count` are counters; the difference between two scrapes
//! gives the mean queue time of the requests dispatched in between, which is what
//! rwsgi itself would report for that interval.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::http_get;

/// One scrape.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scrape {
    /// Seconds since the start of the load.
    pub t: f64,
    /// `FAMILY_sum` summed over label sets, or `None` if the scrape failed.
    pub sum: Option<f64>,
    /// `FAMILY_count` summed over label sets.
    pub count: Option<f64>,
}

/// `(FAMILY_sum, FAMILY_count)` in an exposition-format text, each summed over all
/// label sets (per-worker series, if rwsgi exposes them).
pub fn read_family(text: &str, family: &str) -> (Option<f64>, Option<f64>) {
    let sum_name = format!("{family}_sum");
    let count_name = format!("{family}_count");
    let (mut sum, mut count) = (None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = split_sample(line) else {
            continue;
        };
        let slot = if name == sum_name {
            &mut sum
        } else if name == count_name {
            &mut count
        } else {
            continue;
        };
        if let Ok(v) = value.parse::<f64>() {
            *slot = Some(slot.unwrap_or(0.0) + v);
        }
    }
    (sum, count)
}

/// Splits `name{labels} value [timestamp]` into name and value; label values may hold
/// spaces, braces and escaped quotes.
fn split_sample(line: &str) -> Option<(&str, &str)> {
    let name_end = line.find(['{', ' ', '\t'])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    if rest.starts_with('{') {
        let mut in_quotes = false;
        let mut escaped = false;
        let mut close = None;
        for (i, ch) in rest.char_indices() {
            match ch {
                _ if escaped => escaped = false,
                '\\' if in_quotes => escaped = true,
                '"' => in_quotes = !in_quotes,
                '}' if !in_quotes => {
                    close = Some(i);
                    break;
                }
                _ => {}
            }
        }
        rest = &rest[close? + 1..];
    }
    let value = rest.split_whitespace().next()?;
    Some((name, value))
}

/// Scrapes `path` on `addr` every second (from `start`) until `stop` is set.
pub fn scrape_loop(
    addr: SocketAddr,
    path: &str,
    family: &str,
    start: Instant,
    stop: &AtomicBool,
    out: &Mutex<Vec<Scrape>>,
) {
    let mut tick = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = start + Duration::from_secs(tick);
        let now = Instant::now();
        if due > now {
            std::thread::sleep((due - now).min(Duration::from_millis(200)));
            continue;
        }
        tick += 1;
        let t = start.elapsed().as_secs_f64();
        let (sum, count) = match http_get::get(addr, path, Duration::from_millis(800)) {
            Ok(a) if a.status == 200 => read_family(&String::from_utf8_lossy(&a.body), family),
            _ => (None, None),
        };
        if let Ok(mut v) = out.lock() {
            v.push(Scrape { t, sum, count });
        }
    }
}

/// Mean queue time per interval between consecutive successful scrapes:
/// `(midpoint seconds, mean seconds)`; intervals without new requests are left out.
pub fn interval_means(scrapes: &[Scrape]) -> Vec<(f64, f64)> {
    let ok: Vec<(f64, f64, f64)> = scrapes
        .iter()
        .filter_map(|s| Some((s.t, s.sum?, s.count?)))
        .collect();
    ok.windows(2)
        .filter_map(|w| {
            let (t0, s0, c0) = w[0];
            let (t1, s1, c1) = w[1];
            let dc = c1 - c0;
            // A restart (counter reset) or an idle interval gives no sample.
            (dc > 0.0 && s1 >= s0).then(|| ((t0 + t1) / 2.0, (s1 - s0) / dc))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP rwsgi_queue_time_seconds Queue time.
# TYPE rwsgi_queue_time_seconds histogram
rwsgi_queue_time_seconds_bucket{le="0.001"} 3
rwsgi_queue_time_seconds_sum{worker="1"} 0.5
rwsgi_queue_time_seconds_count{worker="1"} 10
rwsgi_queue_time_seconds_sum{worker="2",odd="a } b \" c"} 1.5 1700000000000
rwsgi_queue_time_seconds_count{worker="2"} 30
rwsgi_queue_time_seconds_total_sum 99
rwsgi_app_time_seconds_sum 7
"#;

    #[test]
    fn sums_a_family_over_label_sets() {
        assert_eq!(
            read_family(TEXT, "rwsgi_queue_time_seconds"),
            (Some(2.0), Some(40.0))
        );
        assert_eq!(
            read_family(TEXT, "rwsgi_app_time_seconds"),
            (Some(7.0), None)
        );
        assert_eq!(read_family("", "x"), (None, None));
    }

    #[test]
    fn interval_means_come_from_counter_deltas() {
        let s = |t, sum, count| Scrape {
            t,
            sum: Some(sum),
            count: Some(count),
        };
        let scrapes = [
            s(1.0, 0.0, 0.0),
            s(2.0, 1.0, 100.0),
            Scrape {
                t: 3.0,
                sum: None,
                count: None,
            },
            s(4.0, 1.0, 100.0),
            s(5.0, 4.0, 110.0),
            s(6.0, 0.1, 5.0),
        ];
        assert_eq!(interval_means(&scrapes), vec![(1.5, 0.01), (4.5, 0.3)]);
    }
}
