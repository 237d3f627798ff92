//! The Python threads of a worker: each holds the GIL only while it runs a request,
//! and waits for the next one with the GIL released.
//!
//! A thread keeps its Python thread state for its whole life (`attach` once, `detach`
//! around the wait) instead of creating one per request.
//!
//! With `--threads 1`, a request without a body runs on the IO thread itself when the
//! Python thread is idle ([`run_inline`]): no handoff, no context switch. Whatever
//! would make the IO thread wait on the client (a streamed body past its first chunk,
//! a file, `write()` output) is finished by the Python thread ([`Work::Resume`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Receiver;
use pyo3::prelude::*;

use super::environ::{EnvironShared, RequestFacts};
use super::errors::Errors;
use super::file_wrapper::FileWrapper;
use super::response::{self, Handled, Outcome, RequestLine, Suspended};
use crate::server::access_log::AccessLog;
use crate::server::forwarded;
use crate::server::handoff::{plain, Job, PeerText};
use crate::server::WorkerShared;
use crate::tracker::{classify_at, last_value, Stamp};

/// What a Python thread is given. A request is the common case and travels unboxed
/// (no allocation per request); the rarer resume is boxed.
#[allow(clippy::large_enum_variant)]
pub enum Work {
    /// A request, from its start.
    Request(Job),
    /// A response whose app call ran on the IO thread.
    Resume(Box<Resume>),
}

/// The rest of a request begun by [`run_inline`].
pub struct Resume {
    suspended: Suspended,
    tail: Tail,
}

/// What is needed once a response is done: timing and the access-log line.
struct Tail {
    dispatched: Instant,
    method: http::Method,
    /// The request's URI (a shared buffer, not a copy), for the busy slot's path.
    uri: http::Uri,
    /// A client named by a trusted `X-Forwarded-For`; else the peer's.
    remote_addr: Option<String>,
    peer: Arc<PeerText>,
    line: Option<(RequestLine, http::HeaderMap)>,
}

/// The IO thread's way into the app (`--threads 1` only).
pub struct Inline {
    app: Py<PyAny>,
    env: Arc<EnvironShared>,
}

/// The Python threads, and the IO thread's [`Inline`] when it runs requests too.
pub type Spawned = (Vec<std::thread::JoinHandle<()>>, Option<Arc<Inline>>);

/// Starts `count` Python threads taking work from `jobs`. They end when every sender
/// of `jobs` is dropped and the queue is empty. Also returns the IO thread's
/// [`Inline`] when `shared.inline` is on.
pub fn spawn(
    count: usize,
    app: Py<PyAny>,
    jobs: Receiver<Work>,
    shared: Arc<WorkerShared>,
) -> std::io::Result<Spawned> {
    let env_shared = Arc::new(
        Python::attach(|py| -> PyResult<EnvironShared> {
            EnvironShared::new(
                py,
                Bound::new(py, Errors::default())?.into_any(),
                py.get_type::<FileWrapper>().into_any(),
                shared.threads > 1,
                shared.workers > 1,
                std::env::var("SCRIPT_NAME").unwrap_or_default(),
                shared.handle.clone(),
            )
        })
        .map_err(|e| std::io::Error::other(e.to_string()))?,
    );
    let inline = shared.inline.then(|| {
        Arc::new(Inline {
            app: Python::attach(|py| app.clone_ref(py)),
            env: env_shared.clone(),
        })
    });
    let mut handles = Vec::with_capacity(count);
    for i in 0..count {
        let app = Python::attach(|py| app.clone_ref(py));
        let jobs = jobs.clone();
        let shared = shared.clone();
        let env_shared = env_shared.clone();
        let span = tracing::Span::current();
        handles.push(
            std::thread::Builder::new()
                .name(format!("python-{i}"))
                .spawn(move || {
                    let _enter = span.enter();
                    run(i, app, jobs, shared, env_shared)
                })?,
        );
    }
    Ok((handles, inline))
}

/// Runs `job` on the calling (IO) thread. The caller checked that no Python thread
/// is busy, so `--threads 1` still means one request at a time. `Some` when a Python
/// thread must finish the response.
pub fn run_inline(inline: &Inline, job: Job, shared: &WorkerShared) -> Option<Box<Resume>> {
    let slot = &shared.busy[shared.threads];
    let route = job.route;
    let started = Instant::now();
    let (resume, ended) = Python::attach(|py| {
        slot.start(shared.epoch, started, job.method.as_str(), job.uri.path());
        let ran = run_one(
            py,
            inline.app.bind(py),
            job,
            shared,
            &inline.env,
            true,
            started,
        );
        slot.finish();
        ran
    });
    shared
        .routes
        .record(route, ended.saturating_duration_since(started));
    resume
}

fn run(
    index: usize,
    app: Py<PyAny>,
    jobs: Receiver<Work>,
    shared: Arc<WorkerShared>,
    env: Arc<EnvironShared>,
) {
    let slot = &shared.busy[index];
    Python::attach(|py| {
        let app = app.bind(py);
        loop {
            let Some(work) = py.detach(|| {
                let work = jobs.recv().ok();
                if work.is_some() {
                    shared.turns.python_wait();
                }
                work
            }) else {
                break;
            };
            match work {
                Work::Request(job) => {
                    let started = Instant::now();
                    slot.start(shared.epoch, started, job.method.as_str(), job.uri.path());
                    let route = job.route;
                    // Not inline: never suspended.
                    let (_, ended) = run_one(py, app, job, &shared, &env, false, started);
                    if shared.inline {
                        shared
                            .routes
                            .record(route, ended.saturating_duration_since(started));
                    }
                }
                Work::Resume(r) => {
                    let Resume { suspended, tail } = *r;
                    slot.start(
                        shared.epoch,
                        Instant::now(),
                        tail.method.as_str(),
                        tail.uri.path(),
                    );
                    if suspended.used_write {
                        // This app writes: its requests stay off the IO thread.
                        shared.write_seen.store(true, Ordering::Relaxed);
                    }
                    let outcome = response::resume(py, suspended);
                    let ended = Instant::now();
                    shared.recorder.record_finish_at(
                        ended.saturating_duration_since(tail.dispatched),
                        outcome.status,
                        ended,
                    );
                    finish(py, &shared, tail, outcome, ended);
                }
            }
            slot.finish();
            shared.turns.python_done();
        }
    });
}

fn run_one(
    py: Python<'_>,
    app: &Bound<'_, PyAny>,
    job: Job,
    shared: &WorkerShared,
    env: &EnvironShared,
    inline: bool,
    dispatched: Instant,
) -> (Option<Box<Resume>>, Instant) {
    let server_wait = dispatched.saturating_duration_since(job.arrived_at);
    let cfg = &shared.config;
    let stamp = match &cfg.tracker.queue_header {
        None => Stamp::Missing,
        // The last one: a proxy that appends its stamp (rather than replacing it) puts
        // it after any the client sent, and the client's must not be the one believed.
        Some(name) => classify_at(
            last_value(&job.headers, name).map(|v| v.as_bytes()),
            job.trusted,
            // The wall clock at dispatch: the arrival's, carried forward by the
            // monotonic server_wait, when the kernel stamped the arrival.
            match job.arrived_wall {
                Some(arrived) => arrived.checked_add(server_wait),
                None => SystemTime::now().duration_since(UNIX_EPOCH).ok(),
            },
            cfg.tracker.max_age,
        ),
    };
    let mut fwd = forwarded::resolve_for(
        &job.headers,
        job.forwarded_allowed,
        &cfg.server.forwarded_allow,
    );
    // REMOTE_ADDR stays the peer's, as in gunicorn, unless the user opted in.
    if !cfg.server.remote_addr_from_forwarded {
        fwd.remote_addr = None;
    }
    let line = shared.access_log.as_ref().map(|_| {
        (
            RequestLine {
                method: job.method.clone(),
                uri: job.uri.clone(),
                version: job.version,
            },
            job.headers.clone(),
        )
    });
    // The request waited at least its server_wait (monotonic, certain), whatever a
    // skewed proxy clock says: a `future` stamp (queue_time 0) must not exempt it.
    let waited = stamp
        .queue_time()
        .map_or(server_wait, |queue_time| queue_time.max(server_wait));
    let method = job.method.clone();
    let uri = job.uri.clone();
    let peer = job.peer_text.clone();
    let (handled, ended) = if cfg.tracker.max_queue_time.is_some_and(|max| waited > max) {
        shared.recorder.record_shed(server_wait, &stamp);
        let shed = shed(job, cfg.tracker.max_queue_time.unwrap_or_default());
        (Handled::Done(shed), Instant::now())
    } else {
        shared
            .recorder
            .record_dispatch_at(&stamp, server_wait, dispatched);
        let facts = RequestFacts {
            remote_addr: fwd.remote_addr.as_deref(),
            peer: &peer,
            url_scheme: fwd.scheme,
            queue_time: stamp.queue_time().map(|d| d.as_secs_f64()),
            server_wait: server_wait.as_secs_f64(),
        };
        let keep_headers = shared
            .access_log
            .as_ref()
            .is_some_and(AccessLog::wants_response_headers);
        let env_keys = shared
            .access_log
            .as_ref()
            .map(AccessLog::environ_keys)
            .unwrap_or(&[]);
        let needs = response::LogNeeds {
            keep_headers,
            env_keys,
        };
        let handled = response::handle(py, app, job, &facts, env, &shared.handle, needs, inline);
        let ended = Instant::now();
        if let Handled::Done(outcome) = &handled {
            shared.recorder.record_finish_at(
                ended.saturating_duration_since(dispatched),
                outcome.status,
                ended,
            );
        }
        (handled, ended)
    };
    let tail = Tail {
        dispatched,
        method,
        uri,
        remote_addr: fwd.remote_addr,
        peer,
        line,
    };
    match handled {
        Handled::Done(outcome) => {
            finish(py, shared, tail, outcome, ended);
            (None, ended)
        }
        Handled::Suspended(suspended) => (Some(Box::new(Resume { suspended, tail })), ended),
    }
}

/// The end of every request (`ended`: when its response was done): the access-log
/// line and the served count.
fn finish(py: Python<'_>, shared: &WorkerShared, tail: Tail, outcome: Outcome, ended: Instant) {
    let elapsed = ended.saturating_duration_since(tail.dispatched);
    if let (Some(log), Some((line, headers))) = (&shared.access_log, tail.line) {
        let remote = tail.remote_addr.as_deref().unwrap_or(&tail.peer.addr);
        py.detach(|| log.write(&line, &headers, remote, &outcome, elapsed));
    }
    shared.served.fetch_add(1, Ordering::Relaxed);
}

/// Answers 503 without calling the app: the request already waited longer than
/// `--max-queue-time`, so serving it late only makes the queue longer.
fn shed(job: Job, max: Duration) -> Outcome {
    const BODY: &str = "Service Unavailable: queue time too long\n";
    let mut resp = plain(503, BODY, false);
    let retry = max.as_secs().max(1).to_string();
    if let Ok(v) = http::HeaderValue::from_str(&retry) {
        resp.headers.push((http::header::RETRY_AFTER, v));
    }
    if let Some(reply) = job.reply {
        let _ = reply.send(resp);
    }
    Outcome {
        status: 503,
        sent: BODY.len() as u64,
        received: 0,
        headers: Vec::new(),
        environ: Vec::new(),
    }
}
