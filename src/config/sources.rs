//! Layered configuration sources: the command line, `RWSGI_*` environment variables and
//! the `-c/--config` TOML file, merged into one [`Cli`] plus a record of where every
//! value came from ([`Sources`]).
//!
//! Precedence is command line, then environment, then file, then clap's default. The
//! layers are not merged by hand: every layer is turned back into argv (`--foo-bar=v`)
//! and clap parses the merged argv once, so type checking stays clap's alone. For each
//! option only the highest layer that sets it contributes, so repeatable options never
//! mix values from two layers and an environment `0` can switch off a file's `true`.
//!
//! Nothing here knows a particular option: the list comes from [`Cli::command`]. An
//! option `--foo-bar` is `RWSGI_FOO_BAR` in the environment and `foo-bar` (or `foo_bar`,
//! or one of its clap aliases) in the file; the positional APP is `RWSGI_APP` / `app`.
//! Two options are about the sources themselves: `--config` comes from the command line
//! or `RWSGI_CONFIG` (a file cannot name another file), and `--print-config` only from
//! the command line (a stray variable must not turn the server into a printer). clap's
//! own `env` fallbacks (`VIRTUAL_ENV` for `--venv`) rank as environment, below the
//! option's `RWSGI_*` name.
//!
//! Value rules:
//! - Environment: an empty variable counts as unset. Flags take 1/true/yes/on or
//!   0/false/no/off; repeatable options take a comma-separated list.
//! - File: strings and numbers for valued options, booleans for flags, arrays (or one
//!   scalar) for repeatable options. Relative paths are relative to the working directory,
//!   as on the command line.
//!
//! Every layer is type-checked on its own before the merge, even values that a higher
//! layer overrides, so that an error can name the file key or the variable it came from:
//! `config file /etc/rwsgi.toml: key 'threads': invalid value 'x' for '--threads <N>': …`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

use super::ConfigError;
use crate::cli::Cli;
use layers::{
    cmd_args_layer, config_path, env_layer, file_layer, gunicorn_values, raw_values, read_file,
    specs, Setting,
};

mod layers;

/// Prefix of every option's environment variable.
pub const ENV_PREFIX: &str = "RWSGI_";
/// gunicorn's variable of extra arguments, shell-split, ranked below the command line.
pub const CMD_ARGS_ENV: &str = "GUNICORN_CMD_ARGS";

/// Long name of the option that names the file; it cannot come from the file.
const CONFIG: &str = "config";
/// Long name of the option that prints instead of serving; command line only.
const PRINT_CONFIG: &str = "print-config";

const AFTER_HELP: &str = "Every option can also be set as an environment variable \
RWSGI_<OPTION> (RWSGI_THREADS=4, RWSGI_BIND=a,b for repeatable options, RWSGI_APP for \
APP), in GUNICORN_CMD_ARGS (\"--threads 4 --bind :8000\"), or in the file given with \
-c/--config: TOML when its name ends in .toml (threads = 4, bind = [\"a\", \"b\"]), \
else a Python file as gunicorn reads it (./gunicorn.conf.py by default; \
python:MODULE names a module). Every gunicorn setting and spelling is accepted: see \
docs/gunicorn-settings.md. Precedence: command line, GUNICORN_CMD_ARGS, RWSGI_* (and \
VIRTUAL_ENV for --venv), config file, Django's QUEUE_TIME_TRACKER_* settings, then \
gunicorn's defaults from FORWARDED_ALLOW_IPS, WEB_CONCURRENCY and PORT, then the \
default. --print-config shows the result and where each value came from.";

// ===== Public API =====

/// Where an option's effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    CommandLine,
    /// The variable's name: `RWSGI_THREADS`, or a clap fallback such as `VIRTUAL_ENV`.
    Env(String),
    /// The `--config` file (TOML or Python).
    File(PathBuf),
    /// Nobody set it: clap's default (or no value at all).
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::CommandLine => f.write_str("command line"),
            Source::Env(var) => write!(f, "environment {var}"),
            Source::File(path) => write!(f, "config file {}", path.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

/// How an option takes values; decides how a layer's value becomes argv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// APP: placed after `--` at the end of the merged argv.
    Positional,
    /// `ArgAction::SetTrue`: present or absent.
    Flag,
    /// `ArgAction::Set`: one value, the last occurrence wins.
    Single,
    /// `ArgAction::Append`: a list.
    Multi,
}

/// One option's effective value and its source, as [`crate::config::print`] shows it.
#[derive(Debug, Clone)]
pub struct Effective {
    /// The long name without dashes (`threads`, `pid`), or `app` for the positional:
    /// the file key, and the `RWSGI_*` name once upper-cased.
    pub name: String,
    pub kind: Kind,
    /// Whether clap parses the values as numbers, so that a file may write them bare.
    pub numeric: bool,
    pub source: Source,
    /// Raw values after the merge, defaults included; a flag has one, `true` or `false`.
    /// Not valid UTF-8 is replaced (only paths can be that).
    pub values: Vec<String>,
    /// False for the options about the sources themselves (`config`, `print-config`).
    pub in_file: bool,
    /// How clap names the value (`APP` for the positional), to find it in messages.
    value_name: String,
}

/// Where every option's value came from, and the merged raw values.
#[derive(Debug, Clone)]
pub struct Sources {
    /// In the order the options are declared in [`Cli`].
    options: Vec<Effective>,
    /// The `--config` file read, and where its name came from.
    config_file: Option<(PathBuf, Source)>,
    /// gunicorn settings from the file that are not options (hooks, dicts): name and
    /// value as text.
    file_only: Vec<(String, String)>,
}

impl Sources {
    /// Every option, in declaration order.
    pub fn options(&self) -> &[Effective] {
        &self.options
    }

    /// The option with this long name (`threads`) or `app`.
    pub fn get(&self, name: &str) -> Option<&Effective> {
        let name = name.trim_start_matches('-');
        self.options.iter().find(|o| o.name == name)
    }

    /// The config file that was read, and where its name came from.
    pub fn config_file(&self) -> Option<(&Path, &Source)> {
        self.config_file.as_ref().map(|(p, s)| (p.as_path(), s))
    }

    /// gunicorn settings the file gave that are not options (hooks, dicts).
    pub fn file_only(&self) -> &[(String, String)] {
        &self.file_only
    }

    /// `from RWSGI_THREADS`, `from config file /etc/rwsgi.toml`, `from the command line`
    /// or `default`, for an option's long name (`threads` or `--threads`) or `app`.
    pub fn describe(&self, name: &str) -> String {
        match self.get(name).map(|o| &o.source) {
            Some(Source::CommandLine) => "from the command line".into(),
            Some(Source::Env(var)) => format!("from {var}"),
            Some(Source::File(path)) => format!("from config file {}", path.display()),
            Some(Source::Default) | None => "default".into(),
        }
    }

    /// Adds ` (from RWSGI_THREADS)` to a validation error whose message starts with the
    /// option it is about (`--threads 0: …`, `APP 'x' …`), when the value came from the
    /// environment or the file; a command-line value needs no pointer.
    pub fn annotate(&self, err: &ConfigError) -> ConfigError {
        match self.subject(&err.0) {
            Some(o) if matches!(o.source, Source::Env(_) | Source::File(_)) => {
                ConfigError(format!("{} ({})", err.0, self.describe(&o.name)))
            }
            _ => err.clone(),
        }
    }

    /// The option a message is about: its first `--long` token, or a leading `APP`.
    fn subject(&self, message: &str) -> Option<&Effective> {
        let first = message.split_whitespace().next().unwrap_or("");
        let first = first.trim_end_matches(|c: char| !c.is_alphanumeric());
        if let Some(o) = self
            .options
            .iter()
            .find(|o| o.kind == Kind::Positional && o.value_name == first)
        {
            return Some(o);
        }
        let token = message.split_whitespace().find(|w| w.starts_with("--"))?;
        let long: String = token[2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        self.options
            .iter()
            .find(|o| o.kind != Kind::Positional && o.name == long)
    }
}

/// Why the layered parse stopped.
#[derive(Debug)]
pub enum ParseError {
    /// The command line itself is wrong, or asked for `--help`/`--version`: clap's own
    /// message and exit code.
    Usage(clap::Error),
    /// A value in the environment or the file is wrong; every message names the
    /// option and the variable or file key.
    Sources(Vec<ConfigError>),
    /// The Python config file raised: its traceback. Exit 1, as gunicorn.
    ConfigFile(ConfigError),
}

impl ParseError {
    /// Prints the error (or the help text) as clap would and returns the exit code:
    /// 0 for `--help`/`--version`, 2 (usage) otherwise, as gunicorn exits.
    pub fn report(&self) -> i32 {
        match self {
            ParseError::Usage(e) => {
                let _ = e.print();
                if e.use_stderr() {
                    2
                } else {
                    0
                }
            }
            ParseError::Sources(errors) => {
                for e in errors {
                    eprintln!("rwsgi: error: {e}");
                }
                2
            }
            ParseError::ConfigFile(e) => {
                eprintln!("rwsgi: error: {e}");
                1
            }
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Usage(e) => f.write_str(&clap_message(e)),
            ParseError::Sources(errors) => {
                let lines: Vec<&str> = errors.iter().map(|e| e.0.as_str()).collect();
                f.write_str(&lines.join("\n"))
            }
            ParseError::ConfigFile(e) => f.write_str(&e.0),
        }
    }
}

/// Parses `args` (argv, program name first) layered over `env` and the `--config` file.
///
/// `env` is passed in rather than read so that tests need not touch the process
/// environment; `master::main` passes `std::env::vars_os()`.
pub fn parse_layered(
    args: Vec<OsString>,
    env: &HashMap<OsString, OsString>,
) -> Result<(Cli, Sources), ParseError> {
    let prog = args.first().cloned().unwrap_or_else(|| "rwsgi".into());

    // clap's env fallbacks are stripped: they are ours to rank, and read from `env`
    // (where an empty variable counts as unset) rather than the process environment.
    let original = crate::config::gunicorn::command(Cli::command());
    let mut cmd = original
        .clone()
        .mut_args(|a| a.env(None::<&'static str>))
        .after_help(
            "Options also come from RWSGI_<OPTION> variables and a -c TOML file (see --help).",
        )
        .after_long_help(AFTER_HELP);
    cmd.build();

    // The command line alone: its errors, --help and --version are clap's business.
    let cli_matches = cmd
        .try_get_matches_from_mut(&args)
        .map_err(ParseError::Usage)?;
    let specs = specs(&cmd, &original);
    let on_command_line: Vec<bool> = specs
        .iter()
        .map(|s| cli_matches.value_source(&s.id) == Some(ValueSource::CommandLine))
        .collect();

    let mut errors = Vec::new();
    let env_layer = env_layer(&specs, env, &mut errors);
    let (cmd_args_layer, cmd_args_config) =
        cmd_args_layer(&mut cmd, &prog, &specs, env, &mut errors);
    let config_file = config_path(&specs, &cli_matches, &on_command_line, cmd_args_config, env);
    let mut file_only = Vec::new();
    let file_layer = match &config_file {
        Some((path, path_source)) => {
            match read_file(path, path_source, &specs, &cli_matches, env) {
                Ok(read) => {
                    let layer = file_layer(&specs, path, &read.table, &mut file_only, &mut errors);
                    file_only.extend(read.file_only);
                    layer
                }
                Err(ParseError::Sources(mut e)) => {
                    errors.append(&mut e);
                    Vec::new()
                }
                Err(e) => return Err(e),
            }
        }
        None => Vec::new(),
    };

    // Each setting alone, so that a clap error can name its variable or key.
    for setting in env_layer
        .iter()
        .chain(cmd_args_layer.iter())
        .chain(file_layer.iter())
    {
        let mut argv = vec![prog.clone()];
        argv.extend(setting.argv(&specs[setting.spec]));
        if let Err(e) = cmd.try_get_matches_from_mut(argv) {
            errors.push(ConfigError(format!(
                "{}: {}",
                setting.label,
                clap_message(&e)
            )));
        }
    }
    if !errors.is_empty() {
        return Err(ParseError::Sources(errors));
    }

    // The winner of each option not on the command line: GUNICORN_CMD_ARGS, else
    // RWSGI_* (or gunicorn's own variables), else the file.
    let mut winners: Vec<Option<&Setting>> = vec![None; specs.len()];
    for setting in file_layer
        .iter()
        .chain(env_layer.iter())
        .chain(cmd_args_layer.iter())
    {
        if !on_command_line[setting.spec] {
            winners[setting.spec] = Some(setting);
        }
    }
    let mut argv = vec![prog];
    let mut positional = Vec::new();
    for (spec, setting) in specs.iter().zip(&winners) {
        if let Some(setting) = setting {
            match spec.kind {
                Kind::Positional => positional.extend(setting.values.iter().cloned()),
                _ => argv.extend(setting.argv(spec)),
            }
        }
    }
    let user_args = args.get(1..).unwrap_or_default();
    let has_separator = user_args.iter().any(|a| a == "--");
    argv.extend(user_args.iter().cloned());
    if !positional.is_empty() && !has_separator {
        argv.push("--".into());
    }
    argv.extend(positional);

    let merged = cmd
        .try_get_matches_from_mut(argv)
        .map_err(ParseError::Usage)?;
    let mut cli = Cli::from_arg_matches(&merged).map_err(ParseError::Usage)?;
    cli.gunicorn = gunicorn_values(&specs, &merged, &file_only);

    let options = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| Effective {
            name: spec.name.clone(),
            kind: spec.kind,
            numeric: spec.numeric,
            source: if on_command_line[i] {
                Source::CommandLine
            } else {
                winners[i].map_or(Source::Default, |s| s.source.clone())
            },
            values: raw_values(&merged, spec),
            in_file: spec.in_file,
            value_name: spec.value_name.clone(),
        })
        .collect();
    Ok((
        cli,
        Sources {
            options,
            config_file,
            file_only,
        },
    ))
}

/// A clap error as one line, without `error: ` and the `--help` hint.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut parts = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if !line.is_empty() {
            parts.push(line.strip_prefix("error: ").unwrap_or(line));
        }
    }
    parts.join(" ")
}

#[cfg(test)]
pub(crate) mod tests;
