//! The layers below the command line, as argv for clap: the option list from
//! [`Cli::command`] ([`Spec`]), the `RWSGI_*` environment and the `--config` TOML file,
//! each turned into [`Setting`]s that [`super::parse_layered`] ranks and merges.

use std::any::TypeId;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use clap::{ArgAction, ArgMatches, Command};

use super::{Kind, Source, CONFIG, ENV_PREFIX, PRINT_CONFIG};
use crate::config::ConfigError;

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

/// The file named by `--config` on the command line, else by `RWSGI_CONFIG`.
pub(super) fn config_path(
    specs: &[Spec],
    cli: &ArgMatches,
    on_command_line: &[bool],
    env: &HashMap<OsString, OsString>,
) -> Option<(PathBuf, Source)> {
    let i = specs.iter().position(|s| s.name == CONFIG)?;
    if on_command_line[i] {
        let path = cli.get_raw(&specs[i].id)?.next_back()?;
        return Some((PathBuf::from(path), Source::CommandLine));
    }
    let var = specs[i].env_var();
    env.get(OsStr::new(&var))
        .filter(|v| !v.is_empty())
        .map(|v| (PathBuf::from(v), Source::Env(var)))
}

pub(super) fn read_file(path: &Path, named_by: &Source) -> Result<toml::Table, ConfigError> {
    // ghooks (temporary, replaced by the Python config loader at merge): a Python
    // config file is evaluated by `crate::hooks::pyconfig`, not parsed as TOML.
    if crate::config::hooks::PythonConfigFile::from_option(path).is_some() {
        return Ok(toml::Table::new());
    }
    let origin = match named_by {
        Source::Env(var) => format!(" (from {var})"),
        _ => String::new(),
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "--{CONFIG} {}{origin}: cannot read: {e}",
            path.display()
        ))
    })?;
    text.parse::<toml::Table>().map_err(|e| {
        let detail = e.to_string();
        ConfigError(format!(
            "config file {}{origin}: not valid TOML: {}",
            path.display(),
            detail.trim_end()
        ))
    })
}

pub(super) fn file_layer(
    specs: &[Spec],
    path: &Path,
    table: &toml::Table,
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
        let Some(&i) = keys.get(&normal) else {
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
        Kind::Positional | Kind::Single => scalar(value).map(|v| vec![v]).ok_or(scalar_kind),
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
