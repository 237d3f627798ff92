//! Finding and reading the `--config` file: which file (command line,
//! `GUNICORN_CMD_ARGS`, `RWSGI_CONFIG`, `./gunicorn.conf.py`), and its settings as a
//! TOML table, whether it is TOML or Python (run through [`crate::config::pyfile`]).

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use clap::ArgMatches;

use super::layers::Spec;
use super::{Kind, ParseError, Source, CMD_ARGS_ENV, CONFIG};
use crate::config::{gunicorn, pyfile, ConfigError};

/// The file named by `--config` on the command line, else in `GUNICORN_CMD_ARGS`, else
/// by `RWSGI_CONFIG`, else gunicorn's `./gunicorn.conf.py` when it exists.
pub(super) fn config_path(
    specs: &[Spec],
    cli: &ArgMatches,
    on_command_line: &[bool],
    cmd_args: Option<PathBuf>,
    env: &HashMap<OsString, OsString>,
) -> Option<(PathBuf, Source)> {
    let i = specs.iter().position(|s| s.name == CONFIG)?;
    if on_command_line[i] {
        let path = cli.get_raw(&specs[i].id)?.next_back()?;
        return Some((PathBuf::from(path), Source::CommandLine));
    }
    if let Some(path) = cmd_args {
        return Some((path, Source::Env(CMD_ARGS_ENV.into())));
    }
    let var = specs[i].env_var();
    if let Some(v) = env.get(OsStr::new(&var)).filter(|v| !v.is_empty()) {
        return Some((PathBuf::from(v), Source::Env(var)));
    }
    let default = PathBuf::from(pyfile::DEFAULT_FILE);
    default.is_file().then_some((default, Source::Default))
}

/// A config file's settings, before they are matched to options.
pub(super) struct FileSettings {
    pub(super) table: toml::Table,
    /// gunicorn settings that are not options (hooks, dicts): name and text.
    pub(super) file_only: Vec<(String, String)>,
}

/// Reads the `--config` file: TOML when its name ends in `.toml`, else Python, run in
/// the embedded interpreter as gunicorn runs it.
pub(super) fn read_file(
    path: &Path,
    named_by: &Source,
    specs: &[Spec],
    cli: &ArgMatches,
    env: &HashMap<OsString, OsString>,
) -> Result<FileSettings, ParseError> {
    let origin = match named_by {
        Source::Env(var) => format!(" (from {var})"),
        _ => String::new(),
    };
    let is_module = path.to_string_lossy().starts_with(pyfile::MODULE_PREFIX);
    if is_module || pyfile::is_python(path) {
        if !is_module && !path.is_file() {
            return Err(ParseError::Sources(vec![ConfigError(format!(
                "--{CONFIG} {}{origin}: cannot read: no such file",
                path.display()
            ))]));
        }
        let venv = early_venv(specs, cli, env).map_err(|e| ParseError::Sources(vec![e]))?;
        let wanted = python_names(specs);
        let read = pyfile::evaluate(path, venv, &|name| wanted.contains(name)).map_err(|e| {
            // A TOML file under another name fails as Python: say how to name it.
            let toml =
                std::fs::read_to_string(path).is_ok_and(|text| text.parse::<toml::Table>().is_ok());
            ParseError::ConfigFile(if toml {
                ConfigError(format!(
                    "{}\n(this file is valid TOML: rwsgi reads a config file as TOML only \
                     when its name ends in .toml, else as Python, as gunicorn does)",
                    e.0
                ))
            } else {
                e
            })
        })?;
        // Only hooks and gunicorn's dict or path settings may be other objects; an
        // option's value that is not a string, number, boolean or list is an error,
        // and an rwsgi option's name bound to a helper (a function) is not a setting.
        let mut file_only = Vec::new();
        let mut errors = Vec::new();
        for (name, repr) in read.file_only {
            match gunicorn::setting(&name) {
                Some(g)
                    if matches!(g.kind, gunicorn::Kind::Hook | gunicorn::Kind::FileOnly)
                        && gunicorn::rwsgi_option(&name).is_none() =>
                {
                    file_only.push((name, repr))
                }
                Some(_) => errors.push(ConfigError(format!(
                    "config file {}: key '{name}': expected a string, a number, a boolean \
                     or a list, found {repr}",
                    path.display()
                ))),
                None => {}
            }
        }
        if !errors.is_empty() {
            return Err(ParseError::Sources(errors));
        }
        return Ok(FileSettings {
            table: read.table,
            file_only,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        ParseError::Sources(vec![ConfigError(format!(
            "--{CONFIG} {}{origin}: cannot read: {e}",
            path.display()
        ))])
    })?;
    let table = text.parse::<toml::Table>().map_err(|e| {
        let detail = e.to_string();
        ParseError::Sources(vec![ConfigError(format!(
            "config file {}{origin}: not valid TOML: {}",
            path.display(),
            detail.trim_end()
        ))])
    })?;
    Ok(FileSettings {
        table,
        file_only: Vec::new(),
    })
}

/// The virtualenv the interpreter starts with when a Python config file starts it:
/// `--venv` from the command line, else `RWSGI_VENV`, else `VIRTUAL_ENV`.
fn early_venv(
    specs: &[Spec],
    cli: &ArgMatches,
    env: &HashMap<OsString, OsString>,
) -> Result<Option<PathBuf>, ConfigError> {
    let Some(spec) = specs.iter().find(|s| s.name == "venv") else {
        return Ok(None);
    };
    let from_cli = (cli.value_source(&spec.id) == Some(clap::parser::ValueSource::CommandLine))
        .then(|| cli.get_raw(&spec.id).and_then(|mut v| v.next_back()))
        .flatten()
        .map(OsStr::to_os_string);
    let from_env = [Some(OsString::from(spec.env_var())), spec.clap_env.clone()]
        .into_iter()
        .flatten()
        .find_map(|var| env.get(&var).filter(|v| !v.is_empty()).cloned());
    match from_cli.or(from_env).map(PathBuf::from) {
        Some(v) => {
            crate::config::venv::check_venv(&v)?;
            Ok(Some(std::fs::canonicalize(&v).unwrap_or(v)))
        }
        None => Ok(None),
    }
}

/// The variable names of a Python config file that are settings: gunicorn's names,
/// and rwsgi's own options (`queue_header`) that no gunicorn setting stands for.
fn python_names(specs: &[Spec]) -> HashSet<String> {
    // `config` names nothing inside a file, and a file does not print.
    let mut names: HashSet<String> = gunicorn::SETTINGS
        .iter()
        .map(|s| s.name.to_string())
        .filter(|n| n != "config" && n != "print_config")
        .collect();
    for spec in specs
        .iter()
        .filter(|s| s.in_file && s.kind != Kind::Positional)
    {
        let shared = gunicorn::SETTINGS.iter().any(|g| {
            g.name == spec.id
                || matches!(g.treat, gunicorn::Treat::Same(long, _) if long == spec.name)
        });
        if !shared {
            names.insert(spec.name.replace('-', "_"));
        }
    }
    names
}
