//! One interval's measurements, from one worker or merged across workers.
//!
//! Workers hand their [`Snapshot`] to the master (see [`Snapshot::encode`]); the master
//! merges them exactly and renders one [`Report`] per host per interval. Merging adds
//! histograms and counts and never averages a percentile, so the merged p99 is the p99
//! of every request the host served.

use std::time::{Duration, SystemTime};

use super::report::{LogLines, Report, StampCounts};
use super::timing::Timing;

/// Everything measured in one interval. Fields are public so that the master and tests
/// can read them; [`Snapshot::merge`] keeps them consistent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    /// `dispatch − proxy stamp` for requests with an `ok` or `future` stamp (shed ones
    /// included: their wait is exactly what an autoscaler must see).
    pub queue_time: Timing,
    /// `dispatch − arrival` (monotonic; arrival = kernel receive time on TCP) for
    /// every request that reached dispatch, shed ones included; known even without
    /// a proxy.
    pub server_wait: Timing,
    /// `response finished − dispatch` for every request that reached the app.
    pub app_time: Timing,
    /// Queue header outcome of every request that reached dispatch.
    pub stamps: StampCounts,
    /// Requests answered 503 by `--max-queue-time` without calling the app.
    pub shed: u64,
    /// Connections aborted because the client was too slow: a request body that
    /// stopped arriving (`--client-body-timeout`) or a response it stopped reading
    /// (`--send-timeout`).
    pub client_timeouts: u64,
    /// Responses by status class, index 0 = 1xx … 4 = 5xx (shed requests are 5xx).
    pub status_classes: [u64; 5],
    /// Responses by exact code (shed requests are 503s).
    pub status_codes: super::status::StatusCodes,
    /// Python-thread time spent on requests (dispatch to finish) within the interval;
    /// a request that spans intervals counts in each of them for its part.
    pub busy: Duration,
    /// Python-thread time available: threads × interval length, summed over workers,
    /// so that merged `busy ÷ capacity` weighs each worker by its size.
    pub capacity: Duration,
    /// Workers that contributed: 1 from a worker's recorder, summed by merging.
    pub workers: u32,
    /// The process's WARN/ERROR log lines of the interval: the recorder leaves it
    /// zero, the worker fills it in before sending (`logging::take_line_counts`).
    pub log_lines: LogLines,
}

impl Snapshot {
    /// An empty snapshot of zero workers: the master's starting point for merging.
    pub fn new() -> Snapshot {
        Snapshot::default()
    }

    /// Adds `other` into `self`, exactly: the result is what one recorder would have
    /// measured had it seen both sets of requests.
    pub fn merge(&mut self, other: &Snapshot) {
        self.queue_time.merge(&other.queue_time);
        self.server_wait.merge(&other.server_wait);
        self.app_time.merge(&other.app_time);
        let (s, o) = (&mut self.stamps, &other.stamps);
        s.ok = s.ok.saturating_add(o.ok);
        s.missing = s.missing.saturating_add(o.missing);
        s.invalid = s.invalid.saturating_add(o.invalid);
        s.future = s.future.saturating_add(o.future);
        s.untrusted = s.untrusted.saturating_add(o.untrusted);
        self.shed = self.shed.saturating_add(other.shed);
        self.client_timeouts = self.client_timeouts.saturating_add(other.client_timeouts);
        for (mine, theirs) in self.status_classes.iter_mut().zip(other.status_classes) {
            *mine = mine.saturating_add(theirs);
        }
        self.status_codes.merge(&other.status_codes);
        self.busy = self.busy.saturating_add(other.busy);
        self.capacity = self.capacity.saturating_add(other.capacity);
        self.workers = self.workers.saturating_add(other.workers);
        self.log_lines.add(&other.log_lines);
    }

    /// Busy ÷ capacity, clamped to 0..=1: busy time is measured inside the interval, so
    /// it exceeds capacity only by the jitter between two clock reads.
    pub fn utilization(&self) -> f64 {
        if self.capacity.is_zero() {
            return 0.0;
        }
        (self.busy.as_secs_f64() / self.capacity.as_secs_f64()).clamp(0.0, 1.0)
    }

    /// The report that every notifier sink receives, for the interval of length
    /// `interval` that ended at `timestamp`.
    pub fn render(&self, hostname: &str, timestamp: SystemTime, interval: Duration) -> Report {
        Report {
            timestamp,
            interval,
            hostname: hostname.to_owned(),
            workers: self.workers,
            queue_time: self.queue_time.render(),
            server_wait: self.server_wait.render(),
            app_time: self.app_time.render(),
            stamps: self.stamps,
            shed: self.shed,
            client_timeouts: self.client_timeouts,
            status_classes: self.status_classes,
            status_codes: self.status_codes.nonzero(),
            utilization: self.utilization(),
            log_lines: self.log_lines,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::header::Stamp;
    use crate::tracker::recorder::Recorder;

    const HOST: &str = "web-1";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A deterministic mix of every kind of request, as `(stamp, server_wait, app_time,
    /// status, shed)`.
    fn traffic(n: u64) -> Vec<(Stamp, Duration, Duration, u16, bool)> {
        (0..n)
            .map(|i| {
                let stamp = match i % 7 {
                    0 => Stamp::Missing,
                    1 => Stamp::Invalid,
                    2 => Stamp::Future,
                    3 => Stamp::Untrusted,
                    _ => Stamp::Ok(Duration::from_micros(i * i % 2_000_003)),
                };
                let status = [200, 201, 302, 404, 500, 101][(i % 6) as usize];
                let server_wait = Duration::from_micros(i * 31 % 50_000);
                let app_time = Duration::from_micros(i * 7919 % 300_000 + 50);
                (stamp, server_wait, app_time, status, i % 50 == 0)
            })
            .collect()
    }

    fn feed(recorder: &Recorder, requests: &[(Stamp, Duration, Duration, u16, bool)]) {
        for &(stamp, server_wait, app_time, status, shed) in requests {
            if shed {
                recorder.record_shed(server_wait, &stamp);
            } else {
                recorder.record_dispatch(&stamp, server_wait);
                recorder.record_finish(app_time, status);
            }
        }
    }

    #[test]
    fn merged_workers_equal_one_worker_that_saw_everything() {
        let requests = traffic(5000);
        let (a, b, all) = (Recorder::new(4), Recorder::new(4), Recorder::new(4));
        let (left, right) = requests.split_at(1789);
        feed(&a, left);
        feed(&b, right);
        feed(&all, &requests);

        let mut merged = Snapshot::new();
        merged.merge(&a.take());
        merged.merge(&b.take());
        let all = all.take();

        assert_eq!(merged.workers, 2);
        for (got, want) in [
            (&merged.queue_time, &all.queue_time),
            (&merged.server_wait, &all.server_wait),
            (&merged.app_time, &all.app_time),
        ] {
            assert_eq!(got.count(), want.count());
            assert_eq!(got.sum(), want.sum());
            assert_eq!(got.min(), want.min());
            assert_eq!(got.max(), want.max());
            for q in [0.5, 0.9, 0.99, 0.999] {
                assert_eq!(got.quantile(q), want.quantile(q));
            }
            assert_eq!(got, want, "histograms identical bin for bin");
        }
        assert_eq!(merged.stamps, all.stamps);
        assert_eq!(merged.shed, all.shed);
        assert_eq!(merged.status_classes, all.status_classes);
        // Busy time is wall-clock time spent, not a function of the samples fed.
        assert!(merged.busy <= merged.capacity && all.busy <= all.capacity);

        let (m, w) = (
            merged.render(HOST, SystemTime::UNIX_EPOCH, ms(10)),
            all.render(HOST, SystemTime::UNIX_EPOCH, ms(10)),
        );
        assert_eq!(m.queue_time, w.queue_time);
        assert_eq!(m.server_wait, w.server_wait);
        assert_eq!(m.app_time, w.app_time);
    }

    #[test]
    fn counts_are_consistent_after_merge() {
        let requests = traffic(700);
        let (a, b) = (Recorder::new(1), Recorder::new(1));
        feed(&a, &requests[..300]);
        feed(&b, &requests[300..]);
        let mut merged = a.take();
        merged.merge(&b.take());
        let s = &merged.stamps;
        let stamped = s.ok + s.missing + s.invalid + s.future + s.untrusted;
        assert_eq!(stamped, 700, "every request has one stamp outcome");
        assert_eq!(merged.queue_time.count(), s.ok + s.future);
        assert_eq!(merged.server_wait.count(), 700);
        assert_eq!(merged.shed, 14);
        assert_eq!(merged.app_time.count(), 700 - 14);
        assert_eq!(merged.status_classes.iter().sum::<u64>(), 700);
        assert!(merged.status_classes.iter().all(|&n| n > 0));
    }

    #[test]
    fn render_ten_requests_a_hundred_ms_apart() {
        let recorder = Recorder::new(1);
        for i in 0..10 {
            recorder.record_dispatch(&Stamp::Ok(ms(i * 100)), ms(i * 100));
            recorder.record_finish(ms(100), 200);
        }
        let snapshot = recorder.take();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let report = snapshot.render(HOST, at, Duration::from_secs(10));
        assert_eq!(report.hostname, HOST);
        assert_eq!(report.timestamp, at);
        assert_eq!(report.interval, Duration::from_secs(10));
        assert_eq!(report.workers, 1);
        for metric in [&report.queue_time, &report.server_wait] {
            assert_eq!(metric.count, 10);
            assert!((metric.sum - 4.5).abs() < 1e-9);
            assert!(
                metric.p50 >= 0.4 && metric.p50 <= 0.5 * 1.01,
                "{}",
                metric.p50
            );
            assert_eq!(metric.max, 0.9);
            assert_eq!(metric.min, 0.0);
        }
        assert_eq!(report.app_time.count, 10);
        assert!((report.app_time.mean() - 0.1).abs() < 1e-9);
        assert_eq!(report.stamps.ok, 10);
        assert_eq!(report.status_classes, [0, 10, 0, 0, 0]);
        assert_eq!(report.requests(), 10);
        assert!((0.0..=1.0).contains(&report.utilization));
    }

    #[test]
    fn utilization_is_busy_over_capacity_and_clamped() {
        let mut s = Snapshot::new();
        assert_eq!(s.utilization(), 0.0, "no capacity, no division by zero");
        s.capacity = Duration::from_secs(40);
        s.busy = Duration::from_secs(10);
        assert_eq!(s.utilization(), 0.25);
        s.busy = Duration::from_secs(50);
        assert_eq!(s.utilization(), 1.0);

        // Merged, each worker weighs by its capacity: 8 of (4 + 16) seconds.
        let mut a = Snapshot {
            capacity: Duration::from_secs(4),
            busy: Duration::from_secs(4),
            workers: 1,
            ..Snapshot::new()
        };
        let b = Snapshot {
            capacity: Duration::from_secs(16),
            busy: Duration::from_secs(4),
            workers: 1,
            ..Snapshot::new()
        };
        a.merge(&b);
        assert_eq!(a.utilization(), 0.4);
        assert_eq!(
            a.render(HOST, SystemTime::UNIX_EPOCH, ms(1)).utilization,
            0.4
        );
    }
}
