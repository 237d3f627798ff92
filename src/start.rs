//! Start-up: read the configuration, then run this process as the master or as a
//! worker (a process started with `RWSGI_WORKER_ID` and `RWSGI_CONTROL_FD` in its
//! environment is a worker). Neither role's module calls the other's.

use std::sync::Arc;

use crate::config::Config;
use crate::control::{CONTROL_FD_ENV, WORKER_ID_ENV};
use crate::error::Fatal;

/// Runs rwsgi (master or worker); `Err` says why it stopped, with the exit code.
pub fn run() -> Result<(), Fatal> {
    // Command line > RWSGI_* environment > --config file > default; see config::sources.
    let (cli, sources) = crate::config::sources::parse_layered(
        crate::hooks::proctitle::args().to_vec(),
        &std::env::vars_os().collect(),
    )
    .map_err(|e| Fatal::said(e.report()))?;
    if cli.print_config {
        let toml = crate::config::print::render(&cli, &sources).map_err(Fatal::usage)?;
        print!("{toml}");
        return Ok(());
    }
    let config = Config::from_cli(&cli).map_err(|e| Fatal::usage(sources.annotate(&e)))?;
    crate::logging::init(&config.log).map_err(Fatal::usage)?;
    let config = Arc::new(config);
    crate::hooks::privileges::apply_umask(config.hooks.umask);
    match worker_env() {
        Some((id, control_fd, balance_fd)) => {
            crate::worker::main(config, id, control_fd, balance_fd)
        }
        None => crate::master::run(config, &cli, &sources),
    }
}

/// `(id, control fd, balance memfd)` when this process is a worker; the variables are
/// removed so that processes the app starts do not mistake themselves for workers.
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
