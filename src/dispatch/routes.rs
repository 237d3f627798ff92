//! How long requests to each route (method and path) kept a thread busy lately, so
//! that only routes known to be quick run inline on the IO thread: a slow request
//! there would hold up every other connection of the worker (and the error answers
//! the IO side gives on its own).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Routes share slots by hash; a shared slot only errs towards "slow". A route never
/// seen is unknown and is not run inline.
pub struct RouteTimes {
    /// Decaying maximum of recent run times, in microseconds; `u32::MAX` = unknown.
    slots: Box<[AtomicU32]>,
    /// Longest recent run (µs) of a route that may run inline (`--inline-max-ms`).
    max_us: u32,
}

impl RouteTimes {
    const SLOTS: usize = 1024;

    pub fn new(max_us: u32) -> RouteTimes {
        RouteTimes {
            slots: (0..Self::SLOTS).map(|_| AtomicU32::new(u32::MAX)).collect(),
            max_us: max_us.min(u32::MAX - 1),
        }
    }

    /// The slot of `method path` (FNV-1a).
    pub fn route(method: &str, path: &str) -> usize {
        let mut h: u32 = 0x811c_9dc5;
        for b in method.bytes().chain([b' ']).chain(path.bytes()) {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        h as usize % Self::SLOTS
    }

    /// Whether requests to `route` have been quick lately.
    pub fn quick(&self, route: usize) -> bool {
        self.slots[route].load(Ordering::Relaxed) < self.max_us
    }

    /// Records one run: the slot keeps the larger of this run and its old value less
    /// an eighth, so one slow run keeps a route off the IO thread for a while.
    pub fn record(&self, route: usize, took: Duration) {
        let us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX - 1);
        let slot = &self.slots[route];
        let old = slot.load(Ordering::Relaxed);
        let decayed = if old == u32::MAX { 0 } else { old - old / 8 };
        slot.store(us.max(decayed), Ordering::Relaxed);
    }
}
