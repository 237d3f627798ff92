//! The per-worker hot path: every request is recorded here, by whichever thread
//! dispatches, finishes or sheds it.
//!
//! One [`Recorder`] per worker, shared through an `Arc` by its Python threads and its
//! async side. Recording holds a mutex for a handful of additions on preallocated
//! memory (no allocation, nothing that can block or panic), and everything that can
//! be computed before taking the lock is. Measured in release on the 2-core dev box:
//! dispatch + finish cost 40–70 ns per request uncontended, 150–250 ns with two
//! threads doing nothing but record (measured before busy time became an integral,
//! which added one vDSO clock read, some 20 ns, outside the lock to dispatch and to
//! finish); a hello-world WSGI request costs tens of µs. The GIL
//! already serializes the Python threads, so contention is rare and a sharded or
//! lock-free design is not worth its complexity unless the bench says otherwise.
//!
//! The histograms are not recorded into on the request path: each sample's bin is
//! worked out before the lock and counted in [`Bins`] under it (an increment), and
//! [`Recorder::take`] folds the bins into the interval's histograms. `take`
//! allocates the next interval's empty histograms and bins *before* taking the lock,
//! swaps them in and folds after releasing it, so the notifier timer never stalls a
//! request either.
//!
//! Busy time (for `utilization`) is the integral of busy Python threads over time: each
//! dispatch, finish and take first adds `threads in flight × time since the last event`
//! to the open interval. A request therefore counts in every interval it spans, not
//! only in the one where it finishes: a thread stuck in a 30 s request reads as busy in
//! each of the intervals it is stuck in, instead of 0% until the request ends.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::header::Stamp;
use super::snapshot::Snapshot;
use super::timing::{Bins, Sample};

/// Collects one worker's measurements for the current interval.
#[derive(Debug)]
pub struct Recorder {
    /// Python threads of this worker, for `capacity = threads × elapsed`.
    threads: u32,
    /// The interval being recorded.
    current: Mutex<Current>,
}

/// The open interval: its snapshot and when it began.
#[derive(Debug)]
struct Current {
    /// Everything recorded since `started` but the histograms' bins; `capacity` and
    /// `workers` are filled in by `take`.
    snapshot: Snapshot,
    /// The histograms' bins since `started`, folded into the snapshot by `take`.
    bins: IntervalBins,
    /// Monotonic start of the interval, so a wall-clock step cannot skew utilization.
    started: Instant,
    /// Requests dispatched and not finished yet: the Python threads busy right now.
    in_flight: u32,
    /// Until when `snapshot.busy` holds the busy time of the requests in flight.
    busy_until: Instant,
}

impl Current {
    /// Adds the busy time of the requests in flight from `busy_until` up to `now`.
    ///
    /// `now` is read before the lock, so two threads may arrive out of order; the later
    /// one then adds nothing rather than moving `busy_until` back, which loses only the
    /// nanoseconds between their clock reads.
    fn accrue(&mut self, now: Instant) {
        // Idle since `busy_until`: nothing to add, only the mark moves (no clock
        // arithmetic on the usual dispatch of a request to an idle thread).
        if self.in_flight == 0 {
            self.busy_until = self.busy_until.max(now);
            return;
        }
        if let Some(elapsed) = now.checked_duration_since(self.busy_until) {
            let busy = elapsed.saturating_mul(self.in_flight);
            self.snapshot.busy = self.snapshot.busy.saturating_add(busy);
            self.busy_until = now;
        }
    }
}

impl Recorder {
    /// A recorder for a worker with `threads` Python threads (at least 1 is assumed).
    pub fn new(threads: usize) -> Recorder {
        let now = Instant::now();
        Recorder {
            threads: u32::try_from(threads.max(1)).unwrap_or(u32::MAX),
            current: Mutex::new(Current {
                snapshot: Snapshot::new(),
                bins: IntervalBins::new(),
                started: now,
                in_flight: 0,
                busy_until: now,
            }),
        }
    }

    /// Python threads this recorder counts capacity for.
    pub fn threads(&self) -> usize {
        self.threads as usize
    }

    /// Records a request at dispatch, the moment a Python thread takes it: its stamp
    /// outcome, its `queue_time` (`Ok` → the value, `Future` → 0) and its `server_wait`.
    /// From now until [`Recorder::record_finish`], one thread counts as busy.
    pub fn record_dispatch(&self, stamp: &Stamp, server_wait: Duration) {
        self.record_dispatch_at(stamp, server_wait, Instant::now());
    }

    /// [`Recorder::record_dispatch`] at `now`, a clock reading the caller already has.
    pub fn record_dispatch_at(&self, stamp: &Stamp, server_wait: Duration, now: Instant) {
        let waits = Waits::new(stamp, server_wait);
        let mut current = self.lock();
        current.accrue(now);
        current.in_flight = current.in_flight.saturating_add(1);
        waits.add_to(&mut current, stamp);
    }

    /// Records a request whose response has been sent (or abandoned): its `app_time`
    /// and its status class; its thread stops counting as busy.
    pub fn record_finish(&self, app_time: Duration, status: u16) {
        self.record_finish_at(app_time, status, Instant::now());
    }

    /// [`Recorder::record_finish`] at `now`, a clock reading the caller already has.
    pub fn record_finish_at(&self, app_time: Duration, status: u16, now: Instant) {
        let sample = Sample::new(app_time);
        let class = status_class(status);
        let mut current = self.lock();
        current.accrue(now);
        current.in_flight = current.in_flight.saturating_sub(1);
        current.bins.app_time.count(&sample);
        let snapshot = &mut current.snapshot;
        snapshot.app_time.add_exact(&sample);
        snapshot.status_classes[class] = snapshot.status_classes[class].saturating_add(1);
        snapshot.status_codes.add(status);
    }

    /// Records a request answered 503 by `--max-queue-time` without calling the app.
    ///
    /// It is recorded like a dispatch (stamp outcome, `queue_time`, `server_wait`),
    /// because the wait that got it shed is the signal an autoscaler needs most, plus
    /// one shed and one 5xx. It has no `app_time` and no busy time.
    pub fn record_shed(&self, server_wait: Duration, stamp: &Stamp) {
        let waits = Waits::new(stamp, server_wait);
        let mut current = self.lock();
        waits.add_to(&mut current, stamp);
        let snapshot = &mut current.snapshot;
        snapshot.shed = snapshot.shed.saturating_add(1);
        snapshot.status_classes[4] = snapshot.status_classes[4].saturating_add(1);
        snapshot.status_codes.add(503);
    }

    /// Records a connection aborted because its client was too slow.
    pub fn record_client_timeout(&self) {
        let mut current = self.lock();
        let snapshot = &mut current.snapshot;
        snapshot.client_timeouts = snapshot.client_timeouts.saturating_add(1);
    }

    /// Closes the current interval and returns it, starting a new one. The snapshot
    /// counts one worker, with `capacity = threads × time since the previous take` (or
    /// since `new`). Called by the worker's reporting timer, never on the request path.
    pub fn take(&self) -> Snapshot {
        let mut snapshot = Snapshot::new();
        let mut bins = IntervalBins::new();
        let (started, ended) = {
            let mut current = self.lock();
            // Read the clock under the lock, so that the instant that ends this interval
            // is the one that starts the next and no request falls between them.
            let now = Instant::now();
            // Requests still running were busy until now; from now on they are the
            // next interval's busy time.
            current.accrue(now);
            std::mem::swap(&mut current.snapshot, &mut snapshot);
            std::mem::swap(&mut current.bins, &mut bins);
            (std::mem::replace(&mut current.started, now), now)
        };
        bins.fold_into(&mut snapshot);
        let elapsed = ended.saturating_duration_since(started);
        snapshot.capacity = elapsed.saturating_mul(self.threads);
        snapshot.workers = 1;
        snapshot
    }

    /// The lock, even if a thread panicked while holding it: nothing in the critical
    /// sections can leave the snapshot half-updated in a way worth losing data over.
    fn lock(&self) -> MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a request waited, prepared before the lock is taken.
struct Waits {
    /// `queue_time`, when the stamp gave one.
    queue_time: Option<Sample>,
    server_wait: Sample,
}

impl Waits {
    fn new(stamp: &Stamp, server_wait: Duration) -> Waits {
        Waits {
            queue_time: stamp.queue_time().map(Sample::new),
            server_wait: Sample::new(server_wait),
        }
    }

    /// Counts the stamp outcome and records both waits; runs under the lock.
    fn add_to(&self, current: &mut Current, stamp: &Stamp) {
        let Current { snapshot, bins, .. } = current;
        let counts = &mut snapshot.stamps;
        let counter = match stamp {
            Stamp::Ok(_) => &mut counts.ok,
            Stamp::Future => &mut counts.future,
            Stamp::Missing => &mut counts.missing,
            Stamp::Invalid => &mut counts.invalid,
            Stamp::Untrusted => &mut counts.untrusted,
        };
        *counter = counter.saturating_add(1);
        if let Some(queue_time) = &self.queue_time {
            snapshot.queue_time.add_exact(queue_time);
            bins.queue_time.count(queue_time);
        }
        snapshot.server_wait.add_exact(&self.server_wait);
        bins.server_wait.count(&self.server_wait);
    }
}

/// The bins of the three histograms of one interval.
#[derive(Debug)]
struct IntervalBins {
    queue_time: Bins,
    server_wait: Bins,
    app_time: Bins,
}

impl IntervalBins {
    fn new() -> IntervalBins {
        IntervalBins {
            queue_time: Bins::new(),
            server_wait: Bins::new(),
            app_time: Bins::new(),
        }
    }

    /// Adds the counts to `snapshot`'s histograms (outside the lock: `take` swapped
    /// them out).
    fn fold_into(&self, snapshot: &mut Snapshot) {
        self.queue_time.fold_into(&mut snapshot.queue_time);
        self.server_wait.fold_into(&mut snapshot.server_wait);
        self.app_time.fold_into(&mut snapshot.app_time);
    }
}

/// Index into `status_classes`. Out-of-range codes are folded into the nearest class
/// rather than dropped, so that every answered request is counted once.
fn status_class(status: u16) -> usize {
    match status {
        0..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn dispatch_finish_and_shed_are_counted() {
        let r = Recorder::new(2);
        r.record_dispatch(&Stamp::Ok(ms(30)), ms(2));
        r.record_finish(ms(10), 200);
        r.record_dispatch(&Stamp::Future, ms(1));
        r.record_finish(ms(20), 404);
        r.record_dispatch(&Stamp::Missing, ms(3));
        r.record_finish(ms(5), 302);
        r.record_dispatch(&Stamp::Untrusted, ms(4));
        r.record_finish(ms(5), 101);
        r.record_shed(ms(900), &Stamp::Ok(ms(2000)));
        r.record_shed(ms(800), &Stamp::Invalid);

        let s = r.take();
        assert_eq!(s.workers, 1);
        assert_eq!(
            (
                s.stamps.ok,
                s.stamps.future,
                s.stamps.missing,
                s.stamps.untrusted,
                s.stamps.invalid
            ),
            (2, 1, 1, 1, 1)
        );
        assert_eq!(
            s.queue_time.count(),
            3,
            "ok, future (as zero) and the shed ok"
        );
        assert_eq!(s.queue_time.min(), Some(Duration::ZERO));
        assert_eq!(s.queue_time.max(), Some(ms(2000)));
        assert_eq!(s.queue_time.sum(), ms(2030));
        assert_eq!(s.server_wait.count(), 6);
        assert_eq!(s.server_wait.max(), Some(ms(900)));
        assert_eq!(s.app_time.count(), 4);
        assert_eq!(s.app_time.sum(), ms(40));
        assert_eq!(s.shed, 2);
        assert_eq!(s.status_classes, [1, 1, 1, 1, 2]);
        // Busy time is the time threads were really busy (here: microseconds between
        // each dispatch and finish), never the app_time the caller reports.
        assert!(s.busy < ms(40), "{:?}", s.busy);
        assert!(s.busy <= s.capacity, "{:?} of {:?}", s.busy, s.capacity);
    }

    #[test]
    fn a_request_counts_as_busy_in_every_interval_it_spans() {
        let r = Recorder::new(2);
        r.record_dispatch(&Stamp::Missing, ms(0));
        thread::sleep(ms(40));
        let first = r.take();
        assert_eq!(first.app_time.count(), 0, "not finished yet");
        assert!(first.busy >= ms(40), "{:?}", first.busy);
        assert!(
            first.busy <= first.capacity / 2 + ms(1),
            "one thread of two"
        );

        thread::sleep(ms(30));
        let second = r.take();
        assert!(second.busy >= ms(30), "still running: {:?}", second.busy);
        assert!(
            (second.utilization() - 0.5).abs() < 0.05,
            "{}",
            second.utilization()
        );

        thread::sleep(ms(20));
        r.record_finish(ms(90), 200);
        thread::sleep(ms(20));
        let third = r.take();
        assert_eq!(third.app_time.count(), 1);
        assert!(third.busy >= ms(20), "{:?}", third.busy);
        // Idle for at least the last 20 ms of the interval (one thread of two).
        assert!(
            third.busy + ms(19) <= third.capacity / 2,
            "idle after the finish: {:?} of {:?}",
            third.busy,
            third.capacity
        );

        thread::sleep(ms(10));
        assert_eq!(r.take().busy, Duration::ZERO, "nothing in flight");
    }

    #[test]
    fn two_threads_in_flight_count_twice() {
        let r = Recorder::new(2);
        r.record_dispatch(&Stamp::Missing, ms(0));
        r.record_dispatch(&Stamp::Missing, ms(0));
        thread::sleep(ms(30));
        let s = r.take();
        // One thread alone could not exceed 0.5.
        assert!(s.utilization() > 0.5, "{}", s.utilization());
        r.record_finish(ms(30), 200);
        r.record_finish(ms(30), 200);
        // A finish without a dispatch (never happens) cannot make busy time negative.
        r.record_finish(ms(30), 200);
        thread::sleep(ms(10));
        let idle = r.take();
        // Two threads × the moments before the finishes, but not the 10 ms after.
        assert!(
            idle.busy + ms(19) <= idle.capacity,
            "{:?} of {:?}",
            idle.busy,
            idle.capacity
        );
        thread::sleep(ms(10));
        assert_eq!(r.take().busy, Duration::ZERO);
    }

    #[test]
    fn take_starts_a_new_interval_and_measures_capacity() {
        let r = Recorder::new(3);
        r.record_dispatch(&Stamp::Missing, ms(1));
        r.record_finish(ms(1), 200);
        let before = Instant::now();
        thread::sleep(ms(20));
        let first = r.take();
        assert_eq!(first.server_wait.count(), 1);
        assert!(
            first.capacity >= ms(60),
            "3 threads × ≥ 20 ms, got {:?}",
            first.capacity
        );

        thread::sleep(ms(10));
        let second = r.take();
        let since = before.elapsed();
        assert_eq!(second.server_wait.count(), 0, "the first take emptied it");
        assert_eq!(second.status_classes, [0; 5]);
        assert!(second.capacity >= ms(30));
        assert!(
            first.capacity + second.capacity <= since.saturating_mul(3) + ms(60),
            "intervals do not overlap"
        );
    }

    #[test]
    fn status_classes_fold_out_of_range_codes() {
        assert_eq!(status_class(0), 0);
        assert_eq!(status_class(100), 0);
        assert_eq!(status_class(199), 0);
        assert_eq!(status_class(200), 1);
        assert_eq!(status_class(299), 1);
        assert_eq!(status_class(301), 2);
        assert_eq!(status_class(499), 3);
        assert_eq!(status_class(503), 4);
        assert_eq!(status_class(999), 4);
        assert_eq!(status_class(u16::MAX), 4);
    }

    #[test]
    fn zero_threads_counts_as_one() {
        assert_eq!(Recorder::new(0).threads(), 1);
    }

    #[test]
    fn concurrent_threads_lose_nothing() {
        let r = Arc::new(Recorder::new(8));
        let handles: Vec<_> = (0..8u64)
            .map(|t| {
                let r = Arc::clone(&r);
                thread::spawn(move || {
                    for i in 0..2_000u64 {
                        r.record_dispatch(&Stamp::Ok(Duration::from_micros(t * 1000 + i)), ms(1));
                        r.record_finish(Duration::from_micros(i), 200);
                    }
                })
            })
            .collect();
        // Take concurrently too: no request may fall between two intervals.
        let mut total = Snapshot::new();
        for _ in 0..5 {
            total.merge(&r.take());
        }
        for handle in handles {
            handle.join().unwrap();
        }
        total.merge(&r.take());
        assert_eq!(total.stamps.ok, 16_000);
        assert_eq!(total.queue_time.count(), 16_000);
        assert_eq!(total.app_time.count(), 16_000);
        assert_eq!(total.status_classes[1], 16_000);
        assert_eq!(total.workers, 6);
        let want_sum: u64 = (0..8u64)
            .flat_map(|t| (0..2000).map(move |i| t * 1000 + i))
            .sum();
        assert_eq!(total.queue_time.sum(), Duration::from_micros(want_sum));
    }

    #[test]
    fn recorder_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Recorder>();
    }
}
