//! `--preload` in the supervisor: the process that imports the app once is started
//! before the first generation (while `/readyz` answers 503 and signals are heard),
//! asked for every worker, started again after HUP or when it died (the loop goes on
//! while it imports: the running workers serve, signals and reports are heard), and
//! the processes the master adopts as a subreaper are reaped.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Event, Signals, Supervisor};
use crate::error::Fatal;
use crate::master::exit;
use crate::master::spawn::Spawned;
use crate::master::zygote::{self, NotReady, Zygote};

impl Supervisor {
    /// How long an import may take (as a booting worker's).
    fn import_timeout(&self) -> Duration {
        self.config.process.timeout.max(Duration::from_secs(30))
    }

    fn start_zygote(&self) -> std::io::Result<Zygote> {
        Zygote::start(&self.config.process.env)
    }

    /// The `--preload` process forked at start-up (`zygote::fork_now`), which
    /// [`Supervisor::preload`] then waits for instead of starting one.
    pub fn adopt_preload(&mut self, z: Zygote) {
        self.zygote = Some(z);
    }

    /// Starts the `--preload` process and waits for its import: `Ok(Some(..))` with
    /// the Django QUEUE_TIME_TRACKER_* settings it read, `Ok(None)` when a signal
    /// stopped the master first, `Err` when the import failed (nothing was bound).
    pub(super) async fn preload(&mut self) -> Result<Option<BTreeMap<String, String>>, Fatal> {
        zygote::become_subreaper()
            .map_err(|e| Fatal::runtime(format_args!("--preload: cannot adopt workers: {e}")))?;
        let mut signals = match self.signals.take() {
            Some(s) => s,
            None => Signals::install()
                .map_err(|e| Fatal::runtime(format_args!("cannot install signal handlers: {e}")))?,
        };
        let mut z = match self.zygote.take() {
            Some(forked) => forked,
            None => self.start_zygote().map_err(|e| {
                Fatal::runtime(format_args!("cannot start the --preload process: {e}"))
            })?,
        };
        let timeout = self.import_timeout();
        let mut channel = z
            .channel()
            .map_err(|e| Fatal::runtime(format_args!("--preload: {e}")))?;
        let wait = tokio::task::spawn_blocking(move || zygote::wait_ready(&mut channel, timeout));
        let waited = tokio::select! {
            r = wait => Some(r),
            _ = signals.term.recv() => None,
            _ = signals.int.recv() => None,
            _ = signals.quit.recv() => None,
        };
        self.signals = Some(signals);
        let waited = match waited {
            None => {
                tracing::info!("stopped while the --preload process imported the app");
                return Ok(None);
            }
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(std::io::Error::other(e)),
        };
        let django = waited.map_err(|e| Fatal::boot(explain(z.why(e), timeout)))?;
        tracing::info!(pid = z.pid(), "Preloaded the app");
        self.zygote = Some(z);
        self.settings_seen = true;
        Ok(Some(django))
    }

    /// Whether the `--preload` process is ready to fork a worker. When there is none
    /// (after HUP, or it died) this starts one, and its import is waited for on a
    /// blocking thread: [`Supervisor::preloaded`] hears the end.
    pub(super) fn preload_ready(&mut self) -> bool {
        if let Some(status) = self.zygote.as_mut().and_then(Zygote::exited) {
            tracing::warn!("the --preload process exited ({status}); starting it again");
            self.zygote = None;
        }
        if self.zygote.is_some() {
            return true;
        }
        if self.importing.is_none() {
            if let Err(e) = self.start_import() {
                tracing::error!(error = %e, "cannot start the --preload process");
                self.note_early_death();
            }
        }
        false
    }

    fn start_import(&mut self) -> std::io::Result<()> {
        // Idempotent; HUP may have turned --preload on.
        zygote::become_subreaper()?;
        let z = self.start_zygote()?;
        let mut channel = z.channel()?;
        self.imports += 1;
        let n = self.imports;
        let timeout = self.import_timeout();
        let events = self.events_tx.clone();
        tokio::task::spawn_blocking(move || {
            let imported = zygote::wait_ready(&mut channel, timeout).map(drop);
            let _ = events.send(Event::Preloaded(n, imported));
        });
        self.importing = Some((n, z));
        Ok(())
    }

    /// Import `n` ended: its process forks the next workers, or (it failed) counts as
    /// an early death, and the next spawn starts another. An import that HUP made
    /// stale is ignored (its process was stopped).
    pub(super) fn preloaded(&mut self, n: u64, imported: std::io::Result<()>) {
        let mut z = match self.importing.take() {
            Some((current, z)) if current == n => z,
            other => {
                self.importing = other;
                return;
            }
        };
        match imported {
            Ok(()) => {
                tracing::info!(pid = z.pid(), "Preloaded the app");
                self.zygote = Some(z);
            }
            Err(e) => {
                let why = explain(z.why(e), self.import_timeout());
                tracing::error!("{why}; the running workers stay");
                self.note_early_death();
            }
        }
    }

    /// Worker `id`, forked by the `--preload` process ([`Supervisor::preload_ready`]).
    pub(super) fn fork_worker(&mut self, id: u32) -> std::io::Result<Spawned> {
        let balance_fd = self.balance.as_ref().map(|b| b.fd());
        let Some(z) = self.zygote.as_mut() else {
            return Err(std::io::Error::other("no --preload process"));
        };
        z.fork(id, balance_fd).inspect_err(|_| self.zygote = None)
    }

    /// HUP: the next worker is forked from a fresh import of the app (with the
    /// configuration and `-e/--env` as they are now).
    pub(super) fn preload_again(&mut self) {
        self.zygote = None;
        self.importing = None;
    }

    /// Notes a `--preload` process that died (the next worker starts another), and
    /// reaps processes the master adopted that are none of its workers (an app's
    /// orphaned subprocesses), so that none stays a zombie.
    pub(super) fn reap_preload(&mut self) {
        if let Some(status) = self.zygote.as_mut().and_then(Zygote::exited) {
            if self.shutdown.is_some() {
                // It ignores the master's signals; whatever else ended it now (a
                // SIGKILL to the whole group) costs nothing: no worker is forked any more.
                tracing::debug!("the --preload process exited ({status}) during the shutdown");
            } else {
                tracing::warn!(
                    "the --preload process exited ({status}); the next worker starts it again"
                );
            }
            self.zygote = None;
        }
        for _ in 0..64 {
            let Some(pid) = exited_child() else {
                return;
            };
            let ours = self.workers.values().any(|w| w.pid.as_raw() == pid)
                || self.zygote.as_ref().is_some_and(|z| z.pid() as i32 == pid)
                || self
                    .importing
                    .as_ref()
                    .is_some_and(|(_, z)| z.pid() as i32 == pid);
            if ours {
                // Reaped by its owner on the next pass.
                return;
            }
            let mut status = 0;
            // SAFETY: waitpid on a pid that waitid just reported as an exited child.
            unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            tracing::debug!(pid, "reaped an adopted process");
        }
    }
}

/// An exited child, left unreaped (`WNOWAIT`), if there is one.
fn exited_child() -> Option<i32> {
    // SAFETY: waitid with a zeroed out struct, as the man page asks.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: valid pointer to `info`.
    let r = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, flags) };
    if r < 0 {
        return None;
    }
    // SAFETY: si_pid is valid for SIGCHLD infos; zero when no child had exited.
    let pid = unsafe { info.si_pid() };
    (pid > 0).then_some(pid)
}

/// The message for a `--preload` process that did not become ready.
fn explain(why: NotReady, timeout: Duration) -> String {
    match why {
        NotReady::Failed(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            format!(
                "the --preload process did not import the app within {}s (--timeout)",
                timeout.as_secs()
            )
        }
        NotReady::Exited(Some(s)) if s.code() == Some(exit::BOOT) => {
            "the app did not import in the --preload process; see the error above".into()
        }
        why => why.to_string(),
    }
}
