//! The master process: parses the configuration, supervises the workers (which load
//! the app, so a broken import fails before any socket is bound), merges their
//! tracker snapshots and runs the notifier timer.
//!
//! The same binary is both master and worker; `start.rs` decides which this process
//! is, and calls [`run`] for the master.

pub mod aggregate;
pub mod early_signals;
pub mod health;
pub mod memory;
pub mod scaler;
pub mod spawn;
pub mod supervisor;
pub mod zygote;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ConfigError};
use crate::error::Fatal;

pub use crate::error::exit;

/// The notifier configuration once the first worker has read the Django settings:
/// the whole config built again with the Django layer, never patched.
fn notify_config(
    config: &Config,
    layers: &crate::config::Layers,
    settings: &std::collections::BTreeMap<String, String>,
) -> Result<crate::notify::NotifyConfig, ConfigError> {
    if settings.is_empty() || !config.python.read_django_settings {
        return Ok(config.notify.clone());
    }
    let layered = Config::from_layers(layers, settings)?;
    for used in &layered.django {
        tracing::info!("Django settings: {used}");
    }
    Ok(layered.notify)
}

/// Runs the master until shutdown; `Err` says why it stopped early (a worker that
/// would not boot, a socket that would not bind, a sink that would not start).
/// `preload`: the `--preload` process forked at start-up ([`zygote::fork_now`]).
pub fn run(
    config: Arc<Config>,
    layers: &crate::config::Layers,
    preload: Option<zygote::Zygote>,
) -> Result<(), Fatal> {
    if let Some(name) = &config.hooks.proc_name {
        crate::hooks::proctitle::set(&format!("rwsgi: master [{name}]"));
    }
    // The Python config file's master hooks (an interpreter in the master only when
    // there is such a file): gunicorn sets the worker count, then calls on_starting.
    crate::hooks::in_master::init(&config)
        .and_then(|()| {
            crate::hooks::in_master::nworkers_changed(config.process.workers, None);
            crate::hooks::in_master::on_starting()
        })
        .map_err(Fatal::runtime)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fatal::runtime(format_args!("cannot start the runtime: {e}")))?;
    if let Some(pid_file) = &config.process.pid_file {
        std::fs::write(pid_file, format!("{}\n", std::process::id()))
            .map_err(|e| Fatal::usage(format_args!("--pid {}: {e}", pid_file.display())))?;
    }
    tracing::info!(
        app = %config.app,
        workers = config.process.workers,
        threads = config.python.threads,
        "Starting rwsgi {} (master pid {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    let ended = runtime.block_on(async {
        let mut sup = supervisor::Supervisor::new(config.clone());
        if let Some(z) = preload {
            sup.adopt_preload(z);
        }
        // Bound before the workers boot: a probe gets a 503 while the app imports.
        let _health_server = match &config.lifecycle.health_bind {
            None => None,
            Some(bind) => Some(
                health::start(bind, sup.health(), config.lifecycle.ready_max_server_wait)
                    .await
                    .map_err(Fatal::usage)?,
            ),
        };
        let Some(settings) = sup.boot().await? else {
            // A signal stopped the master before any worker served.
            return Ok(false);
        };
        // A sink that cannot start stops the workers that booted before it.
        let sinks = async {
            let notify = notify_config(&config, layers, &settings).map_err(Fatal::usage)?;
            let notifier = if notify.sinks().is_empty() {
                None
            } else {
                let started = crate::notify::Notifier::start(notify.clone()).await;
                Some(started.map_err(Fatal::usage)?)
            };
            Ok::<_, Fatal>((notify, notifier))
        };
        let (notify, notifier) = match sinks.await {
            Ok(started) => started,
            Err(e) => {
                sup.abort();
                return Err(e);
            }
        };
        let mut aggregator = aggregate::Aggregator::new(notify.interval(), notifier);
        aggregator.set_health(sup.health());
        let ended = sup.run(&mut aggregator).await;
        aggregator
            .finish(config.process.graceful_timeout.min(Duration::from_secs(10)))
            .await;
        ended.map(|()| true)
    });
    let code = match &ended {
        Ok(_) => exit::OK,
        Err(fatal) => fatal.code(),
    };
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
    crate::hooks::in_master::on_exit();
    if ended? {
        tracing::info!("Shutting down: Master");
    }
    Ok(())
}
