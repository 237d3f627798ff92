//! gunicorn's server hooks (`on_starting`, `child_exit`, `post_fork`, …) from a Python
//! config file, run at gunicorn's moments with gunicorn's arguments.
//!
//! # Where they run
//!
//! Workers are re-executed, never forked, so nothing Python-side is inherited. The
//! master hooks (`on_starting`, `when_ready`, `on_reload`, `on_exit`,
//! `nworkers_changed`, `pre_fork`, `child_exit`) run in an interpreter embedded in the
//! master, which starts only when there is a Python config file ([`in_master`]). The
//! worker hooks (`post_fork`, `post_worker_init`, `worker_int`, `worker_abort`,
//! `worker_exit`, `pre_request`, `post_request`) run in each worker's own interpreter,
//! which evaluates the same file itself ([`in_worker`]).
//!
//! A hook that raises is logged with its traceback; the server keeps running, except
//! for `on_starting` (the master stops before anything listens) and `post_fork` /
//! `post_worker_init` (that worker fails to boot), as in gunicorn.

pub mod in_master;
pub mod in_worker;
pub mod objects;
pub mod privileges;
pub mod proctitle;
pub mod reload;
pub mod timeout;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::wsgi::interpreter::{format_exception, LoadError};

/// Why the config file's hooks could not be taken or run.
#[derive(Debug)]
pub enum HookError {
    /// The file binds a hook's name to something that is not a function.
    NotCallable { hook: &'static str, kind: String },
    /// A hook raised; `traceback` is Python's.
    Raised {
        hook: &'static str,
        traceback: String,
    },
    /// The hooks' Python side could not be set up: `what` failed with `error`.
    Setup { what: &'static str, error: String },
    /// The master's interpreter (started only for the config file) did not start.
    Interpreter(LoadError),
}

impl std::fmt::Display for HookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookError::NotCallable { hook, kind } => {
                write!(
                    f,
                    "config file: {hook} must be a function (it is a '{kind}')"
                )
            }
            HookError::Raised { hook, traceback } => write!(f, "{hook} hook raised:\n{traceback}"),
            HookError::Setup { what, error } => write!(f, "{what}: {error}"),
            HookError::Interpreter(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for HookError {}

/// Every server hook gunicorn defines, in its documentation's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    OnStarting,
    OnReload,
    WhenReady,
    PreFork,
    PostFork,
    PostWorkerInit,
    WorkerInt,
    WorkerAbort,
    PreRequest,
    PostRequest,
    ChildExit,
    WorkerExit,
    NworkersChanged,
    OnExit,
}

impl Hook {
    pub const ALL: [Hook; 14] = [
        Hook::OnStarting,
        Hook::OnReload,
        Hook::WhenReady,
        Hook::PreFork,
        Hook::PostFork,
        Hook::PostWorkerInit,
        Hook::WorkerInt,
        Hook::WorkerAbort,
        Hook::PreRequest,
        Hook::PostRequest,
        Hook::ChildExit,
        Hook::WorkerExit,
        Hook::NworkersChanged,
        Hook::OnExit,
    ];

    /// The config file's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Hook::OnStarting => "on_starting",
            Hook::OnReload => "on_reload",
            Hook::WhenReady => "when_ready",
            Hook::PreFork => "pre_fork",
            Hook::PostFork => "post_fork",
            Hook::PostWorkerInit => "post_worker_init",
            Hook::WorkerInt => "worker_int",
            Hook::WorkerAbort => "worker_abort",
            Hook::PreRequest => "pre_request",
            Hook::PostRequest => "post_request",
            Hook::ChildExit => "child_exit",
            Hook::WorkerExit => "worker_exit",
            Hook::NworkersChanged => "nworkers_changed",
            Hook::OnExit => "on_exit",
        }
    }
}

/// The hooks a config file defines, with the `server` object they receive.
pub struct Hooks {
    /// One entry per [`Hook::ALL`]; `None` when the file does not define it.
    found: Vec<Option<Py<PyAny>>>,
    /// gunicorn's `server` (the Arbiter, or the worker's view of it).
    pub server: Py<PyAny>,
}

impl Hooks {
    /// Takes the hooks out of a config file's namespace. A name that is bound to
    /// something not callable is an error naming it, as in gunicorn.
    pub fn from_namespace(
        py: Python<'_>,
        namespace: &Bound<'_, PyDict>,
        server: Py<PyAny>,
    ) -> Result<Hooks, HookError> {
        let mut found = Vec::with_capacity(Hook::ALL.len());
        for hook in Hook::ALL {
            let value = namespace
                .get_item(hook.name())
                .map_err(|e| HookError::Setup {
                    what: "config file",
                    error: e.to_string(),
                })?;
            match value {
                Some(v) if v.is_none() => found.push(None),
                Some(v) if v.is_callable() => found.push(Some(v.unbind())),
                Some(v) => {
                    let kind = v
                        .get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default();
                    return Err(HookError::NotCallable {
                        hook: hook.name(),
                        kind,
                    });
                }
                None => found.push(None),
            }
        }
        let _ = py;
        Ok(Hooks { found, server })
    }

    /// Whether the file defines `hook` (a hook that is not defined costs nothing).
    pub fn has(&self, hook: Hook) -> bool {
        self.get(hook).is_some()
    }

    fn get(&self, hook: Hook) -> Option<&Py<PyAny>> {
        let i = Hook::ALL.iter().position(|h| *h == hook)?;
        self.found.get(i)?.as_ref()
    }

    /// Calls `hook` with `args`; `Err` carries its traceback. Undefined: `Ok`.
    pub fn call<'py>(
        &self,
        py: Python<'py>,
        hook: Hook,
        args: impl pyo3::call::PyCallArgs<'py>,
    ) -> Result<(), HookError> {
        let Some(f) = self.get(hook) else {
            return Ok(());
        };
        f.bind(py)
            .call1(args)
            .map(drop)
            .map_err(|e| HookError::Raised {
                hook: hook.name(),
                traceback: format_exception(py, &e).trim_end().to_owned(),
            })
    }

    /// Calls `hook` and logs a failure with its traceback; the caller goes on.
    pub fn call_logged<'py>(
        &self,
        py: Python<'py>,
        hook: Hook,
        args: impl pyo3::call::PyCallArgs<'py>,
    ) {
        if let Err(e) = self.call(py, hook, args) {
            tracing::error!(target: crate::logging::EXCEPTION, "{e}");
        }
    }
}
