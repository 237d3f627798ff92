//! The Python side of the hooks: loads `objects.py` (the `server`, `worker`, `req`
//! and `resp` classes) as the module `rwsgi._hooks`, wires its log handler to the
//! server log, and builds `server.cfg` from the validated configuration.

use std::ffi::CString;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule};

use crate::config::Config;

const SOURCE: &str = include_str!("objects.py");

/// Writes one line from a hook's `server.log` / `worker.log` to the server log, at
/// the level Python's `logging` gave it.
#[pyfunction]
fn emit(level: i32, message: &str) {
    match level {
        l if l >= 50 => tracing::error!(target: crate::logging::CRITICAL, "{message}"),
        l if l >= 40 => tracing::error!(target: "hooks", "{message}"),
        l if l >= 30 => tracing::warn!(target: "hooks", "{message}"),
        l if l >= 20 => tracing::info!(target: "hooks", "{message}"),
        _ => tracing::debug!(target: "hooks", "{message}"),
    }
}

/// Loads `rwsgi._hooks` once per interpreter (later calls return the same module).
pub fn module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let modules = py.import("sys")?.getattr("modules")?;
    if let Ok(m) = modules.get_item("rwsgi._hooks") {
        return Ok(m.cast_into::<PyModule>()?);
    }
    let code =
        CString::new(SOURCE).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    let m = PyModule::from_code(py, &code, c"rwsgi/_hooks.py", c"rwsgi._hooks")?;
    m.setattr("_emit", wrap_pyfunction!(emit, &m)?)?;
    modules.set_item("rwsgi._hooks", &m)?;
    Ok(m)
}

/// gunicorn's setting names with rwsgi's effective values, for `server.cfg`. The
/// config file's own simple values fill the names rwsgi does not know, so a hook
/// that reads back what its file set finds it.
pub fn settings_json(config: &Config) -> String {
    let p = &config.process;
    let s = &config.server;
    let binds: Vec<String> = s
        .binds
        .iter()
        .map(|b| {
            let text = b.to_string();
            text.strip_prefix("http://").unwrap_or(&text).to_string()
        })
        .collect();
    let log_dest = |d: &Option<std::path::PathBuf>| match d {
        None => "-".to_string(),
        Some(p) => p.display().to_string(),
    };
    let extra = &config.hooks;
    serde_json::json!({
        "wsgi_app": config.app.to_string(),
        "bind": binds,
        "backlog": s.backlog,
        "workers": p.workers,
        "threads": config.python.threads,
        "worker_class": "gthread",
        "worker_connections": s.worker_connections,
        "timeout": p.timeout.as_secs(),
        "graceful_timeout": p.graceful_timeout.as_secs(),
        "keepalive": s.keep_alive.map(|k| k.as_secs()).unwrap_or(0),
        "max_requests": p.max_requests,
        "max_requests_jitter": p.max_requests_jitter,
        "limit_request_line": s.limits.request_line,
        "limit_request_fields": s.limits.request_fields,
        "limit_request_field_size": s.limits.request_field_size,
        "pidfile": p.pid_file.as_ref().map(|f| f.display().to_string()),
        "chdir": config.python.chdir.as_ref().map(|d| d.display().to_string()),
        "pythonpath": config.python.pythonpath.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(","),
        "loglevel": config.log.level,
        "errorlog": log_dest(&config.log.error_log),
        "accesslog": config.log.access_log.as_ref().map(log_dest),
        "access_log_format": config.log.access_log_format,
        "proc_name": extra.proc_name,
        "default_proc_name": config.app.to_string(),
        "reload": extra.reload,
        "reload_extra_files": extra.reload_extra_files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "user": extra.user.as_ref().map(|u| u.uid),
        "group": extra.user.as_ref().map(|u| u.gid),
        "umask": extra.umask.unwrap_or(0),
        "config": extra.python_config,
        "preload_app": false,
        "daemon": false,
    })
    .to_string()
}

/// Builds `server.cfg`: the effective settings, then the file's simple values for
/// names not among them or unset.
pub fn cfg<'py>(
    py: Python<'py>,
    config: &Config,
    namespace: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyAny>> {
    let values = py
        .import("json")?
        .call_method1("loads", (settings_json(config),))?
        .cast_into::<PyDict>()?;
    for (k, v) in namespace.iter() {
        let Ok(name) = k.extract::<String>() else {
            continue;
        };
        let unset = match values.get_item(&name)? {
            None => true,
            Some(current) => current.is_none(),
        };
        if name.starts_with('_') || !unset || v.is_callable() {
            continue;
        }
        if v.is_instance_of::<PyModule>() {
            continue;
        }
        values.set_item(name, v)?;
    }
    module(py)?.getattr("Config")?.call1((values,))
}
