//! One generator thread's shared state: where its requests' due times come from and
//! where their outcomes are counted.
//!
//! A lane lives on a single-threaded runtime, so its connections share it through an
//! `Rc` and plain `Cell`/`RefCell`: the hot path takes no lock and touches no atomic.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;

use super::request::{RequestTemplate, StampAt};
use super::stats::{ErrorKind, Stats};
use crate::schedule::Cursor;
use crate::stamp::{Msec, WallClock};

/// How a lane hands out due times.
#[derive(Debug)]
pub enum Slots {
    /// Closed loop: a request is due as soon as a connection is free, until the
    /// deadline or until the lane's share of the request count is used up.
    Closed {
        deadline: Option<Instant>,
        remaining: Option<Cell<u64>>,
    },
    /// Open model: due times come from the lane's cursor over the schedule.
    Open { cursor: RefCell<Cursor> },
}

/// A request that is due: the instant it should have left.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pub due: Instant,
    /// The due time was read from the clock just now (closed loop): the request
    /// leaves at once and `due` doubles as its send time, saving a clock read.
    pub now: bool,
}

/// State shared by all connections of one generator thread.
pub struct Lane {
    /// Start of the run: offsets and per-second buckets count from here.
    pub start: Instant,
    /// Outcomes before this instant are warm-up: only the per-second series sees them.
    pub measure_from: Instant,
    /// Converts due/send instants into `$msec` stamps.
    pub clock: WallClock,
    /// Where connections go.
    pub target_addr: std::net::SocketAddr,
    /// Per-request timeout (connect included).
    pub timeout: Duration,
    /// Whether connections are reused.
    pub keep_alive: bool,
    /// The request to send.
    pub template: RequestTemplate,
    /// Where due times come from.
    pub slots: Slots,
    /// What this lane counted.
    pub stats: RefCell<Stats>,
    /// When the last connection of this lane stopped.
    pub finished: Cell<Option<Instant>>,
}

impl Lane {
    /// The next due request, or `None` when the lane is done.
    pub fn next_slot(&self) -> Option<Slot> {
        match &self.slots {
            Slots::Closed {
                deadline,
                remaining,
            } => {
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return None;
                }
                if let Some(r) = remaining {
                    let left = r.get();
                    if left == 0 {
                        return None;
                    }
                    r.set(left - 1);
                }
                let sec = self.second_of(now);
                self.stats.borrow_mut().second(sec).offered += 1;
                Some(Slot {
                    due: now,
                    now: true,
                })
            }
            Slots::Open { cursor } => {
                let offset = cursor.borrow_mut().next_due()?;
                let due = self.start + offset;
                let sec = self.second_of(due);
                self.stats.borrow_mut().second(sec).offered += 1;
                Some(Slot { due, now: false })
            }
        }
    }

    /// The request for `slot`, stamped as configured.
    pub fn build(&self, slot: Slot, sent: Instant) -> Request<Full<Bytes>> {
        let stamp = self.template.stamp_at().map(|at| {
            let t = match at {
                StampAt::Due => slot.due,
                StampAt::Sent => sent,
            };
            Msec::new(self.clock.wall(t))
        });
        self.template.build(stamp)
    }

    /// Counts a successful request.
    pub fn record_ok(&self, slot: Slot, sent: Instant, body_bytes: u64) {
        let now = Instant::now();
        let latency = now.saturating_duration_since(slot.due).as_micros() as u64;
        let delay = sent.saturating_duration_since(slot.due).as_micros() as u64;
        let sec = self.second_of(now);
        let mut stats = self.stats.borrow_mut();
        let s = stats.second(sec);
        s.ok += 1;
        s.latency_sum_us += latency;
        s.latency_max_us = s.latency_max_us.max(latency);
        s.latency_buckets[crate::load::stats::latency_bucket(latency)] += 1;
        s.send_delay_sum_us += delay;
        if now >= self.measure_from {
            stats.ok += 1;
            stats.body_bytes += body_bytes;
            stats.record_latency(latency);
        }
    }

    /// Counts a failed request.
    pub fn record_error(&self, kind: ErrorKind) {
        let now = Instant::now();
        let sec = self.second_of(now);
        let mut stats = self.stats.borrow_mut();
        stats.second(sec).errors += 1;
        if now >= self.measure_from {
            stats.errors.add(kind);
        }
    }

    /// Notes that a connection stopped; the last one to stop sets the lane's end.
    pub fn connection_done(&self) {
        let now = Instant::now();
        if self.finished.get().is_none_or(|f| now > f) {
            self.finished.set(Some(now));
        }
    }

    fn second_of(&self, t: Instant) -> usize {
        t.saturating_duration_since(self.start).as_secs() as usize
    }
}
