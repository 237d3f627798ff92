//! The embedded CPython: start it (venv-aware, signals left to the server), set up
//! `sys.path`, and load the WSGI callable, with errors a user can act on.
//!
//! CPython is initialised through `PyConfig` rather than `Python::initialize` so that
//! (a) it does not install its own SIGINT handler (SIGINT and SIGTERM belong to the
//! server) and (b) `executable` can point at a virtualenv's `bin/python`: CPython's
//! own path computation then finds `pyvenv.cfg` and the venv's site-packages, exactly
//! as that venv's `python` would.

use std::ffi::CString;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::config::{AppSpec, PythonConfig};

/// Why the app could not be loaded; the `Display` is what the user sees.
#[derive(Debug)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Starts CPython once per process and releases the GIL, so that any thread may
/// attach afterwards.
pub fn initialize(cfg: &PythonConfig) -> Result<(), LoadError> {
    let executable: Option<PathBuf> = match &cfg.venv {
        Some(venv) => Some(venv.join("bin").join("python")),
        None => option_env!("RWSGI_PYTHON_EXECUTABLE").map(PathBuf::from),
    };
    // SAFETY: PyConfig is plain C data initialised by PyConfig_InitPythonConfig before
    // any field is read; it is cleared after Py_InitializeFromConfig copies it.
    unsafe {
        let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let mut config = config.assume_init();
        config.install_signal_handlers = 0;
        config.parse_argv = 0;
        if let Some(exe) = executable {
            let c = CString::new(exe.as_os_str().as_bytes())
                .map_err(|_| LoadError("python executable path contains NUL".into()))?;
            let status =
                ffi::PyConfig_SetBytesString(&mut config, &mut config.executable, c.as_ptr());
            if ffi::PyStatus_Exception(status) != 0 {
                ffi::PyConfig_Clear(&mut config);
                return Err(LoadError("could not set the Python executable".into()));
            }
        }
        let status = ffi::Py_InitializeFromConfig(&config);
        ffi::PyConfig_Clear(&mut config);
        if ffi::PyStatus_Exception(status) != 0 {
            let msg = if status.err_msg.is_null() {
                "unknown error".to_string()
            } else {
                std::ffi::CStr::from_ptr(status.err_msg)
                    .to_string_lossy()
                    .into_owned()
            };
            return Err(LoadError(format!("Python failed to start: {msg}")));
        }
        // The main thread holds the GIL after initialisation; give it up so the
        // Python threads (and `Python::attach` anywhere) can take it.
        ffi::PyEval_SaveThread();
    }
    Python::attach(|py| setup_sys_path(py, cfg))
        .map_err(|e| LoadError(format!("could not set sys.path: {e}")))
}

/// `--chdir` first, then `--pythonpath` entries, as gunicorn orders them.
fn setup_sys_path(py: Python<'_>, cfg: &PythonConfig) -> PyResult<()> {
    let sys = py.import("sys")?;
    let path = sys.getattr("path")?.cast_into::<PyList>()?;
    for dir in cfg.pythonpath.iter().rev() {
        path.insert(0, dir.to_string_lossy().as_ref())?;
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    path.insert(0, cwd.to_string_lossy().as_ref())?;
    sys.setattr("argv", vec!["rwsgi"])?;
    Ok(())
}

/// Imports `module:callable` and returns the callable. On failure the message names
/// the module or attribute and carries the exception with its Python traceback.
pub fn load_app(py: Python<'_>, spec: &AppSpec) -> Result<Py<PyAny>, LoadError> {
    let module = py.import(spec.module.as_str()).map_err(|e| {
        LoadError(format!(
            "Failed to import application module '{}':\n{}",
            spec.module,
            format_exception(py, &e)
        ))
    })?;
    let (attr, call) = match spec.attr.strip_suffix("()") {
        Some(name) => (name, true),
        None => (spec.attr.as_str(), false),
    };
    let mut obj = module.getattr(attr).map_err(|_| {
        LoadError(format!(
            "Failed to find attribute '{attr}' in '{}': the module has no such name; \
             check APP (`module:callable`)",
            spec.module
        ))
    })?;
    if call {
        obj = obj.call0().map_err(|e| {
            LoadError(format!(
                "Calling application factory '{}:{}' failed:\n{}",
                spec.module,
                spec.attr,
                format_exception(py, &e)
            ))
        })?;
    }
    if !obj.is_callable() {
        let kind = obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into());
        return Err(LoadError(format!(
            "Application object must be callable: '{}:{}' is a '{kind}'",
            spec.module, spec.attr
        )));
    }
    Ok(obj.unbind())
}

/// Renders an exception with its traceback, as Python would print it.
pub fn format_exception(py: Python<'_>, err: &PyErr) -> String {
    let formatted = (|| -> PyResult<String> {
        let tb = py.import("traceback")?;
        let lines = tb.call_method1(
            "format_exception",
            (err.get_type(py), err.value(py), err.traceback(py)),
        )?;
        let joined: String = ""
            .into_pyobject(py)?
            .call_method1("join", (lines,))?
            .extract()?;
        Ok(joined)
    })();
    formatted.unwrap_or_else(|_| err.to_string())
}
