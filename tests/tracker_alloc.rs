//! Proves the tracker's request path allocates nothing.
//!
//! ARCHITECTURE.md's invariant says the hot path "allocates nothing"; a counting global
//! allocator is the only honest way to show it, and it cannot live in `src/` because a
//! `#[global_allocator]` there would replace the server's. Counting is armed per thread,
//! so the test harness's own threads cannot disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use rwsgi::tracker::{classify, parse_stamp, Recorder, Stamp, TrustedPeers};

/// Passes everything to the system allocator, counting calls on armed threads.
struct Counting;

thread_local! {
    /// Whether this thread's allocations are counted. `const` so that reading it
    /// from inside the allocator can never itself allocate.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// Allocations (alloc, alloc_zeroed, realloc) this thread made while armed: per
    /// thread, so that tests running at the same time do not count each other's.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    if ARMED.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the contract.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    ARMED.with(|armed| armed.set(true));
    f();
    ARMED.with(|armed| armed.set(false));
    ALLOCATIONS.with(Cell::get) - before
}

/// One request's worth of tracker calls, as a worker makes them.
fn serve(recorder: &Recorder, peers: &TrustedPeers, i: u64) {
    let headers: [&[u8]; 6] = [
        b"1700000000.123",
        b"t=1700000000123456",
        b"  1700000009999 ",
        b"garbage",
        b"",
        b"1699990000",
    ];
    let peer: IpAddr = if i % 3 == 0 {
        IpAddr::from([203, 0, 113, 7])
    } else {
        IpAddr::from([10, 1, 2, 3])
    };
    let raw = (i % 7 != 0).then(|| headers[(i % 6) as usize]);
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_001);
    let stamp = classify(raw, peers.contains(peer), now, Duration::from_secs(3600));
    let _ = parse_stamp(headers[(i % 6) as usize]);
    let server_wait = Duration::from_micros(i * 37 % 100_000);
    if stamp
        .queue_time()
        .is_some_and(|q| q > Duration::from_millis(950))
    {
        recorder.record_shed(server_wait, &stamp);
    } else {
        recorder.record_dispatch(&stamp, server_wait);
        // Includes values past the histogram's range, which are clamped, not resized.
        let app_time =
            Duration::from_micros(i * 7919 % 400_000) * (1 + (i % 11 == 0) as u32 * 500_000);
        recorder.record_finish(app_time, [200, 304, 404, 500, 101][(i % 5) as usize]);
    }
    recorder.record_dispatch(&Stamp::Future, Duration::ZERO);
    recorder.record_finish(Duration::MAX, u16::MAX);
}

#[test]
fn tracker_counting_allocator_sees_allocations() {
    // Without this, a broken counter would make the real test pass vacuously.
    let n = allocations_in(|| {
        let v: Vec<u64> = std::hint::black_box((0..100).collect());
        drop(v);
    });
    assert!(n >= 1, "the counting allocator counted nothing");
}

#[test]
fn tracker_hot_path_allocates_nothing() {
    let peers = TrustedPeers::parse("10.0.0.0/8, ::1").unwrap();
    let recorder = Arc::new(Recorder::new(4));
    let n = allocations_in(|| {
        for i in 0..20_000 {
            serve(&recorder, &peers, i);
        }
    });
    assert_eq!(n, 0, "the request path allocated {n} times");

    // The same from several threads at once, with the timer taking snapshots between.
    let workers: Vec<_> = (0..3u64)
        .map(|t| {
            let (recorder, peers) = (Arc::clone(&recorder), peers.clone());
            std::thread::spawn(move || {
                allocations_in(|| {
                    for i in 0..20_000 {
                        serve(&recorder, &peers, t * 1_000_000 + i);
                    }
                })
            })
        })
        .collect();
    let mut requests = 0;
    for _ in 0..20 {
        requests += recorder.take().server_wait.count();
    }
    for worker in workers {
        assert_eq!(worker.join().unwrap(), 0, "a worker thread allocated");
    }
    requests += recorder.take().server_wait.count();
    // Two dispatch-or-shed calls per `serve`; the first 20 000 were taken above too.
    assert_eq!(
        requests,
        2 * 80_000,
        "every recorded request reached a snapshot"
    );
}
