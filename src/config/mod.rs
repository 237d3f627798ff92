//! The validated configuration: built from every layer of sources by
//! [`Config::from_layers`], then borrowed by every component as its own typed
//! sub-struct.
//!
//! The layers, highest first: the command line, `GUNICORN_CMD_ARGS`, `RWSGI_*` and
//! gunicorn's own variables, the config file (TOML or Python), request-time-tracker's
//! Django settings ([`django`], known once a worker has imported the app), defaults.
//! Validation happens here and only here, on all layers at once, so a bad value fails
//! at start with a message that names the option, never later as a panic inside a
//! worker, and no component patches a validated config.

pub mod bind;
pub mod django;
pub mod gunicorn;
pub mod hooks;
pub mod lifecycle;
pub mod platform;
pub mod print;
pub mod pyfile;
pub mod sources;
pub mod tls;
pub mod venv;

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{Cli, LogFormat};
pub use crate::error::ConfigError;
pub use bind::BindSpec;

/// Everything rwsgi needs to run, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub app: AppSpec,
    pub server: ServerConfig,
    pub python: PythonConfig,
    pub process: ProcessConfig,
    pub log: LogConfig,
    pub tracker: TrackerConfig,
    pub notify: crate::notify::NotifyConfig,
    /// gunicorn settings that other parts of rwsgi implement, with gunicorn's meaning.
    pub gunicorn: gunicorn::Gunicorn,
    /// `--check-config`: import the app and exit instead of serving.
    pub check_config: bool,
    /// One line each for settings given that do nothing in rwsgi; the master logs them.
    pub notes: Vec<String>,
    /// `--option from QUEUE_TIME_TRACKER_X`: what the Django layer filled, for the log.
    pub django: Vec<String>,
    pub lifecycle: lifecycle::LifecycleConfig,
    /// The Python config file, reload, privileges, process titles (`hooks.rs`).
    pub hooks: hooks::HooksConfig,
}

/// The parsed sources a [`Config`] is built from: kept, so that the Django layer can
/// be added once the app is imported and the whole validated again.
#[derive(Debug, Clone)]
pub struct Layers {
    pub cli: Cli,
    pub sources: sources::Sources,
}

/// The configuration read again from `args` and this process's environment, as
/// `start.rs` reads it at start (the layers, then the platform's defaults for
/// options nobody set; no Django layer): the master on HUP. A Python config file is
/// evaluated again ([`pyfile::forget`] drops the old namespace first).
pub fn reread(args: Vec<std::ffi::OsString>) -> Result<Config, ConfigError> {
    pyfile::forget();
    let (mut cli, sources) = sources::parse_layered(args, &std::env::vars_os().collect())
        .map_err(|e| ConfigError(e.to_string()))?;
    platform::apply(&mut cli, &sources, &platform::process_env());
    Config::from_layers(&Layers { cli, sources }, &Default::default())
}

/// Queue-time measurement and load shedding.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// The proxy's stamp header; `None` records only `server_wait`.
    pub queue_header: Option<http::HeaderName>,
    /// Stamps older than this are counted `invalid`.
    pub max_age: Duration,
    /// Peers whose stamps are believed (unix-socket peers always are).
    pub trusted: crate::tracker::TrustedPeers,
    /// Shed (503) requests that waited longer than this; `None` = never.
    pub max_queue_time: Option<Duration>,
}

/// `module:callable` from APP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    /// Dotted module path, imported with `importlib`.
    pub module: String,
    /// Attribute of the module; a trailing `()` calls it as an app factory.
    pub attr: String,
}

impl AppSpec {
    /// Parses `module:callable`; the callable defaults to `application` as in gunicorn.
    pub fn parse(s: &str) -> Result<AppSpec, ConfigError> {
        let (module, attr) = match s.split_once(':') {
            Some((m, a)) => (m.trim(), a.trim()),
            None => (s.trim(), "application"),
        };
        let valid_module = !module.is_empty()
            && module
                .split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'));
        let bare = attr.strip_suffix("()").unwrap_or(attr);
        let valid_attr = !bare.is_empty()
            && bare
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '.');
        if !valid_module || !valid_attr {
            return Err(ConfigError(format!(
                "APP '{s}' is not `module:callable` (for example myproject.wsgi:application)"
            )));
        }
        Ok(AppSpec {
            module: module.to_string(),
            attr: attr.to_string(),
        })
    }
}

impl std::fmt::Display for AppSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.module, self.attr)
    }
}

/// Sockets and HTTP/1.1 limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen; never empty.
    pub binds: Vec<BindSpec>,
    pub backlog: u32,
    /// Permissions given to `unix:` sockets after binding.
    pub unix_socket_mode: u32,
    /// Idle time after which a keep-alive connection is closed; `None` disables keep-alive.
    pub keep_alive: Option<Duration>,
    /// Time allowed to receive a complete request head (slowloris guard).
    pub header_timeout: Duration,
    /// `--client-body-timeout`: longest wait for the next bytes of a request body.
    pub body_timeout: Duration,
    /// `--send-timeout`: longest a write may wait for the client to take bytes.
    pub send_timeout: Duration,
    /// `--hyper-only`: no own HTTP/1.1 path (`server/own.rs`).
    pub hyper_only: bool,
    pub limits: Limits,
    /// Connections per worker at once; more wait in the kernel backlog.
    pub worker_connections: usize,
    /// Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (unix-socket
    /// peers always are, as in gunicorn).
    pub forwarded_allow: crate::tracker::TrustedPeers,
    /// `--remote-addr-from-forwarded`: REMOTE_ADDR is the client from a trusted
    /// X-Forwarded-For; otherwise the peer's address, as in gunicorn.
    pub remote_addr_from_forwarded: bool,
    /// `--reuse-port`: SO_REUSEPORT on TCP sockets.
    pub reuse_port: bool,
    /// `--header-map`: what becomes of header names that contain `_`.
    pub header_map: HeaderMap,
}

/// gunicorn's `--header-map`: `X_Foo` and `X-Foo` both map to `HTTP_X_FOO`, so a
/// client could pose as a header a proxy set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderMap {
    /// Such headers are left out of the environ (gunicorn's default).
    Drop,
    /// A request with such a header gets 400.
    Refuse,
    /// Mapped like any other, the values of colliding names joined with `, `
    /// (gunicorn before 22).
    Dangerous,
}

/// gunicorn's request limits; 0 in the CLI means "no limit" and becomes `usize::MAX`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub request_line: usize,
    pub request_fields: usize,
    pub request_field_size: usize,
}

/// The embedded interpreter.
#[derive(Debug, Clone)]
pub struct PythonConfig {
    /// Python threads per worker.
    pub threads: usize,
    /// Directory to change into before loading; it goes first on sys.path.
    pub chdir: Option<PathBuf>,
    pub pythonpath: Vec<PathBuf>,
    /// A checked virtualenv (has pyvenv.cfg made by the embedded Python version).
    pub venv: Option<PathBuf>,
    pub read_django_settings: bool,
    /// `--threads 1` and not `--no-inline`: quick bodiless requests may run on the
    /// IO thread.
    pub inline: bool,
    /// `--inline-max-ms`, in microseconds: how quick a route's recent runs must have
    /// been for it to run inline.
    pub inline_max_us: u32,
}

/// Worker processes and their lifecycle.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    pub workers: usize,
    /// Longest a request may run before its worker is replaced; zero: no limit.
    pub timeout: Duration,
    pub graceful_timeout: Duration,
    /// 0 = never recycle.
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    pub pid_file: Option<PathBuf>,
    /// `-e/--env KEY=VALUE`, set in the master before workers start.
    pub env: Vec<(String, String)>,
    /// `--preload`: one process imports the app and forks the workers (`zygote.rs`).
    pub preload: bool,
}

impl ProcessConfig {
    /// This worker's `--max-requests` with its share of `--max-requests-jitter`
    /// (fixed per worker id, so one worker keeps one limit); `None` = never.
    pub fn max_requests_limit(&self, worker_id: u32) -> Option<u64> {
        if self.max_requests == 0 {
            return None;
        }
        let jitter = if self.max_requests_jitter == 0 {
            0
        } else {
            let mut rng = fastrand::Rng::with_seed(
                u64::from(worker_id) ^ u64::from(std::process::id()).rotate_left(32),
            );
            rng.u64(0..=self.max_requests_jitter)
        };
        Some(self.max_requests.saturating_add(jitter))
    }
}

/// Where log lines and access log lines go.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A tracing filter directive (`info`, `warn`, …) from gunicorn's level names.
    pub level: String,
    pub format: LogFormat,
    /// `None` is stderr.
    pub error_log: Option<PathBuf>,
    /// `None`: no access log; `Some(None)`: stdout; `Some(Some(path))`: a file.
    pub access_log: Option<Option<PathBuf>>,
    pub access_log_format: String,
    /// `--capture-output`: the app's stdout and stderr go to `error_log`.
    pub capture_output: bool,
}

pub(crate) fn secs(option: &str, value: f64, allow_zero: bool) -> Result<Duration, ConfigError> {
    if !value.is_finite() || value < 0.0 || (!allow_zero && value == 0.0) {
        let bound = if allow_zero { ">= 0" } else { "> 0" };
        return Err(ConfigError(format!(
            "{option} {value}: must be a number of seconds {bound}"
        )));
    }
    Duration::try_from_secs_f64(value)
        .map_err(|_| ConfigError(format!("{option} {value}: too large")))
}

/// `--inline-max-ms` in whole microseconds: more than 0, at most a minute.
fn inline_max_us(ms: f64) -> Result<u32, ConfigError> {
    if !ms.is_finite() || ms <= 0.0 || ms > 60_000.0 {
        return Err(ConfigError(format!(
            "--inline-max-ms {ms}: must be a number of milliseconds > 0 and <= 60000 \
             (--no-inline turns running on the IO thread off)"
        )));
    }
    Ok(((ms * 1000.0).round() as u32).max(1))
}

fn log_level(level: &str) -> Result<String, ConfigError> {
    let directive = match level.to_ascii_lowercase().as_str() {
        "debug" => "debug",
        "info" => "info",
        "warning" | "warn" => "warn",
        "error" => "error",
        "critical" => "error",
        "trace" => "trace",
        other => {
            return Err(ConfigError(format!(
                "--log-level {other}: expected debug, info, warning, error or critical"
            )))
        }
    };
    Ok(directive.to_string())
}

fn log_path(option: &str, value: &str) -> Result<Option<PathBuf>, ConfigError> {
    if value == "-" {
        return Ok(None);
    }
    if value.is_empty() {
        return Err(ConfigError(format!(
            "{option}: empty path (use - for the console)"
        )));
    }
    Ok(Some(PathBuf::from(value)))
}

/// gunicorn's default for an unset `--forwarded-allow-ips`.
pub const FORWARDED_ALLOW_IPS_DEFAULT: &str = "127.0.0.1,::1";

/// `--forwarded-allow-ips`, else `$FORWARDED_ALLOW_IPS` (gunicorn's default, so below
/// the config file as in gunicorn), else 127.0.0.1,::1.
pub(crate) fn forwarded_allow_ips(cli: &Cli) -> String {
    cli.server.forwarded_allow_ips.clone().unwrap_or_else(|| {
        std::env::var("FORWARDED_ALLOW_IPS")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| FORWARDED_ALLOW_IPS_DEFAULT.to_string())
    })
}

impl Config {
    /// Builds the config from all layers: `django` holds the QUEUE_TIME_TRACKER_*
    /// settings (without the prefix) a worker read after importing the app, empty
    /// before that or with `--ignore-django-settings`. They fill only options that no
    /// other layer set. Errors say where the value came from.
    pub fn from_layers(
        layers: &Layers,
        django: &std::collections::BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let Layers { cli, sources } = layers;
        if django.is_empty() || cli.python.ignore_django_settings {
            return Config::from_cli(cli).map_err(|e| sources.annotate(&e));
        }
        let applied = django::apply(cli, sources, django);
        let mut config = Config::from_cli(&applied.cli).map_err(|e| {
            ConfigError(format!(
                "{} (with QUEUE_TIME_TRACKER_* settings from Django)",
                sources.annotate(&e)
            ))
        })?;
        if let Some(keys) = applied.aws_keys {
            config.notify.set_aws_keys(keys);
        }
        config.django = applied.used;
        Ok(config)
    }

    /// Validates one merged command line into a [`Config`] (every layer but Django's
    /// is in it already: see [`sources::parse_layered`]).
    pub(crate) fn from_cli(cli: &Cli) -> Result<Config, ConfigError> {
        let app = match &cli.app {
            Some(app) => AppSpec::parse(app)?,
            None => {
                return Err(ConfigError(
                    "APP is missing: give the WSGI application as `module:callable` \
                     (for example `rwsgi myproject.wsgi:application`)"
                        .into(),
                ))
            }
        };
        let s = &cli.server;
        let binds = if s.bind.is_empty() {
            match std::env::var("PORT") {
                Ok(port) => vec![BindSpec::parse(&format!("0.0.0.0:{port}"))
                    .map_err(|e| ConfigError(format!("$PORT: {e}")))?],
                Err(_) => vec![BindSpec::parse("127.0.0.1:8000")?],
            }
        } else {
            s.bind
                .iter()
                .map(|b| BindSpec::parse(b))
                .collect::<Result<Vec<_>, _>>()?
        };
        let unix_socket_mode = u32::from_str_radix(&s.unix_socket_mode, 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                ConfigError(format!(
                    "--unix-socket-mode {}: expected octal permissions like 660",
                    s.unix_socket_mode
                ))
            })?;
        let keep_alive = secs("--keep-alive", s.keep_alive, true)?;
        let header_map = match s.header_map.trim().to_ascii_lowercase().as_str() {
            "drop" => HeaderMap::Drop,
            "refuse" => HeaderMap::Refuse,
            "dangerous" => HeaderMap::Dangerous,
            _ => {
                return Err(ConfigError(format!(
                    "--header-map {}: expected drop, refuse or dangerous",
                    s.header_map
                )))
            }
        };
        let unlimited = |v: usize| if v == 0 { usize::MAX } else { v };
        let server = ServerConfig {
            binds,
            backlog: s.backlog,
            unix_socket_mode,
            keep_alive: (!keep_alive.is_zero()).then_some(keep_alive),
            header_timeout: secs("--header-timeout", s.header_timeout, false)?,
            body_timeout: secs("--client-body-timeout", s.client_body_timeout, false)?,
            send_timeout: secs("--send-timeout", s.send_timeout, false)?,
            hyper_only: s.hyper_only,
            limits: Limits {
                request_line: unlimited(s.limit_request_line),
                request_fields: if s.limit_request_fields == 0 {
                    32768
                } else {
                    s.limit_request_fields.min(32768)
                },
                request_field_size: unlimited(s.limit_request_field_size),
            },
            worker_connections: if s.worker_connections == 0 {
                return Err(ConfigError("--worker-connections must be >= 1".into()));
            } else {
                s.worker_connections
            },
            forwarded_allow: crate::tracker::TrustedPeers::parse(&forwarded_allow_ips(cli))
                .map_err(|e| ConfigError(format!("--forwarded-allow-ips: {e}")))?,
            remote_addr_from_forwarded: s.remote_addr_from_forwarded,
            reuse_port: s.reuse_port,
            header_map,
        };
        let mut notes = Vec::new();
        if let Some(class) = &cli.python.worker_class {
            notes.extend(gunicorn::worker_class(class)?);
        }

        let p = &cli.python;
        if p.threads == 0 || p.threads > 4096 {
            return Err(ConfigError(format!(
                "--threads {}: must be between 1 and 4096",
                p.threads
            )));
        }
        if let Some(dir) = &p.chdir {
            if !dir.is_dir() {
                return Err(ConfigError(format!(
                    "--chdir {}: no such directory",
                    dir.display()
                )));
            }
        }
        let venv = match &p.venv {
            Some(v) if !v.as_os_str().is_empty() => {
                venv::check_venv(v)?;
                Some(std::fs::canonicalize(v).unwrap_or_else(|_| v.clone()))
            }
            _ => None,
        };
        let python = PythonConfig {
            threads: p.threads,
            chdir: p.chdir.clone(),
            pythonpath: p.pythonpath.clone(),
            venv,
            read_django_settings: !p.ignore_django_settings,
            inline: p.threads == 1 && !p.no_inline,
            inline_max_us: inline_max_us(p.inline_max_ms)?,
        };

        let pr = &cli.process;
        let workers = match pr.workers {
            Some(n) => n,
            None => match std::env::var("WEB_CONCURRENCY") {
                Ok(v) => v.trim().parse().map_err(|_| {
                    ConfigError(format!(
                        "$WEB_CONCURRENCY '{v}': expected a number of workers"
                    ))
                })?,
                Err(_) => 1,
            },
        };
        if workers == 0 || workers > 1024 {
            return Err(ConfigError(format!(
                "--workers {workers}: must be between 1 and 1024"
            )));
        }
        let process = ProcessConfig {
            workers,
            timeout: secs("--timeout", pr.timeout, true)?,
            graceful_timeout: secs("--graceful-timeout", pr.graceful_timeout, true)?,
            max_requests: pr.max_requests,
            max_requests_jitter: pr.max_requests_jitter,
            pid_file: pr.pid_file.clone(),
            preload: pr.preload,
            env: cli
                .python
                .env
                .iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) if !k.trim().is_empty() && !kv.contains('\0') => {
                        Ok((k.trim().to_string(), v.to_string()))
                    }
                    _ => Err(ConfigError(format!(
                        "--env {kv}: expected KEY=VALUE (for example -e DJANGO_DEBUG=0)"
                    ))),
                })
                .collect::<Result<_, _>>()?,
        };

        let l = &cli.logging;
        let log = LogConfig {
            level: log_level(&l.log_level)?,
            format: l.log_format,
            error_log: log_path("--error-log", &l.error_log)?,
            access_log: match &l.access_log {
                None => None,
                Some(v) => Some(log_path("--access-log", v)?),
            },
            access_log_format: l.access_log_format.clone(),
            capture_output: l.capture_output,
        };

        let t = &cli.tracker;
        let queue_header = match &t.queue_header {
            None => None,
            Some(h) => Some(
                http::HeaderName::from_bytes(h.trim().as_bytes()).map_err(|_| {
                    ConfigError(format!(
                        "--queue-header {h:?}: not a valid header name (for example X-RequestTime)"
                    ))
                })?,
            ),
        };
        let trusted = match &t.queue_header_trusted_from {
            Some(list) => crate::tracker::TrustedPeers::parse(list)
                .map_err(|e| ConfigError(format!("--queue-header-trusted-from: {e}")))?,
            None => server.forwarded_allow.clone(),
        };
        let tracker = TrackerConfig {
            queue_header,
            max_age: secs("--queue-max-age", t.queue_max_age, false)?,
            trusted,
            max_queue_time: match t.max_queue_time {
                None => None,
                Some(v) => Some(secs("--max-queue-time", v, false)?),
            },
        };
        let notify = crate::notify::NotifyConfig::from_args(
            &cli.notify,
            tracker.queue_header.is_some(),
            l.log_format,
        )?;
        let gunicorn = gunicorn::Gunicorn::from_values(&cli.gunicorn)?;
        notes.extend(gunicorn.notes().iter().cloned());
        let lifecycle = lifecycle::LifecycleConfig::from_args(
            &cli.lifecycle,
            &cli.scaling,
            &cli.apm,
            process.workers,
        )?;
        let hooks = hooks::HooksConfig::from_gunicorn(&gunicorn, cli.config.as_deref())?;
        let mut process = process;
        if process.preload && hooks.reload {
            // A forked worker would run the code imported before the change.
            process.preload = false;
            notes.push(
                "--preload with --reload: each worker imports the app itself, so that a \
                 changed file is imported again"
                    .into(),
            );
        }
        Ok(Config {
            app,
            server,
            python,
            process,
            log,
            tracker,
            notify,
            gunicorn,
            check_config: cli.check_config,
            notes,
            django: Vec::new(),
            lifecycle,
            hooks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_spec_defaults_to_application() {
        let a = AppSpec::parse("myproject.wsgi").unwrap();
        assert_eq!(a.module, "myproject.wsgi");
        assert_eq!(a.attr, "application");
        let b = AppSpec::parse("app:create_app()").unwrap();
        assert_eq!(b.attr, "create_app()");
    }

    #[test]
    fn app_spec_rejects_garbage() {
        for bad in ["", ":app", "a b:c", "mod:", "mod:a-b", "..x:y"] {
            let e = AppSpec::parse(bad).unwrap_err();
            assert!(e.0.contains("APP"), "{bad}: {e}");
        }
    }

    #[test]
    fn seconds_validation_names_the_option() {
        assert!(secs("--timeout", -1.0, false)
            .unwrap_err()
            .0
            .contains("--timeout"));
        assert!(secs("--timeout", f64::NAN, false).is_err());
        assert!(secs("--header-timeout", 0.0, false).is_err());
        assert_eq!(secs("--keep-alive", 0.0, true).unwrap(), Duration::ZERO);
        assert_eq!(
            secs("--keep-alive", 2.5, true).unwrap(),
            Duration::from_millis(2500)
        );
    }
}
