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
    // Not an option (no RWSGI_* variable may turn the server into a printer): the
    // gunicorn settings table for docs/gunicorn-settings.md's generator.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "--gunicorn-settings")
    {
        print!("{}", crate::config::gunicorn::table_json());
        return exit::OK;
    }
    // Command line > RWSGI_* environment > --config file > default; see config::sources.
    let (cli, sources) = match crate::config::sources::parse_layered(
        std::env::args_os().collect(),
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
    let layers = crate::config::Layers { cli, sources };
    // Before the app is imported, the Django layer is empty: see `Config::from_layers`.
    let config = match Config::from_layers(&layers, &Default::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rwsgi: error: {e}");
            // --check-config answers 0 or 1, as gunicorn's.
            return if layers.cli.check_config {
                exit::RUNTIME
            } else {
                exit::USAGE
            };
        }
    };
    if let Err(e) = crate::logging::init(&config.log) {
        eprintln!("rwsgi: error: {e}");
        return exit::USAGE;
    }
    let config = Arc::new(config);
    if let Some(worker) = worker_env() {
        return crate::worker::main(&layers, config, worker.0, worker.1, worker.2);
    }
    for note in &config.notes {
        tracing::info!("{note}");
    }
    for (key, value) in &config.process.env {
        // SAFETY (edition 2021: safe fn): no other thread runs yet; workers inherit it.
        std::env::set_var(key, value);
    }
    if config.check_config {
        return check_config(&config);
    }
    if let Err(e) = capture_output(&config.log) {
        eprintln!("rwsgi: error: --capture-output: {e}");
        return exit::USAGE;
    }
    run_master(config, &layers)
}

/// `--check-config`: the configuration is valid (it was validated to get here); import
/// the app as a worker would, and answer 0, or 1 with the reason.
fn check_config(config: &Config) -> i32 {
    if let Some(dir) = &config.python.chdir {
        if let Err(e) = std::env::set_current_dir(dir) {
            eprintln!("rwsgi: error: --chdir {}: {e}", dir.display());
            return exit::RUNTIME;
        }
    }
    let loaded = crate::wsgi::interpreter::initialize(&config.python).and_then(|()| {
        pyo3::Python::attach(|py| crate::wsgi::interpreter::load_app(py, &config.app))
    });
    match loaded {
        Ok(_) => {
            tracing::info!(app = %config.app, "--check-config: configuration and app are valid");
            exit::OK
        }
        Err(e) => {
            eprintln!("rwsgi: error: {e}");
            exit::RUNTIME
        }
    }
}

/// `--capture-output`: stdout and stderr of the master, and so of every worker and the
/// app's prints, go to the `--error-log` file.
fn capture_output(log: &crate::config::LogConfig) -> std::io::Result<()> {
    let (true, Some(path)) = (log.capture_output, &log.error_log) else {
        return Ok(());
    };
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    for target in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: dup2 onto the standard descriptors; `file` stays open during the call.
        if unsafe { libc::dup2(file.as_raw_fd(), target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The notifier configuration once the first worker has read the Django settings:
/// the whole config built again with the Django layer, never patched.
fn notify_config(
    config: &Config,
    layers: &crate::config::Layers,
    settings: &std::collections::BTreeMap<String, String>,
) -> Result<crate::notify::NotifyConfig, String> {
    if settings.is_empty() || !config.python.read_django_settings {
        return Ok(config.notify.clone());
    }
    let layered = Config::from_layers(layers, settings).map_err(|e| e.0)?;
    for used in &layered.django {
        tracing::info!("Django settings: {used}");
    }
    Ok(layered.notify)
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

fn run_master(config: Arc<Config>, layers: &crate::config::Layers) -> i32 {
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
        let notify = match notify_config(&config, layers, &settings) {
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
    code
}
