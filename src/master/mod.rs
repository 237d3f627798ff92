//! The master process: parses the configuration, supervises the workers (which load
//! the app, so a broken import fails before any socket is bound), merges their
//! tracker snapshots and runs the notifier timer.
//!
//! The same binary is both: a process started with `RWSGI_WORKER_ID` and
//! `RWSGI_CONTROL_FD` in its environment is a worker (see [`crate::worker`]).

pub mod aggregate;
pub mod spawn;
pub mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use crate::config::sources::Sources;
use crate::config::Config;
use crate::control::{CONTROL_FD_ENV, WORKER_ID_ENV};

/// Exit codes, as gunicorn uses them.
pub mod exit {
    pub const OK: i32 = 0;
    pub const RUNTIME: i32 = 1;
    pub const USAGE: i32 = 2;
    /// The app (or a worker) failed to boot.
    pub const BOOT: i32 = 3;
}

/// Runs rwsgi (master or worker) and returns the process exit code.
pub fn main() -> i32 {
    // Command line > RWSGI_* environment > --config file > default; see config::sources.
    let (cli, sources) = match crate::config::sources::parse_layered(
        crate::hooks::proctitle::args().to_vec(),
        &std::env::vars_os().collect(),
    ) {
        Ok(parsed) => parsed,
        Err(e) => return e.report(),
    };
    if cli.print_config {
        return match crate::config::print::render(&cli, &sources) {
            Ok(toml) => {
                print!("{toml}");
                exit::OK
            }
            Err(e) => {
                eprintln!("rwsgi: error: {e}");
                exit::USAGE
            }
        };
    }
    let config = match Config::from_cli(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rwsgi: error: {}", sources.annotate(&e));
            return exit::USAGE;
        }
    };
    if let Err(e) = crate::logging::init(&config.log) {
        eprintln!("rwsgi: error: {e}");
        return exit::USAGE;
    }
    let config = Arc::new(config);
    crate::hooks::privileges::apply_umask(config.hooks.umask);
    if let Some(worker) = worker_env() {
        return crate::worker::main(config, worker.0, worker.1, worker.2);
    }
    run_master(config, &cli, &sources)
}

/// The notifier configuration, with request-time-tracker's Django settings (from the
/// first worker) filling options nobody set.
fn notify_config(
    config: &Config,
    cli: &crate::cli::Cli,
    sources: &Sources,
    settings: &std::collections::BTreeMap<String, String>,
) -> Result<crate::notify::NotifyConfig, String> {
    if settings.is_empty() || !config.python.read_django_settings {
        return Ok(config.notify.clone());
    }
    let applied = crate::config::django::apply(cli, sources, settings);
    for used in &applied.used {
        tracing::info!("Django settings: {used}");
    }
    let mut notify = crate::notify::NotifyConfig::from_args(
        &applied.cli.notify,
        applied.cli.tracker.queue_header.is_some(),
        config.log.format,
    )
    .map_err(|e| format!("{e} (with QUEUE_TIME_TRACKER_* settings from Django)"))?;
    if let Some(keys) = applied.aws_keys {
        notify.set_aws_keys(keys);
    }
    Ok(notify)
}

/// `(id, control fd, balance memfd)` when this process is a worker; the variables are removed so
/// that processes the app starts do not mistake themselves for workers.
fn worker_env() -> Option<(u32, i32, Option<i32>)> {
    use crate::server::balance::BALANCE_FD_ENV;
    let id = std::env::var(WORKER_ID_ENV).ok()?.parse().ok()?;
    let fd = std::env::var(CONTROL_FD_ENV).ok()?.parse().ok()?;
    let balance = std::env::var(BALANCE_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    // SAFETY (edition 2021: safe fn): no other thread runs yet in this process.
    std::env::remove_var(WORKER_ID_ENV);
    std::env::remove_var(CONTROL_FD_ENV);
    std::env::remove_var(BALANCE_FD_ENV);
    Some((id, fd, balance))
}

fn run_master(config: Arc<Config>, cli: &crate::cli::Cli, sources: &Sources) -> i32 {
    if let Some(name) = &config.hooks.proc_name {
        crate::hooks::proctitle::set(&format!("rwsgi: master [{name}]"));
    }
    // The Python config file's master hooks (an interpreter in the master only when
    // there is such a file): gunicorn sets the worker count, then calls on_starting.
    let started = crate::hooks::in_master::init(&config).and_then(|()| {
        crate::hooks::in_master::nworkers_changed(config.process.workers, None);
        crate::hooks::in_master::on_starting()
    });
    if let Err(e) = started {
        eprintln!("rwsgi: error: {e}");
        return exit::RUNTIME;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rwsgi: error: cannot start the runtime: {e}");
            return exit::RUNTIME;
        }
    };
    if let Some(pid_file) = &config.process.pid_file {
        if let Err(e) = std::fs::write(pid_file, format!("{}\n", std::process::id())) {
            eprintln!("rwsgi: error: --pid {}: {e}", pid_file.display());
            return exit::USAGE;
        }
    }
    tracing::info!(
        app = %config.app,
        workers = config.process.workers,
        threads = config.python.threads,
        "Starting rwsgi {} (master pid {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    let code = runtime.block_on(async {
        let mut sup = supervisor::Supervisor::new(config.clone());
        let settings = match sup.boot().await {
            Ok(settings) => settings,
            Err(code) => return code,
        };
        let notify = match notify_config(&config, cli, sources, &settings) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("rwsgi: error: {e}");
                sup.abort();
                return exit::USAGE;
            }
        };
        let notifier = if notify.sinks().is_empty() {
            None
        } else {
            match crate::notify::Notifier::start(notify.clone()).await {
                Ok(n) => Some(n),
                Err(e) => {
                    eprintln!("rwsgi: error: {e}");
                    sup.abort();
                    return exit::USAGE;
                }
            }
        };
        let mut aggregator = aggregate::Aggregator::new(notify.interval(), notifier);
        let code = sup.run(&mut aggregator).await;
        aggregator
            .finish(config.process.graceful_timeout.min(Duration::from_secs(10)))
            .await;
        code
    });
    if let Some(pid_file) = &config.process.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    for spec in &config.server.binds {
        if let crate::config::BindSpec::Unix(path) = spec {
            // Only a socket file: when binding failed because the path is some other
            // file, that file is the user's and stays.
            use std::os::unix::fs::FileTypeExt;
            let is_socket =
                std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
            if code != exit::BOOT && is_socket {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    if code == exit::OK {
        tracing::info!("Shutting down: Master");
    }
    crate::hooks::in_master::on_exit();
    code
}
