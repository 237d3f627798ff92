//! HUP: the master reads its configuration again (the command line,
//! `GUNICORN_CMD_ARGS`, `RWSGI_*` and the config file, a Python one evaluated again),
//! as gunicorn's arbiter does, and replaces the workers gracefully with ones that
//! start from it (each worker reads the configuration itself when it starts, so
//! `--threads`, limits, TLS files and the worker hooks follow on their own).
//!
//! What the master applies itself: the worker count (and `--min/--max-workers`),
//! `--timeout`, `--graceful-timeout`, `-e/--env` for the new workers, `-n/--name`,
//! and the config file's master hooks (`nworkers_changed` and `on_reload` run from
//! the file as it is now). What needs a restart: the listening sockets (a changed
//! `--bind` is refused with one line and the sockets kept), the sinks (`--notify`
//! and their options), the log settings and the pid file. A configuration that does
//! not read (a file that raises, a bad value) changes nothing: one ERROR line, and
//! the running workers stay (new ones would not boot).

use std::sync::Arc;

use super::Supervisor;
use crate::hooks::in_master as hooks;

impl Supervisor {
    pub(super) fn reload(&mut self) {
        if self.shutdown.is_some() {
            return;
        }
        tracing::info!("Handling signal: hup");
        let new = match crate::config::reread(crate::hooks::proctitle::args().to_vec()) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(
                    "HUP: the configuration did not read, so nothing changes and the \
                     workers keep running:\n{e}"
                );
                return;
            }
        };
        if new.server.binds != self.config.server.binds {
            let list = |c: &crate::config::Config| {
                let all: Vec<String> = c.server.binds.iter().map(|b| b.to_string()).collect();
                all.join(", ")
            };
            tracing::warn!(
                "HUP: --bind is now {}; rwsgi keeps listening on {} (restart to listen elsewhere)",
                list(&new),
                list(&self.config)
            );
        }
        if let Err(e) = hooks::reload(&new) {
            tracing::error!("HUP: the config file's hooks did not load; the old ones stay: {e}");
        }
        if let Some(name) = &new.hooks.proc_name {
            crate::hooks::proctitle::set(&format!("rwsgi: master [{name}]"));
        }
        let before = self.target;
        self.target = new.process.workers;
        self.scaler = new
            .lifecycle
            .scaling
            .clone()
            .map(crate::master::scaler::Scaler::new);
        self.config = Arc::new(new);
        if self.target != before {
            hooks::nworkers_changed(self.target, Some(before));
        }
        tracing::info!(
            workers = self.target,
            "starting new workers with the configuration read again and a fresh import"
        );
        hooks::on_reload();
        // A fresh start: early deaths before it (a broken deploy, now fixed) do not
        // hold the new workers back.
        self.early_deaths.clear();
        self.backoff = std::time::Duration::ZERO;
        self.next_spawn = std::time::Instant::now();
        self.preload_again();
        for w in self.workers.values_mut() {
            w.retiring = true;
        }
    }
}
