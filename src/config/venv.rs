//! `--venv` (or `VIRTUAL_ENV`) checked while the config is validated, so a venv made
//! with another Python fails before anything starts (the interpreter itself is
//! `wsgi/interpreter.rs`).

use crate::error::ConfigError;
use std::path::{Path, PathBuf};

/// The interpreter this binary was linked against (baked in by build.rs).
pub const BUILD_PYTHON_VERSION: &str = env!("RWSGI_PYTHON_VERSION");

/// Checks that `venv` looks like a virtualenv made with the Python rwsgi embeds.
/// Called while validating the config, so a wrong `--venv` fails before anything starts.
pub fn check_venv(venv: &Path) -> Result<PathBuf, ConfigError> {
    let cfg = venv.join("pyvenv.cfg");
    let text = std::fs::read_to_string(&cfg).map_err(|_| {
        format!(
            "--venv {}: not a virtualenv (no readable pyvenv.cfg); create one with \
             `python{} -m venv {}` or unset VIRTUAL_ENV",
            venv.display(),
            BUILD_PYTHON_VERSION,
            venv.display()
        )
    })?;
    for line in text.lines() {
        let mut parts = line.splitn(2, '=');
        let key = parts.next().unwrap_or("").trim();
        let value = parts.next().unwrap_or("").trim();
        if key == "version" || key == "version_info" {
            let wanted = format!("{BUILD_PYTHON_VERSION}.");
            if !(value == BUILD_PYTHON_VERSION || value.starts_with(&wanted)) {
                return Err(ConfigError(format!(
                    "--venv {}: made with Python {value}, but rwsgi embeds Python {}; \
                     recreate the venv with that Python or rebuild rwsgi against yours",
                    venv.display(),
                    BUILD_PYTHON_VERSION
                )));
            }
        }
    }
    let python = venv.join("bin").join("python");
    if !python.exists() {
        return Err(ConfigError(format!(
            "--venv {}: no bin/python in it",
            venv.display()
        )));
    }
    Ok(python)
}
