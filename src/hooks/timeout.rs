//! A worker timeout that explains itself: when the master times a worker out
//! (`--timeout`, sent as SIGABRT as gunicorn does), the worker logs the stuck
//! request's method, path and age with the Python stack of the thread running it,
//! runs `worker_abort` and `worker_exit`, and exits. The master kills it if it has
//! not exited within [`ABORT_GRACE`].

use std::time::Duration;

use pyo3::prelude::*;

use crate::dispatch::Shared;

/// How long the master waits for a timed-out worker to explain and exit before it
/// kills it. Taking the GIL from a thread running Python costs at most the switch
/// interval (5 ms); a thread stuck in C code holding the GIL never gives it back,
/// and then the kill comes without the stack.
pub const ABORT_GRACE: Duration = Duration::from_secs(3);

/// Logs what the worker was stuck on. Runs on the control thread, never on a Python
/// thread (they may all be stuck).
pub fn explain(shared: &Shared, timeout: std::time::Duration) {
    let Some((busy, thread)) = shared.oldest_busy_thread() else {
        tracing::error!(
            pid = std::process::id(),
            "WORKER TIMEOUT: no request was running (the worker stopped sending heartbeats)"
        );
        return;
    };
    let stack = Python::attach(|py| -> PyResult<String> {
        super::objects::module(py)?
            .getattr("thread_stack")?
            .call1((thread,))?
            .extract()
    })
    .unwrap_or_else(|e| format!("(no stack: {e})\n"));
    tracing::error!(
        pid = std::process::id(),
        "WORKER TIMEOUT: '{}' has run for {:.1}s (--timeout {}s); Python stack of its thread:\n{}",
        busy.request,
        busy.age_ms as f64 / 1000.0,
        timeout.as_secs_f64(),
        stack.trim_end()
    );
}
