//! Evaluates a gunicorn Python config file into its namespace (a dict), the way
//! gunicorn does: the file runs as a module named `__config__`; `python:NAME` is
//! imported from `sys.path`.
//!
//! TEMPORARY: the gunicorn-compatible config loader replaces this file at merge; the
//! hooks take their input only through [`crate::hooks::Hooks::from_namespace`].

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::config::hooks::PythonConfigFile;
use crate::wsgi::interpreter::format_exception;

/// The file's namespace, or a message with the file's name and its traceback.
pub fn evaluate<'py>(
    py: Python<'py>,
    file: &PythonConfigFile,
) -> Result<Bound<'py, PyDict>, String> {
    let loaded = match file {
        PythonConfigFile::Path(path) => (|| -> PyResult<Bound<'py, PyAny>> {
            let util = py.import("importlib.util")?;
            let spec = util.call_method1(
                "spec_from_file_location",
                ("__config__", path.to_string_lossy().as_ref()),
            )?;
            if spec.is_none() {
                return Err(pyo3::exceptions::PyImportError::new_err(
                    "not loadable as Python source",
                ));
            }
            let module = util.call_method1("module_from_spec", (&spec,))?;
            py.import("sys")?
                .getattr("modules")?
                .set_item("__config__", &module)?;
            spec.getattr("loader")?
                .call_method1("exec_module", (&module,))?;
            Ok(module)
        })(),
        PythonConfigFile::Module(name) => py.import(name.as_str()).map(|m| m.into_any()),
    };
    let module = loaded.map_err(|e| {
        format!(
            "config file {} failed:\n{}",
            file.describe(),
            format_exception(py, &e).trim_end()
        )
    })?;
    module
        .getattr("__dict__")
        .and_then(|d| Ok(d.cast_into::<PyDict>()?))
        .map_err(|e| format!("config file {}: {e}", file.describe()))
}
