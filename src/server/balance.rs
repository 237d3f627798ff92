//! Spreading connections over the workers. All workers accept from the same socket,
//! and whichever wakes first takes what is queued: a burst of new connections (a
//! load balancer opening its keep-alive pool, a benchmark) can land almost entirely
//! on one worker, which then serves them all for their whole life while the others
//! idle. Each worker publishes its open-connection count in a small shared memory
//! region (a memfd the master creates and every worker maps); a worker that holds
//! more than [`SLACK`] connections above the least loaded live worker waits briefly
//! before accepting, so the others take the burst.
//!
//! At start-up the first worker to import the app serves at once, while the others
//! of its generation still import. The master marks those *expected*: a serving
//! worker then leaves them their share of a burst in the backlog (it keeps serving
//! what it holds) until they serve, or the master stops waiting for a late one.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Worker slots (worker id modulo this).
const SLOTS: usize = 256;
/// Connections a worker may hold above the least loaded one before it defers.
const SLACK: u32 = 1;
/// How long a worker defers at most before it accepts anyway (the others may be
/// busy): [`DEFER_STEP`] × [`MAX_DEFERS`].
pub const DEFER_STEP: Duration = Duration::from_millis(1);
pub const MAX_DEFERS: u32 = 5;
/// Environment variable carrying the memfd to workers.
pub const BALANCE_FD_ENV: &str = "RWSGI_BALANCE_FD";

/// `alive` values: the slot is free, its worker serves, or its worker is importing the
/// app and will serve soon.
const GONE: u32 = 0;
const SERVING: u32 = 1;
const EXPECTED: u32 = 2;

/// What a worker about to accept should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defer {
    /// Accept.
    No,
    /// A serving worker holds fewer connections: wait a little ([`MAX_DEFERS`] at most).
    Briefly,
    /// An expected worker will take its share once it serves: wait.
    UntilItServes,
}

/// `alive[SLOTS]` then `conns[SLOTS]`.
const BYTES: usize = 2 * SLOTS * std::mem::size_of::<u32>();

/// The shared region, mapped in this process.
pub struct Region {
    base: *const AtomicU32,
    fd: RawFd,
}

// SAFETY: the mapping lives as long as the process (never unmapped) and is only
// accessed through atomics.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl Region {
    /// Master: creates and maps the region.
    pub fn create() -> std::io::Result<Region> {
        // SAFETY: plain syscalls with checked results.
        let fd = unsafe { libc::memfd_create(c"rwsgi-balance".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is the memfd just created.
        if unsafe { libc::ftruncate(fd, BYTES as libc::off_t) } != 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: closing our own fd.
            unsafe { libc::close(fd) };
            return Err(e);
        }
        Region::map(fd)
    }

    /// Worker: maps the region the master passed as `fd`.
    pub fn map(fd: RawFd) -> std::io::Result<Region> {
        // SAFETY: mapping BYTES of a memfd of that size, shared, read-write.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Region { base: p.cast(), fd })
    }

    /// The memfd, for passing to a worker.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    fn at(&self, i: usize) -> &AtomicU32 {
        // SAFETY: i < 2 * SLOTS, inside the mapping; AtomicU32 has u32's layout and
        // the mapping is page aligned.
        unsafe { &*self.base.add(i) }
    }

    fn alive(&self, slot: usize) -> &AtomicU32 {
        self.at(slot)
    }

    fn conns(&self, slot: usize) -> &AtomicU32 {
        self.at(SLOTS + slot)
    }

    /// Master: worker `id` is gone; its slot no longer counts.
    pub fn clear(&self, id: u32) {
        let slot = id as usize % SLOTS;
        self.alive(slot).store(GONE, Ordering::Release);
        self.conns(slot).store(0, Ordering::Release);
    }

    /// Master: worker `id` of the first generation imports the app; serving workers
    /// leave it its share until it serves or [`Region::unexpect`].
    pub fn expect(&self, id: u32) {
        let slot = id as usize % SLOTS;
        self.conns(slot).store(0, Ordering::Release);
        self.alive(slot).store(EXPECTED, Ordering::Release);
    }

    /// Master: stop waiting for worker `id` (it is late); a worker that serves by now
    /// keeps its slot.
    pub fn unexpect(&self, id: u32) {
        let slot = id as usize % SLOTS;
        let _ =
            self.alive(slot)
                .compare_exchange(EXPECTED, GONE, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Worker `id`'s view.
    pub fn worker(self, id: u32) -> Balance {
        let slot = id as usize % SLOTS;
        self.conns(slot).store(0, Ordering::Release);
        self.alive(slot).store(SERVING, Ordering::Release);
        Balance { region: self, slot }
    }
}

/// One worker's handle on the region.
pub struct Balance {
    region: Region,
    slot: usize,
}

impl Balance {
    /// Publishes this worker's open connections.
    pub fn set_connections(&self, n: usize) {
        self.region
            .conns(self.slot)
            .store(u32::try_from(n).unwrap_or(u32::MAX), Ordering::Relaxed);
    }

    /// Whether another worker, serving or expected, holds fewer connections by more
    /// than [`SLACK`]; an expected one wins over a serving one.
    pub fn defer(&self) -> Defer {
        let mine = self.region.conns(self.slot).load(Ordering::Relaxed);
        let mut least = [None::<u32>; 2];
        for s in (0..SLOTS).filter(|&s| s != self.slot) {
            let kind = match self.region.alive(s).load(Ordering::Relaxed) {
                SERVING => 0,
                EXPECTED => 1,
                _ => continue,
            };
            let n = self.region.conns(s).load(Ordering::Relaxed);
            least[kind] = Some(least[kind].map_or(n, |l| l.min(n)));
        }
        let above = |l: Option<u32>| l.is_some_and(|l| mine > l.saturating_add(SLACK));
        if above(least[1]) {
            Defer::UntilItServes
        } else if above(least[0]) {
            Defer::Briefly
        } else {
            Defer::No
        }
    }

    /// This worker stops: it no longer takes part.
    pub fn leave(&self) {
        self.region.alive(self.slot).store(GONE, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_defers_only_when_another_holds_fewer_connections() {
        let master = Region::create().expect("memfd");
        let a = Region::map(master.fd()).expect("map").worker(1);
        // Alone: never defers.
        a.set_connections(50);
        assert_eq!(a.defer(), Defer::No);
        let b = Region::map(master.fd()).expect("map").worker(2);
        b.set_connections(0);
        assert_eq!(a.defer(), Defer::Briefly);
        b.set_connections(49);
        assert_eq!(a.defer(), Defer::No);
        b.set_connections(48);
        assert_eq!(a.defer(), Defer::Briefly);
        assert_eq!(b.defer(), Defer::No);
        // A stopped or reaped worker no longer counts.
        b.leave();
        assert_eq!(a.defer(), Defer::No);
        let c = Region::map(master.fd()).expect("map").worker(3);
        c.set_connections(0);
        assert_eq!(a.defer(), Defer::Briefly);
        master.clear(3);
        assert_eq!(a.defer(), Defer::No);
    }

    #[test]
    fn a_serving_worker_leaves_an_expected_one_its_share_until_it_serves() {
        let master = Region::create().expect("memfd");
        master.expect(2);
        let a = Region::map(master.fd()).expect("map").worker(1);
        // One connection above the importing worker is within the slack.
        a.set_connections(1);
        assert_eq!(a.defer(), Defer::No);
        a.set_connections(2);
        assert_eq!(a.defer(), Defer::UntilItServes);
        // Once it serves, the usual brief deferral applies.
        let b = Region::map(master.fd()).expect("map").worker(2);
        assert_eq!(a.defer(), Defer::Briefly);
        // The master gives up on a late worker, never on one that serves.
        master.unexpect(2);
        assert_eq!(a.defer(), Defer::Briefly);
        b.leave();
        master.expect(3);
        assert_eq!(a.defer(), Defer::UntilItServes);
        master.unexpect(3);
        assert_eq!(a.defer(), Defer::No);
    }
}
