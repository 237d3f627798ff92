//! `--preload` in the supervisor: the process that imports the app once is started
//! before the first generation (while `/readyz` answers 503 and signals are heard),
//! asked for every worker, started again after HUP or when it died, and the
//! processes the master adopts as a subreaper are reaped.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Signals, Supervisor};
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

    /// Worker `id`, forked by the `--preload` process; that process is started first
    /// when there is none (after HUP, or it died): the master then waits for its
    /// import.
    pub(super) fn fork_worker(&mut self, id: u32) -> std::io::Result<Spawned> {
        if let Some(status) = self.zygote.as_mut().and_then(Zygote::exited) {
            tracing::warn!("the --preload process exited ({status}); starting it again");
            self.zygote = None;
        }
        if self.zygote.is_none() {
            // Idempotent; HUP may have turned --preload on.
            zygote::become_subreaper()?;
            let mut z = self.start_zygote()?;
            let timeout = self.import_timeout();
            let waited = z.wait_ready(timeout);
            // The loop stood still during the import: the running workers' heartbeats
            // wait in the channel, not missing.
            let now = Instant::now();
            for w in self.workers.values_mut() {
                w.last_beat = now;
            }
            waited.map_err(|why| std::io::Error::other(explain(why, timeout)))?;
            tracing::info!(pid = z.pid(), "Preloaded the app");
            self.zygote = Some(z);
        }
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
    }

    /// Notes a `--preload` process that died (the next worker starts another), and
    /// reaps processes the master adopted that are none of its workers (an app's
    /// orphaned subprocesses), so that none stays a zombie.
    pub(super) fn reap_preload(&mut self) {
        if let Some(status) = self.zygote.as_mut().and_then(Zygote::exited) {
            tracing::warn!(
                "the --preload process exited ({status}); the next worker starts it again"
            );
            self.zygote = None;
        }
        for _ in 0..64 {
            let Some(pid) = exited_child() else {
                return;
            };
            let ours = self.workers.values().any(|w| w.pid.as_raw() == pid)
                || self.zygote.as_ref().is_some_and(|z| z.pid() as i32 == pid);
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
