//! The layers below the command line, as argv for clap: the option list from
//! [`Cli::command`] ([`Spec`]), `GUNICORN_CMD_ARGS`, the `RWSGI_*` environment and the
//! `--config` file (TOML, or Python through [`crate::config::pyfile`]), each turned
//! into [`Setting`]s that [`super::parse_layered`] ranks and merges.

use std::any::TypeId;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use clap::{ArgAction, ArgMatches, Command};

use super::{
    clap_message, Kind, ParseError, Source, CMD_ARGS_ENV, CONFIG, ENV_PREFIX, PRINT_CONFIG,
};
use crate::config::{gunicorn, pyfile, ConfigError};

// ===== Options, from clap =====

/// One option of [`Cli`] as the layers see it.
#[derive(Debug, Clone)]
pub(super) struct Spec {
    /// clap's id (`pid_file`), for [`ArgMatches`].
    pub(super) id: String,
    /// Long name (`pid`), or the id for the positional (`app`).
    pub(super) name: String,
    pub(super) kind: Kind,
    pub(super) numeric: bool,
    pub(super) value_name: String,
    /// Other long names clap accepts (`error-logfile`); the file accepts them too.
    pub(super) aliases: Vec<String>,
    /// clap's own `env` fallback (`VIRTUAL_ENV`), ranked below `RWSGI_*`.
    pub(super) clap_env: Option<OsString>,
    /// May come from the file (everything but `config` and `print-config`).
    pub(super) in_file: bool,
    /// May come from the environment (everything but `print-config`).
    pub(super) in_env: bool,
}

impl Spec {
    pub(super) fn env_var(&self) -> String {
        format!(
            "{ENV_PREFIX}{}",
            self.name.to_ascii_uppercase().replace('-', "_")
        )
    }
}

/// The options of a built [`Command`]: everything but help and version. `original`
/// still has clap's `env` fallbacks, which `cmd` has shed.
pub(super) fn specs(cmd: &Command, original: &Command) -> Vec<Spec> {
    cmd.get_arguments()
        .filter_map(|arg| {
            let kind = if arg.is_positional() {
                Kind::Positional
            } else {
                match arg.get_action() {
                    ArgAction::SetTrue => Kind::Flag,
                    ArgAction::Set => Kind::Single,
                    ArgAction::Append => Kind::Multi,
                    // Help, version, and actions Cli does not use (a test checks).
                    _ => return None,
                }
            };
            let id = arg.get_id().as_str().to_string();
            let name = arg.get_long().map_or_else(|| id.clone(), str::to_string);
            let value_name = arg
                .get_value_names()
                .and_then(|v| v.first())
                .map_or_else(|| id.to_ascii_uppercase(), |v| v.to_string());
            Some(Spec {
                numeric: kind != Kind::Flag && is_numeric(arg),
                aliases: arg
                    .get_all_aliases()
                    .unwrap_or_default()
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
                clap_env: original
                    .get_arguments()
                    .find(|a| a.get_id() == arg.get_id())
                    .and_then(|a| a.get_env().map(OsStr::to_os_string)),
                in_file: name != CONFIG && name != PRINT_CONFIG,
                in_env: name != PRINT_CONFIG,
                id,
                name,
                kind,
                value_name,
            })
        })
        .collect()
}

fn is_numeric(arg: &clap::Arg) -> bool {
    let t = arg.get_value_parser().type_id();
    [
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<usize>(),
        TypeId::of::<i8>(),
        TypeId::of::<i16>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
        TypeId::of::<isize>(),
        TypeId::of::<f32>(),
        TypeId::of::<f64>(),
    ]
    .iter()
    .any(|id| t == *id)
}

pub(super) fn raw_values(m: &ArgMatches, spec: &Spec) -> Vec<String> {
    if spec.kind == Kind::Flag {
        return vec![m.get_flag(&spec.id).to_string()];
    }
    m.get_raw(&spec.id)
        .map(|vals| vals.map(|v| v.to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

// ===== Layers =====

/// One option set by the environment or the file.
#[derive(Debug, Clone)]
pub(super) struct Setting {
    /// Index into the specs.
    pub(super) spec: usize,
    pub(super) source: Source,
    /// `environment RWSGI_THREADS` or `config file F: key 'threads'`, for errors.
    pub(super) label: String,
    /// The values; a flag has none when off and one (unused) when on.
    pub(super) values: Vec<OsString>,
}

impl Setting {
    /// The setting as argv after the program name.
    pub(super) fn argv(&self, spec: &Spec) -> Vec<OsString> {
        match spec.kind {
            Kind::Positional => {
                let mut v = vec![OsString::from("--")];
                v.extend(self.values.iter().cloned());
                v
            }
            Kind::Flag if self.values.is_empty() => Vec::new(),
            Kind::Flag => vec![format!("--{}", spec.name).into()],
            // `--name=value` keeps a value that starts with `-` a value.
            Kind::Single | Kind::Multi => self
                .values
                .iter()
                .map(|v| {
                    let mut arg = OsString::from(format!("--{}=", spec.name));
                    arg.push(v);
                    arg
                })
                .collect(),
        }
    }
}

pub(super) fn env_layer(
    specs: &[Spec],
    env: &HashMap<OsString, OsString>,
    errors: &mut Vec<ConfigError>,
) -> Vec<Setting> {
    let mut settings = Vec::new();
    for (i, spec) in specs.iter().enumerate().filter(|(_, s)| s.in_env) {
        let ours = OsString::from(spec.env_var());
        let found = [Some(&ours), spec.clap_env.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|var| {
                env.get(var)
                    .filter(|v| !v.is_empty())
                    .map(|v| (var.to_string_lossy().into_owned(), v))
            });
        let Some((var, value)) = found else { continue };
        let label = format!("environment {var}");
        let values = match spec.kind {
            Kind::Positional | Kind::Single => vec![value.clone()],
            Kind::Flag => match value.to_str().and_then(parse_bool) {
                Some(true) => vec![OsString::from("true")],
                Some(false) => Vec::new(),
                None => {
                    errors.push(ConfigError(format!(
                        "{label}: invalid value '{}' for '--{}': expected 1, true, yes, on, \
                         0, false, no or off",
                        value.to_string_lossy(),
                        spec.name
                    )));
                    continue;
                }
            },
            Kind::Multi => match value.to_str() {
                Some(list) => list
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(OsString::from)
                    .collect(),
                None => {
                    errors.push(ConfigError(format!(
                        "{label}: '--{}' list is not valid UTF-8",
                        spec.name
                    )));
                    continue;
                }
            },
        };
        settings.push(Setting {
            spec: i,
            source: Source::Env(var),
            label,
            values,
        });
    }
    settings
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// `GUNICORN_CMD_ARGS`, shell-split and parsed like a command line: the options it
/// sets, and the `-c` file it names.
pub(super) fn cmd_args_layer(
    cmd: &mut Command,
    prog: &OsStr,
    specs: &[Spec],
    env: &HashMap<OsString, OsString>,
    errors: &mut Vec<ConfigError>,
) -> (Vec<Setting>, Option<PathBuf>) {
    let Some(value) = env.get(OsStr::new(CMD_ARGS_ENV)).filter(|v| !v.is_empty()) else {
        return (Vec::new(), None);
    };
    let label = format!("environment {CMD_ARGS_ENV}");
    let Some(words) = value.to_str().and_then(shlex::split) else {
        errors.push(ConfigError(format!(
            "{label}: cannot split into arguments (unbalanced quotes, or not UTF-8)"
        )));
        return (Vec::new(), None);
    };
    let mut argv = vec![prog.to_os_string()];
    argv.extend(words.into_iter().map(OsString::from));
    let m = match cmd.try_get_matches_from_mut(argv) {
        Ok(m) => m,
        Err(e) => {
            errors.push(ConfigError(format!("{label}: {}", clap_message(&e))));
            return (Vec::new(), None);
        }
    };
    let mut config = None;
    let mut settings = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        if m.value_source(&spec.id) != Some(clap::parser::ValueSource::CommandLine) {
            continue;
        }
        if spec.name == CONFIG {
            config = m
                .get_raw(&spec.id)
                .and_then(|mut v| v.next_back())
                .map(PathBuf::from);
            continue;
        }
        if !spec.in_env {
            errors.push(ConfigError(format!(
                "{label}: --{} is allowed on the command line only",
                spec.name
            )));
            continue;
        }
        settings.push(Setting {
            spec: i,
            source: Source::Env(CMD_ARGS_ENV.into()),
            label: label.clone(),
            values: raw_values(&m, spec)
                .into_iter()
                .filter(|v| spec.kind != Kind::Flag || v == "true")
                .map(OsString::from)
                .collect(),
        });
    }
    (settings, config)
}

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
        return Ok(FileSettings {
            table: read.table,
            file_only: read.file_only,
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
            crate::wsgi::interpreter::check_venv(&v).map_err(ConfigError)?;
            Ok(Some(std::fs::canonicalize(&v).unwrap_or(v)))
        }
        None => Ok(None),
    }
}

/// The variable names of a Python config file that are settings: gunicorn's names,
/// and rwsgi's own options (`queue_header`) that no gunicorn setting stands for.
fn python_names(specs: &[Spec]) -> std::collections::HashSet<String> {
    // `config` names nothing inside a file, and a file does not print.
    let mut names: std::collections::HashSet<String> = gunicorn::SETTINGS
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

/// The raw values of the gunicorn settings that are not rwsgi options, from the
/// merged matches and the file's hooks and dicts.
pub(super) fn gunicorn_values(
    specs: &[Spec],
    merged: &ArgMatches,
    file_only: &[(String, String)],
) -> gunicorn::Values {
    let mut values = gunicorn::Values::new();
    for spec in specs {
        let own = gunicorn::setting(&spec.id)
            .is_some_and(|g| g.name == spec.id && !matches!(g.treat, gunicorn::Treat::Same(..)));
        if !own {
            continue;
        }
        let set = merged
            .value_source(&spec.id)
            .is_some_and(|s| s != clap::parser::ValueSource::DefaultValue);
        let vals = raw_values(merged, spec);
        if set && (spec.kind != Kind::Flag || vals.iter().any(|v| v == "true")) {
            values.insert(spec.id.clone(), vals);
        }
    }
    for (name, text) in file_only {
        values.insert(name.clone(), vec![text.clone()]);
    }
    values
}

pub(super) fn file_layer(
    specs: &[Spec],
    path: &Path,
    table: &toml::Table,
    file_only: &mut Vec<(String, String)>,
    errors: &mut Vec<ConfigError>,
) -> Vec<Setting> {
    let file = path.display();
    // Every spelling of every key: `foo-bar`, clap aliases; `_` is folded to `-` below.
    let mut keys: BTreeMap<String, usize> = BTreeMap::new();
    for (i, spec) in specs.iter().enumerate() {
        keys.insert(spec.name.clone(), i);
        for alias in &spec.aliases {
            keys.insert(alias.clone(), i);
        }
    }
    let mut seen: HashMap<usize, &str> = HashMap::new();
    let mut settings = Vec::new();
    for (key, value) in table {
        let label = format!("config file {file}: key '{key}'");
        let normal = key.replace('_', "-");
        // gunicorn's names (`keepalive`, `preload_app`) stand for an option too.
        let by_gunicorn = gunicorn::setting(key).and_then(|g| match g.treat {
            gunicorn::Treat::Same(long, _) => Some(long),
            _ => gunicorn::own_long(g),
        });
        let found = keys
            .get(&normal)
            .or_else(|| by_gunicorn.and_then(|long| keys.get(long)));
        if let (None, Some(g)) = (found, gunicorn::setting(key)) {
            // A hook or dict: a Python file's business, but a TOML file may name a
            // hook as an import string or give a table, as gunicorn's validators take.
            match value {
                toml::Value::String(_) | toml::Value::Table(_) => {
                    file_only.push((g.name.to_string(), value.to_string()));
                }
                other => errors.push(ConfigError(format!(
                    "{label}: gunicorn's {} takes {} here, found {}",
                    g.name,
                    if g.kind == gunicorn::Kind::Hook {
                        "an import string (module.function); callables need a Python config file"
                    } else {
                        "a string or a table"
                    },
                    describe_toml(other)
                ))),
            }
            continue;
        }
        let Some(&i) = found else {
            let hint = closest(&normal, keys.keys().filter(|k| specs[keys[*k]].in_file))
                .map(|k| format!("; did you mean '{k}'?"))
                .unwrap_or_default();
            errors.push(ConfigError(format!(
                "config file {file}: unknown key '{key}'{hint}"
            )));
            continue;
        };
        let spec = &specs[i];
        if !spec.in_file {
            errors.push(ConfigError(format!(
                "{label}: --{} is not allowed in a config file; give it on the command line",
                spec.name
            )));
            continue;
        }
        if let Some(other) = seen.insert(i, key) {
            errors.push(ConfigError(format!(
                "{label}: '{other}' already sets --{}",
                spec.name
            )));
            continue;
        }
        match file_values(spec, value) {
            Ok(values) => settings.push(Setting {
                spec: i,
                source: Source::File(path.to_path_buf()),
                label,
                values,
            }),
            Err(expected) => errors.push(ConfigError(format!(
                "{label}: expected {expected} for '--{}', found {}",
                spec.name,
                describe_toml(value)
            ))),
        }
    }
    settings
}

/// A file value as values for clap; `Err` says what the option expects instead.
fn file_values(spec: &Spec, value: &toml::Value) -> Result<Vec<OsString>, &'static str> {
    let scalar_kind = if spec.numeric { "a number" } else { "a string" };
    match spec.kind {
        Kind::Flag => match value {
            toml::Value::Boolean(true) => Ok(vec![OsString::from("true")]),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            _ => Err("true or false"),
        },
        // gunicorn's list-valued strings (`forwarded_allow_ips = ["a", "b"]`).
        Kind::Single => match value {
            toml::Value::Array(items) if !spec.numeric => items
                .iter()
                .map(|i| scalar(i).map(|v| v.to_string_lossy().into_owned()))
                .collect::<Option<Vec<_>>>()
                .map(|v| vec![OsString::from(v.join(","))])
                .ok_or(scalar_kind),
            // gunicorn's validators take booleans for some strings (proxy_protocol).
            toml::Value::Boolean(b) if !spec.numeric => Ok(vec![OsString::from(b.to_string())]),
            other => scalar(other).map(|v| vec![v]).ok_or(scalar_kind),
        },
        Kind::Positional => scalar(value).map(|v| vec![v]).ok_or(scalar_kind),
        Kind::Multi => {
            let expected = if spec.numeric {
                "an array of numbers"
            } else {
                "an array of strings"
            };
            match value {
                toml::Value::Array(items) => items
                    .iter()
                    .map(scalar)
                    .collect::<Option<Vec<_>>>()
                    .ok_or(expected),
                other => scalar(other).map(|v| vec![v]).ok_or(expected),
            }
        }
    }
}

/// Strings and numbers as clap would read them from argv. A float keeps its `.0`, so
/// that `threads = 2.0` stays an error for an integer option.
fn scalar(value: &toml::Value) -> Option<OsString> {
    match value {
        toml::Value::String(s) => Some(s.into()),
        toml::Value::Integer(i) => Some(i.to_string().into()),
        toml::Value::Float(f) => Some(format!("{f:?}").into()),
        _ => None,
    }
}

fn describe_toml(value: &toml::Value) -> String {
    let a = |v: &toml::Value| match v.type_str() {
        t @ ("array" | "integer") => format!("an {t}"),
        t => format!("a {t}"),
    };
    match value {
        toml::Value::Array(items) => match items.iter().find(|v| scalar(v).is_none()) {
            Some(bad) => format!("an array holding {}", a(bad)),
            None => a(value),
        },
        other => a(other),
    }
}

/// The known key nearest to an unknown one, if it is near enough to be a typo.
fn closest<'a>(key: &str, known: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    known
        .map(|k| (levenshtein(key, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) || k.starts_with(key) || key.starts_with(*k))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

pub(super) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
