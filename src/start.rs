//! Start-up: read the configuration, then run this process as the master, as a
//! worker (a process started with `RWSGI_WORKER_ID` and `RWSGI_CONTROL_FD` in its
//! environment), or as the `--preload` process (`RWSGI_ZYGOTE_FD`), whose forks go
//! on as workers. Neither the master's modules nor the workers' call the other's.

use std::sync::Arc;

use crate::config::{Config, Layers};
use crate::control::{CONTROL_FD_ENV, WORKER_ID_ENV};
use crate::error::Fatal;

/// The whole program, for each binary's `main` (`rwsgi`, and the wheel's
/// `rwsgi-server`): run, and turn the error that stopped rwsgi (if any) into its exit
/// code, said once.
pub fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(fatal) => fatal.report(),
    }
}

/// Runs rwsgi (master or worker); `Err` says why it stopped, with the exit code.
pub fn run() -> Result<(), Fatal> {
    // Not an option (no RWSGI_* variable may turn the server into a printer): the
    // gunicorn settings table for docs/gunicorn-settings.md's generator.
    if crate::hooks::proctitle::args()
        .get(1)
        .is_some_and(|a| a == "--gunicorn-settings")
    {
        print!("{}", crate::config::gunicorn::table_json());
        return Ok(());
    }
    // Command line > GUNICORN_CMD_ARGS > RWSGI_* environment > config file > Django >
    // default; see config::sources.
    let (mut cli, sources) = crate::config::sources::parse_layered(
        crate::hooks::proctitle::args().to_vec(),
        &std::env::vars_os().collect(),
    )
    .map_err(|e| Fatal::said(e.report()))?;
    if cli.print_config {
        let toml = crate::config::print::render(&cli, &sources).map_err(Fatal::usage)?;
        print!("{toml}");
        return Ok(());
    }
    // Heroku, Render, Fly, Cloud Run, ECS, Railway: defaults for what nobody set.
    let env = crate::config::platform::process_env();
    let platform = crate::config::platform::apply(&mut cli, &sources, &env);
    let layers = Layers { cli, sources };
    // Before the app is imported, the Django layer is empty: see `Config::from_layers`.
    let config = Config::from_layers(&layers, &Default::default()).map_err(|e| {
        // --check-config answers 0 or 1, as gunicorn's.
        if layers.cli.check_config {
            Fatal::runtime(e)
        } else {
            Fatal::usage(e)
        }
    })?;
    crate::logging::init(&config.log).map_err(Fatal::usage)?;
    let config = Arc::new(config);
    crate::hooks::privileges::apply_umask(config.hooks.umask);
    if let Some((id, control_fd, balance_fd)) = worker_env() {
        return crate::worker::main(&layers, config, id, control_fd, balance_fd);
    }
    if let Some(control) = crate::zygote::env_fd() {
        return preload_process(&layers, config, control);
    }
    if let Some(line) = platform {
        tracing::info!("{line}");
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
    if config.gunicorn.daemon {
        // As gunicorn: once the configuration is known to be valid, before any thread,
        // runtime or socket exists; the pid file is written after, with the new pid.
        let keep_stdio = config.gunicorn.enable_stdio_inheritance;
        nix::unistd::daemon(true, keep_stdio)
            .map_err(|e| Fatal::runtime(format_args!("--daemon: {e}")))?;
    }
    capture_output(&config.log).map_err(|e| Fatal::usage(format_args!("--capture-output: {e}")))?;
    // From here a TERM is a clean stop, even before the supervisor handles signals.
    crate::master::early_signals::hold();
    // --preload: the process that imports the app is forked now, while this one has
    // no thread yet (an exec would pay this binary's start again).
    let preload = if config.process.preload {
        use crate::master::zygote::{fork_now, Forked};
        let forked = fork_now()
            .map_err(|e| Fatal::runtime(format_args!("cannot start the --preload process: {e}")))?;
        match forked {
            Forked::Preload(control) => return preload_process(&layers, config, control),
            Forked::Master(z) => Some(z),
        }
    } else {
        None
    };
    crate::master::run(config, &layers, preload)
}

/// The `--preload` process (`zygote.rs`), and the workers it forks, which go on here.
fn preload_process(
    layers: &Layers,
    config: Arc<Config>,
    control: std::os::unix::net::UnixStream,
) -> Result<(), Fatal> {
    match crate::zygote::main(&config, control)? {
        None => Ok(()),
        Some(w) => crate::worker::forked(layers, config, w),
    }
}

/// `--check-config`: the configuration is valid (it was validated to get here); import
/// the app as a worker would, and answer 0, or 1 with the reason.
fn check_config(config: &Config) -> Result<(), Fatal> {
    if let Some(dir) = &config.python.chdir {
        std::env::set_current_dir(dir)
            .map_err(|e| Fatal::runtime(format_args!("--chdir {}: {e}", dir.display())))?;
    }
    crate::wsgi::interpreter::initialize(&config.python)
        .and_then(|()| {
            pyo3::Python::attach(|py| crate::wsgi::interpreter::load_app(py, &config.app))
        })
        .map_err(Fatal::runtime)?;
    tracing::info!(app = %config.app, "--check-config: configuration and app are valid");
    Ok(())
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

/// `(id, control fd, balance memfd)` when this process is a worker; the variables are
/// removed so that processes the app starts do not mistake themselves for workers.
fn worker_env() -> Option<(u32, i32, Option<i32>)> {
    let id = std::env::var(WORKER_ID_ENV).ok()?.parse().ok()?;
    let fd = std::env::var(CONTROL_FD_ENV).ok()?.parse().ok()?;
    // SAFETY (edition 2021: safe fn): no other thread runs yet in this process.
    std::env::remove_var(WORKER_ID_ENV);
    std::env::remove_var(CONTROL_FD_ENV);
    Some((id, fd, balance_env()))
}

/// The balance memfd passed to a worker (removed from the environment, as the role's
/// own variables are).
fn balance_env() -> Option<i32> {
    use crate::server::balance::BALANCE_FD_ENV;
    let balance = std::env::var(BALANCE_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    // SAFETY (edition 2021: safe fn): no other thread runs yet in this process.
    std::env::remove_var(BALANCE_FD_ENV);
    balance
}
