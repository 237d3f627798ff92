//! A worker's HTTP side: accept loops, hyper connections, request limits, and the
//! handoff of each request to the Python threads.
//!
//! The worker runs one current-thread tokio runtime for all network IO; Python runs
//! on `--threads` OS threads of its own. The runtime takes the GIL only to run a
//! quick bodiless request inline with `--threads 1` (`wsgi::threads::run_inline`).

/// `AsyncWrite` for a stream wrapper whose writes go straight to its `inner` stream
/// (the wrappers only add something to reads): `arrival::StampedTcp`,
/// `conn::Tracked`, `rewind::Rewind`.
macro_rules! forward_async_write {
    ($ty:ty $(, $g:ident)?) => {
        impl$(<$g: tokio::io::AsyncWrite + Unpin>)? tokio::io::AsyncWrite for $ty {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
            }
            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
            }
            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
            }
            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
            }
        }
    };
}

pub mod access_log;
pub mod arrival;
pub mod balance;
pub mod conn;
pub mod forwarded;
pub mod handoff;
pub mod head;
pub mod listener;
pub mod own;
pub mod rewind;
pub mod service;
pub mod turn;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::wsgi::threads::Work;
use access_log::AccessLog;
use listener::Listener;

/// What one Python thread is doing, for `--timeout`: read by the heartbeat.
#[derive(Default)]
pub struct BusySlot {
    /// Monotonic milliseconds (since worker start) when the request began; 0 = idle.
    since_ms: AtomicU64,
    /// `METHOD /path` of that request; written before `since_ms` is set.
    request: std::sync::Mutex<String>,
    /// The running thread's id (`pthread_self`, which is Python's thread ident), so
    /// a timed-out request's Python stack can be found (`hooks/timeout.rs`).
    thread: AtomicU64,
}

impl BusySlot {
    /// `now`: a clock reading the caller already has.
    pub fn start(&self, epoch: Instant, now: Instant, method: &str, path: &str) {
        if let Ok(mut r) = self.request.lock() {
            r.clear();
            r.push_str(method);
            r.push(' ');
            r.push_str(&path[..path.len().min(200)]);
        }
        // SAFETY: pthread_self has no preconditions.
        let thread = unsafe { libc::pthread_self() } as u64;
        self.thread.store(thread, Ordering::Relaxed);
        let ms = now.saturating_duration_since(epoch).as_millis() as u64;
        self.since_ms.store(ms.max(1), Ordering::Release);
    }

    pub fn finish(&self) {
        self.since_ms.store(0, Ordering::Release);
    }
}

/// How long requests to each route (method and path) kept a thread busy lately, so
/// that only routes known to be quick run inline on the IO thread: a slow request
/// there would hold up every other connection of the worker (and the error answers
/// the IO side gives on its own). Routes share slots by hash; a shared slot only
/// errs towards "slow". A route never seen is unknown and is not run inline.
pub struct RouteTimes {
    /// Decaying maximum of recent run times, in microseconds; `u32::MAX` = unknown.
    slots: Box<[AtomicU32]>,
}

impl RouteTimes {
    const SLOTS: usize = 1024;
    /// Longest recent run (µs) of a route that may run inline.
    pub const INLINE_MAX_US: u32 = 1_000;

    fn new() -> RouteTimes {
        RouteTimes {
            slots: (0..Self::SLOTS).map(|_| AtomicU32::new(u32::MAX)).collect(),
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
        self.slots[route].load(Ordering::Relaxed) < Self::INLINE_MAX_US
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

/// State shared by the async side and the Python threads of one worker.
pub struct WorkerShared {
    pub threads: usize,
    /// `--threads 1` (without `--no-inline`): a quick request without a body runs on
    /// the IO thread when the Python thread is idle (see `wsgi::threads::run_inline`).
    pub inline: bool,
    /// Whose turn it is, the IO thread's or the Python thread's (`inline` only).
    pub turns: turn::Turns,
    /// This worker's share of the connection counts all workers see.
    pub balance: Option<balance::Balance>,
    /// The app called `write()`: its requests no longer run inline, where `write()`
    /// output must wait until the app returns.
    pub write_seen: AtomicBool,
    /// Recent run times per route, for the inline decision.
    pub routes: RouteTimes,
    pub workers: usize,
    /// Lets Python threads wait for request-body frames driven by the runtime.
    pub handle: tokio::runtime::Handle,
    pub access_log: Option<AccessLog>,
    /// Requests finished, for `--max-requests`.
    pub served: AtomicU64,
    /// Connections open right now, for graceful shutdown.
    pub connections: AtomicUsize,
    /// One per Python thread, and one for the IO thread when `inline`.
    pub busy: Vec<BusySlot>,
    /// Time origin of `BusySlot::since_ms`.
    pub epoch: Instant,
    /// Queue-time measurements of this worker, taken by the master each interval.
    pub recorder: crate::tracker::Recorder,
    pub config: Arc<Config>,
}

impl WorkerShared {
    pub fn new(
        config: &Arc<Config>,
        handle: tokio::runtime::Handle,
        balance: Option<balance::Balance>,
    ) -> anyhow::Result<WorkerShared> {
        let access_log = match &config.log.access_log {
            None => None,
            Some(dest) => Some(AccessLog::open(
                dest.as_deref(),
                &config.log.access_log_format,
            )?),
        };
        let inline = config.python.inline;
        Ok(WorkerShared {
            threads: config.python.threads,
            inline,
            turns: turn::Turns::default(),
            balance,
            write_seen: AtomicBool::new(false),
            routes: RouteTimes::new(),
            workers: config.process.workers,
            handle,
            access_log,
            served: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            busy: (0..config.python.threads + usize::from(inline))
                .map(|_| BusySlot::default())
                .collect(),
            epoch: Instant::now(),
            recorder: crate::tracker::Recorder::new(config.python.threads),
            config: config.clone(),
        })
    }

    /// The longest-running request, if any.
    pub fn oldest_busy(&self) -> Option<crate::control::Busy> {
        self.oldest_busy_thread().map(|(busy, _)| busy)
    }

    /// The longest-running request and the id of the thread running it.
    pub fn oldest_busy_thread(&self) -> Option<(crate::control::Busy, u64)> {
        let now = self.epoch.elapsed().as_millis() as u64;
        let (slot, since) = self
            .busy
            .iter()
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

/// How a worker was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Running,
    /// Finish in-flight requests (TERM, HUP, recycling), then exit.
    Graceful,
    /// Exit now (INT, QUIT).
    Fast,
}

/// Serves `listeners` with `app` until `stop` says otherwise; returns after in-flight
/// requests are done (graceful) or at once (fast).
pub fn run(
    config: Arc<Config>,
    listeners: Vec<Listener>,
    app: pyo3::Py<pyo3::PyAny>,
    runtime: &tokio::runtime::Runtime,
    shared: Arc<WorkerShared>,
    stop: watch::Receiver<Stop>,
) -> anyhow::Result<()> {
    let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded::<Work>();
    let (threads, inline) =
        crate::wsgi::threads::spawn(config.python.threads, app, jobs_rx, shared.clone())?;

    runtime.block_on(async {
        let permits = Arc::new(Semaphore::new(config.server.worker_connections));
        let http = Arc::new(conn::Http::new(&config.server));
        let mut accepts = Vec::new();
        for l in listeners {
            let ctx = conn::AcceptCtx {
                http: http.clone(),
                jobs: jobs_tx.clone(),
                inline: inline.clone(),
                shared: shared.clone(),
                permits: permits.clone(),
                stop: stop.clone(),
                config: config.clone(),
            };
            accepts.push(tokio::spawn(conn::accept_loop(l, ctx)));
        }
        drop(jobs_tx);
        let mut stop = stop.clone();
        let how = loop {
            let now = *stop.borrow_and_update();
            if now != Stop::Running {
                break now;
            }
            if stop.changed().await.is_err() {
                break Stop::Graceful;
            }
        };
        for a in &accepts {
            a.abort();
        }
        if let Some(b) = &shared.balance {
            b.leave();
        }
        if how == Stop::Graceful {
            let deadline = Instant::now() + config.process.graceful_timeout;
            while shared.connections.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    drop(threads);
    Ok(())
}
