//! The validated configuration: built once at start from [`crate::cli::Cli`], then
//! borrowed by every component as its own typed sub-struct.
//!
//! Validation happens here and only here, so a bad value fails at start with a message
//! that names the option, never later as a panic inside a worker.

pub mod bind;
pub mod django;
pub mod hooks;
pub mod print;
pub mod sources;
pub mod venv;

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{Cli, LogFormat};
pub use bind::BindSpec;

/// A configuration error: the message names the option and says what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl From<String> for ConfigError {
    fn from(s: String) -> Self {
        ConfigError(s)
    }
}

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
    /// Python config file, reload, privileges, process titles (`hooks.rs`).
    pub hooks: hooks::HooksConfig,
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
    /// `--hyper-only`: no own HTTP/1.1 path (`server/own.rs`).
    pub hyper_only: bool,
    pub limits: Limits,
    /// Connections per worker at once; more wait in the kernel backlog.
    pub worker_connections: usize,
    /// Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (unix-socket
    /// peers always are, as in gunicorn).
    pub forwarded_allow: crate::tracker::TrustedPeers,
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
}

/// Worker processes and their lifecycle.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    pub workers: usize,
    pub timeout: Duration,
    pub graceful_timeout: Duration,
    /// 0 = never recycle.
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    pub pid_file: Option<PathBuf>,
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

impl Config {
    /// Validates the raw command line into a [`Config`].
    pub fn from_cli(cli: &Cli) -> Result<Config, ConfigError> {
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
        let unlimited = |v: usize| if v == 0 { usize::MAX } else { v };
        let server = ServerConfig {
            binds,
            backlog: s.backlog,
            unix_socket_mode,
            keep_alive: (!keep_alive.is_zero()).then_some(keep_alive),
            header_timeout: secs("--header-timeout", s.header_timeout, false)?,
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
            forwarded_allow: crate::tracker::TrustedPeers::parse(&s.forwarded_allow_ips)
                .map_err(|e| ConfigError(format!("--forwarded-allow-ips: {e}")))?,
        };

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
                venv::check_venv(v).map_err(ConfigError)?;
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
            timeout: secs("--timeout", pr.timeout, false)?,
            graceful_timeout: secs("--graceful-timeout", pr.graceful_timeout, true)?,
            max_requests: pr.max_requests,
            max_requests_jitter: pr.max_requests_jitter,
            pid_file: pr.pid_file.clone(),
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
        )
        .map_err(ConfigError)?;
        let hooks = hooks::HooksConfig::from_args(&cli.hooks, cli.config.as_deref())?;
        Ok(Config {
            app,
            server,
            python,
            process,
            log,
            tracker,
            notify,
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
        assert!(secs("--timeout", 0.0, false).is_err());
        assert_eq!(secs("--keep-alive", 0.0, true).unwrap(), Duration::ZERO);
        assert_eq!(
            secs("--keep-alive", 2.5, true).unwrap(),
            Duration::from_millis(2500)
        );
    }
}
