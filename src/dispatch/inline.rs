//! The inline strategy (`--threads 1`, without `--no-inline`): a quick request
//! without a streamed body runs on the IO thread itself while the Python thread has
//! nothing to do: no handoff, no context switch. Whatever would make the IO thread
//! wait on the client (an iterable past its first chunk, a file, `write()` output) is
//! finished by the Python thread (`Work::Resume`).
//!
//! Only routes whose recent runs took under `--inline-max-ms` run here,
//! and only while the app has never called `write()`, so the IO side keeps answering
//! (400/431, accepts) while a slow request runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use pyo3::prelude::*;

use super::request::{self, Job, JobRef, Resume};
use super::threads::Work;
use super::turn::Turns;
use super::{Dispatcher, RouteTimes, Shared, Strategy};

/// The inline strategy's state.
pub struct Inline {
    /// Whose turn it is, the IO thread's or the Python thread's.
    pub turns: Turns,
    /// Recent run times per route, for the inline decision.
    pub routes: RouteTimes,
    /// The app called `write()`: its requests no longer run inline, where `write()`
    /// output must wait until the app returns.
    pub write_seen: AtomicBool,
    /// The IO thread's busy slot (after the Python thread's).
    pub slot: usize,
}

impl Inline {
    pub fn new(slot: usize, max_us: u32) -> Inline {
        Inline {
            turns: Turns::default(),
            routes: RouteTimes::new(max_us),
            write_seen: AtomicBool::new(false),
            slot,
        }
    }

    /// Whether a request to `route` may run on the IO thread (`no_stream`: it has no
    /// streamed body).
    pub fn eligible(&self, route: usize, no_stream: bool) -> bool {
        no_stream && self.routes.quick(route) && !self.write_seen.load(Ordering::Relaxed)
    }
}

/// [`run_here`] once the IO thread's turn comes: the Python thread is busy, and a
/// quick request waits here rather than queue behind it (see `turn.rs`).
pub async fn run_in_turn(d: &Dispatcher, mut job: Box<Job>) -> bool {
    let Strategy::Inline(inline) = &d.shared.strategy else {
        return d.send(Work::Request(*job));
    };
    let held = inline.turns.hold();
    held.ready().await;
    run_here(d, job.running())
}

/// Runs `job` on this (IO) thread; what must wait on the client goes on to the Python
/// thread. `false` when that could not be queued (shutting down).
pub fn run_here(d: &Dispatcher, job: JobRef<'_>) -> bool {
    match run_inline(&d.shared, job) {
        None => true,
        Some(resume) => d.send(Work::Resume(resume)),
    }
}

/// Runs `job` on the calling (IO) thread. The caller checked that no Python thread
/// is busy, so `--threads 1` still means one request at a time. `Some` when a Python
/// thread must finish the response.
fn run_inline(shared: &Shared, job: JobRef<'_>) -> Option<Box<Resume>> {
    let Strategy::Inline(inline) = &shared.strategy else {
        return None;
    };
    let route = job.route;
    let started = Instant::now();
    let (resume, took) = Python::attach(|py| {
        let r = &job.request;
        shared
            .busy
            .start(inline.slot, started, r.method.as_str(), r.uri.path());
        let ran = request::run(py, shared, job, crate::wsgi::Mode::Inline, started);
        shared.busy.finish(inline.slot);
        ran
    });
    inline.routes.record(route, took);
    resume
}
