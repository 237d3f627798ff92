//! What each thread that runs requests is doing, for `--timeout`: the heartbeat reads
//! the oldest busy slot and the master kills a worker stuck past the timeout. Time a
//! thread spends waiting on the client ([`crate::contract::client_wait`]) is left out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// What one thread is doing.
#[derive(Default)]
pub struct BusySlot {
    /// Monotonic milliseconds (since the slots were made) when the request began;
    /// 0 = idle.
    since_ms: AtomicU64,
    /// When the thread began waiting on the client (same clock; 0 = not waiting):
    /// that wait is not the app's, so `--timeout` does not count it.
    waiting_ms: AtomicU64,
    /// `METHOD /path` of that request; written before `since_ms` is set.
    request: std::sync::Mutex<String>,
    /// The running thread's id (`pthread_self`, which is Python's thread ident), so
    /// a timed-out request's Python stack can be found (`hooks/timeout.rs`).
    thread: AtomicU64,
}

/// One slot per Python thread, and one for the IO thread when it runs requests.
pub struct BusySlots {
    slots: Vec<BusySlot>,
    /// Time origin of `BusySlot::since_ms`.
    epoch: Instant,
}

impl BusySlots {
    pub fn new(count: usize) -> BusySlots {
        BusySlots {
            slots: (0..count).map(|_| BusySlot::default()).collect(),
            epoch: Instant::now(),
        }
    }

    /// Marks slot `index` busy with `method path` since `now` (a clock reading the
    /// caller already has).
    pub fn start(&self, index: usize, now: Instant, method: &str, path: &str) {
        let slot = &self.slots[index];
        if let Ok(mut r) = slot.request.lock() {
            r.clear();
            r.push_str(method);
            r.push(' ');
            r.push_str(&path[..path.len().min(200)]);
        }
        // SAFETY: pthread_self has no preconditions.
        let thread = unsafe { libc::pthread_self() } as u64;
        slot.thread.store(thread, Ordering::Relaxed);
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        slot.since_ms.store(ms.max(1), Ordering::Release);
    }

    /// Slot `index` starts (`true`) or stops waiting on the client: the request's
    /// start moves forward by the wait, so only the app's own time counts.
    pub fn client_wait(&self, index: usize, waiting: bool) {
        let slot = &self.slots[index];
        let now = (self.epoch.elapsed().as_millis() as u64).max(1);
        if waiting {
            slot.waiting_ms.store(now, Ordering::Release);
        } else {
            let began = slot.waiting_ms.swap(0, Ordering::AcqRel);
            if began != 0 {
                let waited = now.saturating_sub(began);
                let _ = slot
                    .since_ms
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                        (s != 0).then_some(s + waited)
                    });
            }
        }
    }

    pub fn finish(&self, index: usize) {
        self.slots[index].since_ms.store(0, Ordering::Release);
    }

    /// The longest-running request, if any.
    pub fn oldest(&self) -> Option<crate::control::Busy> {
        self.oldest_thread().map(|(busy, _)| busy)
    }

    /// The longest-running request and the id of the thread running it.
    pub fn oldest_thread(&self) -> Option<(crate::control::Busy, u64)> {
        let now = self.epoch.elapsed().as_millis() as u64;
        let (slot, since) = self
            .slots
            .iter()
            .filter(|s| s.waiting_ms.load(Ordering::Acquire) == 0)
            .map(|s| (s, s.since_ms.load(Ordering::Acquire)))
            .filter(|(_, since)| *since != 0)
            .min_by_key(|(_, since)| *since)?;
        let request = slot.request.lock().map(|r| r.clone()).unwrap_or_default();
        let busy = crate::control::Busy {
            age_ms: now.saturating_sub(since),
            request,
        };
        Some((busy, slot.thread.load(Ordering::Relaxed)))
    }
}
