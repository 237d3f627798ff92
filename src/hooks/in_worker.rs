//! A worker's hooks: the worker evaluates the config file in its own interpreter and
//! runs `post_fork`, `post_worker_init`, `worker_int`, `worker_abort` and
//! `worker_exit` at gunicorn's moments (`pre_request`/`post_request` belong to the
//! request path). Without a config file every function here is a no-op.

use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::{objects, Hook, HookError, Hooks};
use crate::config::Config;

struct Worker {
    hooks: Hooks,
    /// gunicorn's `worker` object of this process.
    worker: Py<PyAny>,
}

static WORKER: OnceLock<Worker> = OnceLock::new();

/// Evaluates the config file in this worker's interpreter (already started) and
/// builds its `server` and `worker` objects. `id` is gunicorn's `worker.age`.
pub fn init(config: &Config, id: u32) -> Result<(), HookError> {
    if !crate::config::pyfile::in_use() {
        return Ok(());
    }
    let made = Python::attach(|py| -> Result<Worker, HookError> {
        let Some(ns) = crate::config::pyfile::namespace(py) else {
            return Err(HookError::Setup {
                what: "the config file's namespace is gone",
                error: String::new(),
            });
        };
        let (server, worker) = (|| -> PyResult<(Py<PyAny>, Py<PyAny>)> {
            let m = objects::module(py)?;
            let cfg = objects::cfg(py, config, &ns)?;
            let server = m.getattr("Server")?.call1((
                cfg,
                nix::unistd::getppid().as_raw(),
                config.process.workers,
            ))?;
            let worker = m.getattr("worker_in_worker")?.call1((&server, id))?;
            Ok((server.unbind(), worker.unbind()))
        })()
        .map_err(|e| HookError::Setup {
            what: "cannot build the hooks' objects",
            error: e.to_string(),
        })?;
        Ok(Worker {
            hooks: Hooks::from_namespace(py, &ns, server)?,
            worker,
        })
    })?;
    let _ = WORKER.set(made);
    Ok(())
}

/// Whether the config file defines `hook` (for the request path's zero-cost check).
pub fn defines(hook: Hook) -> bool {
    WORKER.get().is_some_and(|w| w.hooks.has(hook))
}

fn server_worker(py: Python<'_>, w: &Worker) -> (Py<PyAny>, Py<PyAny>) {
    (w.hooks.server.clone_ref(py), w.worker.clone_ref(py))
}

/// `post_fork(server, worker)`: before the app is imported. `Err`: boot fails.
pub fn post_fork() -> Result<(), HookError> {
    match WORKER.get() {
        Some(w) => Python::attach(|py| w.hooks.call(py, Hook::PostFork, server_worker(py, w))),
        None => Ok(()),
    }
}

/// `post_worker_init(worker)`: the app is imported (`worker.wsgi` is it). `Err`:
/// boot fails.
pub fn post_worker_init(app: &Py<PyAny>) -> Result<(), HookError> {
    match WORKER.get() {
        Some(w) => Python::attach(|py| {
            let worker = w.worker.bind(py);
            let _ = worker.setattr("wsgi", app.clone_ref(py));
            let _ = worker.setattr("booted", true);
            w.hooks.call(py, Hook::PostWorkerInit, (worker.clone(),))
        }),
        None => Ok(()),
    }
}

/// `worker_int(worker)`: INT or QUIT arrived; the worker stops right after.
pub fn worker_int() {
    if let Some(w) = WORKER.get() {
        Python::attach(|py| {
            let worker = w.worker.bind(py);
            let _ = worker.setattr("alive", false);
            w.hooks.call_logged(py, Hook::WorkerInt, (worker.clone(),));
        });
    }
}

/// `worker_abort(worker)`: the master timed this worker out (SIGABRT).
pub fn worker_abort() {
    if let Some(w) = WORKER.get() {
        Python::attach(|py| {
            let worker = w.worker.bind(py);
            let _ = worker.setattr("aborted", true);
            let _ = worker.setattr("alive", false);
            w.hooks
                .call_logged(py, Hook::WorkerAbort, (worker.clone(),));
        });
    }
}

/// `worker_exit(server, worker)`: the worker is about to exit, on every path.
pub fn worker_exit() {
    if let Some(w) = WORKER.get() {
        Python::attach(|py| {
            let _ = w.worker.bind(py).setattr("alive", false);
            w.hooks
                .call_logged(py, Hook::WorkerExit, server_worker(py, w));
        });
    }
}

/// Runs the interpreter's `atexit` functions, as a Python process does when it exits
/// (gunicorn's workers exit through `sys.exit`). APM agents flush their last spans
/// there (OpenTelemetry's batch processor, ddtrace, New Relic). The interpreter is
/// not finalised: Python threads may still be parked in rwsgi's code.
pub fn run_atexit() {
    Python::attach(|py| {
        let run = py
            .import("atexit")
            .and_then(|m| m.call_method0("_run_exitfuncs"));
        if let Err(e) = run {
            tracing::warn!("atexit functions raised: {e}");
        }
    });
}

/// `pre_request` / `post_request`, for the request path. Looked up once per worker:
/// without either hook the path holds `None` and pays one branch per request.
#[derive(Debug, Clone, Copy)]
pub struct RequestHooks {
    pre: bool,
    post: bool,
}

/// The request hooks, if the config file defines `pre_request` or `post_request`.
pub fn request_hooks() -> Option<RequestHooks> {
    let w = WORKER.get()?;
    let (pre, post) = (
        w.hooks.has(Hook::PreRequest),
        w.hooks.has(Hook::PostRequest),
    );
    (pre || post).then_some(RequestHooks { pre, post })
}

impl RequestHooks {
    /// Whether `post_request` is defined (the response's environ and headers are
    /// then kept for it).
    pub fn wants_post(&self) -> bool {
        self.post
    }

    /// gunicorn's `req` for this request: method, uri, path, query, version,
    /// headers (upper-cased names, in order, repeats kept), peer address.
    pub fn request_object(
        &self,
        py: Python<'_>,
        request: &crate::contract::Request,
        conn: &crate::contract::Connection,
    ) -> PyResult<Py<PyAny>> {
        let headers = PyList::empty(py);
        for (name, value) in &request.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            headers.append((name.as_str().to_ascii_uppercase(), value.as_ref()))?;
        }
        let version = match request.version {
            http::Version::HTTP_10 => (1, 0),
            http::Version::HTTP_09 => (0, 9),
            _ => (1, 1),
        };
        let peer = match conn.port {
            Some(port) => (conn.addr.as_str(), port).into_pyobject(py)?.into_any(),
            None => conn.addr.as_str().into_pyobject(py)?.into_any(),
        };
        let uri = request
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let req = super::objects::module(py)?.getattr("Request")?.call1((
            request.method.as_str(),
            uri,
            request.uri.path(),
            request.uri.query().unwrap_or(""),
            version,
            headers,
            peer,
        ))?;
        Ok(req.unbind())
    }

    /// `pre_request(worker, req)`. `Err`: its traceback (the request then gets a
    /// 500, as in gunicorn).
    pub fn pre_request(&self, py: Python<'_>, req: &Py<PyAny>) -> Result<(), HookError> {
        match WORKER.get() {
            Some(w) if self.pre => w.hooks.call(
                py,
                Hook::PreRequest,
                (w.worker.clone_ref(py), req.clone_ref(py)),
            ),
            _ => Ok(()),
        }
    }

    /// `post_request(worker, req, environ, resp)`, after the response went out and
    /// the access log line was written; a failure is logged.
    pub fn post_request(
        &self,
        py: Python<'_>,
        req: &Py<PyAny>,
        environ: Option<&Py<PyDict>>,
        outcome: &crate::wsgi::Outcome,
    ) {
        let Some(w) = WORKER.get().filter(|_| self.post) else {
            return;
        };
        let resp = (|| -> PyResult<Bound<'_, PyAny>> {
            let reason = http::StatusCode::from_u16(outcome.status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            let headers = PyList::empty(py);
            for (name, value) in &outcome.headers {
                let value = String::from_utf8_lossy(value.as_bytes());
                headers.append((name.as_str(), value.as_ref()))?;
            }
            super::objects::module(py)?.getattr("Response")?.call1((
                format!("{} {reason}", outcome.status).trim_end(),
                headers,
                outcome.sent,
            ))
        })();
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("post_request: cannot build resp: {e}");
                return;
            }
        };
        let environ = match environ {
            Some(e) => e.clone_ref(py).into_any(),
            None => PyDict::new(py).into_any().unbind(),
        };
        w.hooks.call_logged(
            py,
            Hook::PostRequest,
            (w.worker.clone_ref(py), req.clone_ref(py), environ, resp),
        );
    }
}
