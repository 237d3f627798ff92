//! Python config files, as gunicorn reads them: `-c FILE.py` (any path not ending in
//! `.toml`), `-c python:module.name`, and `./gunicorn.conf.py` when no file is named.
//!
//! The file runs in the same embedded CPython as the app (started here, in the master
//! too, only when such a file is in use; workers are re-executed and evaluate it again
//! in their own interpreter, where their hooks run). Its module-level variables whose
//! names are settings become a TOML table that [`crate::config::sources`] reads like a
//! TOML file, so precedence, type checks and `--print-config` sources are the same;
//! other variables are ignored, as gunicorn ignores them. Callables and other values
//! that cannot be options (server hooks, `secure_scheme_headers`) are kept apart.
//!
//! The evaluated namespace stays available through [`namespace`], for the server hooks.
//! On HUP the master reads its configuration again: [`forget`] drops the namespace,
//! and the new evaluation (if a Python file is still in use) replaces it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use super::ConfigError;

/// gunicorn's default config file, read from the working directory when present.
pub const DEFAULT_FILE: &str = "gunicorn.conf.py";
/// `-c python:module.name` names an importable module instead of a file.
pub const MODULE_PREFIX: &str = "python:";

/// The namespace of the evaluated config file (its module `__dict__`).
static NAMESPACE: Mutex<Option<Py<PyDict>>> = Mutex::new(None);

fn slot() -> std::sync::MutexGuard<'static, Option<Py<PyDict>>> {
    NAMESPACE.lock().unwrap_or_else(|p| p.into_inner())
}

/// The evaluated config file's module namespace, when a Python config file is in use:
/// where the server hooks (`on_starting`, `post_fork`, …) are taken from.
pub fn namespace(py: Python<'_>) -> Option<Bound<'_, PyDict>> {
    slot().as_ref().map(|ns| ns.bind(py).clone())
}

/// Whether a Python config file was evaluated (its namespace is in use).
pub fn in_use() -> bool {
    slot().is_some()
}

/// Drops the namespace before the configuration is read again (HUP), so that a
/// configuration that no longer names a Python file leaves none behind.
pub fn forget() {
    if let Some(old) = slot().take() {
        // Released with the GIL held (the master's interpreter exists: a file was
        // evaluated there).
        Python::attach(|_| drop(old));
    }
}

/// Whether `-c VALUE` names a Python config (gunicorn's rule: everything that is not
/// rwsgi's TOML).
pub fn is_python(path: &Path) -> bool {
    path.extension().is_none_or(|e| e != "toml")
}

/// A Python config file's settings.
pub struct Evaluated {
    /// Settings that are options, as TOML values (lists as arrays).
    pub table: toml::Table,
    /// Settings that are not options (hooks, dicts): name and repr.
    pub file_only: Vec<(String, String)>,
}

/// Runs the file (or imports `python:module`) and takes its settings: `wanted` says
/// which variable names are settings. `venv` is the virtualenv the interpreter uses.
///
/// An exception gives its traceback, as gunicorn prints it, in the error.
pub fn evaluate(
    target: &Path,
    venv: Option<PathBuf>,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<Evaluated, ConfigError> {
    let shown = target.display().to_string();
    let python = crate::config::PythonConfig {
        threads: 1,
        chdir: None,
        pythonpath: Vec::new(),
        venv,
        read_django_settings: false,
        inline: false,
        inline_max_us: 1000,
    };
    crate::wsgi::interpreter::initialize(&python)
        .map_err(|e| ConfigError(format!("config file {shown}: {e}")))?;
    Python::attach(|py| {
        let namespace = run(py, &shown).map_err(|e| {
            ConfigError(format!(
                "Failed to read config file: {shown}\n{}",
                crate::wsgi::interpreter::format_exception(py, &e).trim_end()
            ))
        })?;
        let mut table = toml::Table::new();
        let mut file_only = Vec::new();
        for (key, value) in namespace.iter() {
            let Ok(key) = key.extract::<String>() else {
                continue;
            };
            if key.starts_with('_') || !wanted(&key) || value.is_none() {
                continue;
            }
            match to_toml(&value) {
                Some(v) => {
                    table.insert(key, v);
                }
                None => file_only.push((key, repr(&value))),
            }
        }
        *slot() = Some(namespace.unbind());
        Ok(Evaluated { table, file_only })
    })
}

/// gunicorn's loading: a file through `SourceFileLoader` whatever its extension, as
/// module `__config__`; `python:name` through `importlib.import_module`.
fn run<'py>(py: Python<'py>, target: &str) -> PyResult<Bound<'py, PyDict>> {
    let importlib = py.import("importlib")?;
    let module = match target.strip_prefix(MODULE_PREFIX) {
        Some(name) => importlib.call_method1("import_module", (name,))?,
        None => {
            let util = py.import("importlib.util")?;
            let machinery = py.import("importlib.machinery")?;
            let loader = machinery.call_method1("SourceFileLoader", ("__config__", target))?;
            let kwargs = PyDict::new(py);
            kwargs.set_item("loader", &loader)?;
            let spec = util.call_method(
                "spec_from_file_location",
                ("__config__", target),
                Some(&kwargs),
            )?;
            let module = util.call_method1("module_from_spec", (&spec,))?;
            py.import("sys")?
                .getattr("modules")?
                .set_item("__config__", &module)?;
            loader.call_method1("exec_module", (&module,))?;
            module
        }
    };
    module
        .getattr("__dict__")?
        .cast_into::<PyDict>()
        .map_err(Into::into)
}

/// A value that an option can take, as TOML; `None` for callables, dicts and other
/// objects that are not options' values.
fn to_toml(v: &Bound<'_, PyAny>) -> Option<toml::Value> {
    if v.is_instance_of::<PyBool>() {
        return v.extract::<bool>().ok().map(toml::Value::Boolean);
    }
    if v.is_instance_of::<PyInt>() {
        return v.extract::<i64>().ok().map(toml::Value::Integer);
    }
    if v.is_instance_of::<PyFloat>() {
        return v.extract::<f64>().ok().map(toml::Value::Float);
    }
    if v.is_instance_of::<PyString>() {
        return v.extract::<String>().ok().map(toml::Value::String);
    }
    if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        let items: Option<Vec<toml::Value>> = v
            .try_iter()
            .ok()?
            .map(|item| item.ok().and_then(|i| to_toml(&i)))
            .collect();
        return items.map(toml::Value::Array);
    }
    None
}

fn repr(v: &Bound<'_, PyAny>) -> String {
    v.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<object>".to_string())
}
