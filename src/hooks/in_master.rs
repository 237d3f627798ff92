//! The master's hooks: an interpreter embedded in the master, started only when a
//! Python config file exists, evaluates the file and runs `on_starting`,
//! `when_ready`, `on_reload`, `on_exit`, `nworkers_changed`, `pre_fork` and
//! `child_exit` on the master's loop, as gunicorn's arbiter does (a hook that blocks
//! delays supervision, exactly as in gunicorn).
//!
//! Each function here is a no-op without a config file, so the supervisor calls
//! them unconditionally. On HUP, [`reload`] takes the hooks from the file evaluated
//! again; the `server` object and the `worker` objects stay (hooks keep state on
//! them), as gunicorn's arbiter stays itself across a reload.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::{objects, Hook, HookError, Hooks};
use crate::config::Config;

struct Master {
    hooks: Hooks,
    /// gunicorn passes one `worker` object to `pre_fork` and `child_exit` (hooks
    /// keep state on it): by worker id, from `pre_fork` until it exits.
    workers: Py<PyDict>,
}

/// The master's hooks; replaced whole on HUP ([`reload`]). Only the master's loop
/// thread uses it.
static MASTER: Mutex<Option<Arc<Master>>> = Mutex::new(None);

fn current() -> Option<Arc<Master>> {
    MASTER.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn replace(master: Option<Master>) {
    let old = std::mem::replace(
        &mut *MASTER.lock().unwrap_or_else(|p| p.into_inner()),
        master.map(Arc::new),
    );
    if old.is_some() {
        Python::attach(|_| drop(old));
    }
}

/// Starts the master's interpreter and evaluates the config file, if there is one.
/// `Err` is the message to print (the file's traceback) before exiting with 1.
pub fn init(config: &Config) -> Result<(), HookError> {
    if !crate::config::pyfile::in_use() {
        return Ok(());
    }
    crate::wsgi::interpreter::initialize(&config.python).map_err(HookError::Interpreter)?;
    let master = Python::attach(|py| build(py, config, None))?;
    if let Some(file) = &config.hooks.python_config {
        tracing::info!(%file, "Python config file loaded");
    }
    replace(Some(master));
    Ok(())
}

/// HUP, after the configuration was read again (`config`): the hooks of the file
/// as it is now, `server.cfg` the new settings. A configuration without a Python
/// file any more runs no hooks from now on. `Err`: the old hooks stay.
pub fn reload(config: &Config) -> Result<(), HookError> {
    let Some(old) = current() else {
        return init(config);
    };
    if !crate::config::pyfile::in_use() {
        replace(None);
        return Ok(());
    }
    let master = Python::attach(|py| build(py, config, Some(&old)))?;
    replace(Some(master));
    Ok(())
}

/// The hooks of the evaluated file, with a new `server` object, or `old`'s updated
/// to `config` (and `old`'s worker objects).
fn build(py: Python<'_>, config: &Config, old: Option<&Master>) -> Result<Master, HookError> {
    let ns = crate::config::pyfile::namespace(py).ok_or(HookError::Setup {
        what: "the config file's namespace is gone",
        error: String::new(),
    })?;
    let server = (|| -> PyResult<Py<PyAny>> {
        let cfg = objects::cfg(py, config, &ns)?;
        let server = match old {
            Some(m) => {
                let server = m.hooks.server.bind(py).clone();
                server.call_method1("_reloaded", (cfg,))?;
                server
            }
            None => objects::module(py)?.getattr("Server")?.call1((
                cfg,
                std::process::id(),
                config.process.workers,
            ))?,
        };
        Ok(server.unbind())
    })()
    .map_err(|e| HookError::Setup {
        what: "cannot build the hooks' server object",
        error: e.to_string(),
    })?;
    Ok(Master {
        hooks: Hooks::from_namespace(py, &ns, server)?,
        workers: match old {
            Some(m) => m.workers.clone_ref(py),
            None => PyDict::new(py).unbind(),
        },
    })
}

fn with(f: impl FnOnce(Python<'_>, &Master)) {
    if let Some(m) = current() {
        Python::attach(|py| f(py, &m));
    }
}

/// `on_starting(server)`, before anything is spawned or bound. `Err`: the master
/// stops (nothing listens yet).
pub fn on_starting() -> Result<(), HookError> {
    match current() {
        Some(m) => Python::attach(|py| {
            m.hooks
                .call(py, Hook::OnStarting, (m.hooks.server.clone_ref(py),))
        }),
        None => Ok(()),
    }
}

/// `when_ready(server)`: the sockets are bound.
pub fn when_ready() {
    with(|py, m| {
        m.hooks
            .call_logged(py, Hook::WhenReady, (m.hooks.server.clone_ref(py),))
    });
}

/// `on_reload(server)`: HUP, before the new workers are spawned.
pub fn on_reload() {
    with(|py, m| {
        m.hooks
            .call_logged(py, Hook::OnReload, (m.hooks.server.clone_ref(py),))
    });
}

/// `on_exit(server)`: the master is about to exit.
pub fn on_exit() {
    with(|py, m| {
        m.hooks
            .call_logged(py, Hook::OnExit, (m.hooks.server.clone_ref(py),))
    });
}

/// `nworkers_changed(server, new_value, old_value)`; `old` is `None` at start.
pub fn nworkers_changed(new: usize, old: Option<usize>) {
    with(|py, m| {
        let server = m.hooks.server.bind(py);
        let _ = server.setattr("num_workers", new);
        m.hooks
            .call_logged(py, Hook::NworkersChanged, (server.clone(), new, old));
    });
}

/// `pre_fork(server, worker)`: worker `id` (gunicorn's `age`) is about to start.
pub fn pre_fork(id: u32) {
    with(|py, m| {
        let made = (|| -> PyResult<Bound<'_, PyAny>> {
            let server = m.hooks.server.bind(py);
            let worker = objects::module(py)?.getattr("Worker")?.call1((
                server.getattr("cfg")?,
                server.getattr("log")?,
                id,
                py.None(),
                std::process::id(),
                server.getattr("timeout")?,
            ))?;
            m.workers.bind(py).set_item(id, &worker)?;
            Ok(worker)
        })();
        match made {
            Ok(worker) => {
                m.hooks
                    .call_logged(py, Hook::PreFork, (m.hooks.server.clone_ref(py), worker))
            }
            Err(e) => tracing::error!("pre_fork: cannot build the worker object: {e}"),
        }
    });
}

/// Worker `id` now runs as `pid`: its object gets the pid, `server.WORKERS` the entry.
pub fn spawned(id: u32, pid: i32) {
    with(|py, m| {
        let Ok(Some(worker)) = m.workers.bind(py).get_item(id) else {
            return;
        };
        let _ = worker.setattr("pid", pid);
        if let Ok(all) = m.hooks.server.bind(py).getattr("WORKERS") {
            let _ = all.set_item(pid, worker);
        }
    });
}

/// `child_exit(server, worker)`: worker `id` (process `pid`) has exited and been
/// reaped, for whatever reason.
pub fn child_exit(id: u32, pid: i32) {
    with(|py, m| {
        let workers = m.workers.bind(py);
        let worker = match workers.get_item(id) {
            Ok(Some(w)) => w,
            _ => return,
        };
        let _ = workers.del_item(id);
        let _ = worker.setattr("alive", false);
        let server = m.hooks.server.bind(py);
        if let Ok(all) = server.getattr("WORKERS") {
            let _ = all.del_item(pid);
        }
        m.hooks
            .call_logged(py, Hook::ChildExit, (server.clone(), worker));
    });
}
