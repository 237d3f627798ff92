//! The master process: parses the configuration, loads the app (so a broken import
//! fails before any socket is bound), binds, and serves.

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::server::{self, listener, Stop};
use crate::wsgi::interpreter;

/// Exit codes, as gunicorn uses them.
pub mod exit {
    pub const OK: i32 = 0;
    pub const USAGE: i32 = 2;
    /// The app (or a worker) failed to boot.
    pub const BOOT: i32 = 3;
    pub const RUNTIME: i32 = 1;
}

/// Runs rwsgi and returns the process exit code.
pub fn main() -> i32 {
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
    run(Arc::new(config))
}

fn run(config: Arc<Config>) -> i32 {
    if let Some(dir) = &config.python.chdir {
        if let Err(e) = std::env::set_current_dir(dir) {
            eprintln!("rwsgi: error: --chdir {}: {e}", dir.display());
            return exit::USAGE;
        }
    }
    if let Err(e) = interpreter::initialize(&config.python) {
        eprintln!("rwsgi: error: {e}");
        return exit::BOOT;
    }
    let app = match pyo3::Python::attach(|py| interpreter::load_app(py, &config.app)) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("rwsgi: error: {e}");
            return exit::BOOT;
        }
    };
    let mut listeners = Vec::new();
    for spec in &config.server.binds {
        match listener::bind(spec, config.server.backlog, config.server.unix_socket_mode) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                eprintln!("rwsgi: error: {e}");
                return exit::RUNTIME;
            }
        }
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
    tracing::info!("Starting rwsgi {}", env!("CARGO_PKG_VERSION"));
    for l in &listeners {
        tracing::info!("Listening at: {} ({})", l.describe(), std::process::id());
    }
    tracing::info!(
        app = %config.app,
        threads = config.python.threads,
        "Serving with {} Python thread(s)",
        config.python.threads
    );
    let (stop_tx, stop_rx) = watch::channel(Stop::Running);
    runtime.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("Handling signal: term");
                let _ = stop_tx.send(Stop::Graceful);
            }
            _ = int.recv() => {
                tracing::info!("Handling signal: int");
                let _ = stop_tx.send(Stop::Fast);
            }
            _ = quit.recv() => {
                tracing::info!("Handling signal: quit");
                let _ = stop_tx.send(Stop::Fast);
            }
        }
    });
    match server::run(config, listeners, app, &runtime, stop_rx) {
        Ok(()) => {
            tracing::info!("Shutting down");
            exit::OK
        }
        Err(e) => {
            tracing::error!(error = %e, "worker failed");
            exit::RUNTIME
        }
    }
}
