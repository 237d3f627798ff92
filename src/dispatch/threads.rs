//! The Python threads of a worker: each holds the GIL only while it runs a request,
//! and waits for the next one with the GIL released.
//!
//! A thread keeps its Python thread state for its whole life (`attach` once, `detach`
//! around the wait) instead of creating one per request.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;
use pyo3::prelude::*;

use super::request::{self, Job, Resume};
use super::{Shared, Strategy};

/// What a Python thread is given. A request is the common case and travels unboxed
/// (no allocation per request); the rarer resume is boxed.
#[allow(clippy::large_enum_variant)]
pub enum Work {
    /// A request, from its start.
    Request(Job),
    /// A response whose app call ran on the IO thread (`inline.rs`).
    Resume(Box<Resume>),
}

/// Starts `count` Python threads taking work from `jobs`. They end when every sender
/// of `jobs` is dropped and the queue is empty.
pub fn spawn(
    count: usize,
    jobs: Receiver<Work>,
    shared: &Arc<Shared>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let mut handles = Vec::with_capacity(count);
    for i in 0..count {
        let jobs = jobs.clone();
        let shared = shared.clone();
        let span = tracing::Span::current();
        handles.push(
            std::thread::Builder::new()
                .name(format!("python-{i}"))
                .spawn(move || {
                    let _enter = span.enter();
                    let busy = shared.clone();
                    crate::contract::on_client_wait(Box::new(move |waiting| {
                        busy.busy.client_wait(i, waiting)
                    }));
                    run(i, jobs, &shared)
                })?,
        );
    }
    Ok(handles)
}

fn run(slot: usize, jobs: Receiver<Work>, shared: &Shared) {
    let inline = match &shared.strategy {
        Strategy::Inline(i) => Some(i),
        Strategy::Threads => None,
    };
    Python::attach(|py| loop {
        let Some(work) = py.detach(|| {
            let work = jobs.recv().ok();
            if let (Some(_), Some(i)) = (&work, inline) {
                i.turns.python_wait();
            }
            work
        }) else {
            break;
        };
        match work {
            Work::Request(mut job) => {
                let started = Instant::now();
                let r = &job.request;
                shared
                    .busy
                    .start(slot, started, r.method.as_str(), r.uri.path());
                let route = job.route;
                // Not inline: never suspended.
                let (_, took) = request::run(
                    py,
                    shared,
                    job.running(),
                    crate::wsgi::Mode::Finish,
                    started,
                );
                if let Some(i) = inline {
                    i.routes.record(route, took);
                }
            }
            Work::Resume(r) => {
                shared
                    .busy
                    .start(slot, Instant::now(), r.method.as_str(), r.uri.path());
                if r.suspended.used_write {
                    if let Some(i) = inline {
                        // This app writes: its requests stay off the IO thread.
                        i.write_seen.store(true, Ordering::Relaxed);
                    }
                }
                request::resume(py, shared, *r);
            }
        }
        shared.busy.finish(slot);
        if let Some(i) = inline {
            i.turns.python_done();
        }
    });
}
