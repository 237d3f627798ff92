//! The `--preload` process (gunicorn's `preload_app`): forked from the master at
//! start-up, before the master runs a thread (later ones are started as a worker is,
//! by re-exec), it imports the app once, then forks every worker on the master's
//! request. Workers so start without an import and share the imported pages
//! copy-on-write.
//!
//! It stays single-threaded (no runtime, no thread of its own) so that forking it is
//! sound, and each fork follows Python's protocol (`PyOS_BeforeFork`, then
//! `PyOS_AfterFork_Parent`/`_Child`, so `os.register_at_fork` handlers run).
//!
//! A worker is made the master's child, not this process's: an intermediate process
//! forks it and exits at once, and the master (a child subreaper) adopts it, so the
//! master reaps and signals its workers as it does exec'd ones.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::prelude::PyAnyMethods;
use pyo3::{Py, PyAny, Python};

use crate::config::Config;
use crate::control::{self, FromZygote, ToZygote};
use crate::error::{Fatal, OrLog};
use crate::wsgi::interpreter;

/// What a forked worker takes from this process.
pub struct Forked {
    pub app: Py<PyAny>,
    pub control: UnixStream,
    pub id: u32,
    /// The master, which adopts the worker (see [`adopted_by`]).
    pub master: u32,
    /// The shared connection counts (`server/balance.rs`), when the master has them.
    pub balance: Option<OwnedFd>,
}

/// How long a forked worker waits to become the master's child.
const ADOPTION: Duration = Duration::from_secs(5);

/// Runs the `--preload` process on its control socket `ctl`: `Ok(None)` when the
/// master closed it (this process then exits), `Ok(Some(..))` in a forked worker,
/// which goes on as that worker.
pub fn main(config: &Arc<Config>, mut ctl: UnixStream) -> Result<Option<Forked>, Fatal> {
    let span = tracing::info_span!("preload");
    let _enter = span.enter();
    if let Some(name) = &config.hooks.proc_name {
        crate::hooks::proctitle::set(&format!("rwsgi: preload [{name}]"));
    }
    crate::worker::enter_process(config)?;
    interpreter::initialize(&config.python).map_err(Fatal::boot)?;
    set_master_signals(libc::SIG_IGN);
    let held = hold_collector();
    let app = Python::attach(|py| interpreter::load_app(py, &config.app)).map_err(Fatal::boot)?;
    tracing::debug!(pid = std::process::id(), "app imported; forking workers");
    warn_of_threads();
    let django = if config.python.read_django_settings {
        Python::attach(crate::wsgi::django::read)
    } else {
        Default::default()
    };
    freeze_heap(held);
    control::send_blocking(&mut ctl, &FromZygote::Ready { django })
        .or_log("cannot reach the master")?;
    loop {
        let (msg, fds) = match control::recv_with_fds::<ToZygote>(&mut ctl) {
            Ok(got) => got,
            // The master closed the channel (it stops, or it started a new import).
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(Fatal::logged(tracing::Level::ERROR, "control socket", e)),
        };
        let ToZygote::Fork { id, master } = msg;
        // The worker's control socket, then the balance memfd when there is one.
        let mut fds = fds.into_iter();
        let Some(worker_end) = fds.next() else {
            tracing::error!(worker = id, "Fork without a control socket");
            continue;
        };
        let balance = fds.next();
        match fork_worker() {
            Ok(Some((pid, middle))) => {
                drop(worker_end);
                let reply = FromZygote::Forked { pid };
                control::send_blocking(&mut ctl, &reply).or_log("cannot reach the master")?;
                // Reaped after the reply: its exit (a whole address space to tear
                // down) need not delay the worker's start.
                let _ = nix::sys::wait::waitpid(middle, None);
            }
            Ok(None) => {
                // The worker: nothing of this process's channel stays open in it.
                drop(ctl);
                return Ok(Some(Forked {
                    app,
                    control: UnixStream::from(worker_end),
                    id,
                    master,
                    balance,
                }));
            }
            Err(e) => {
                tracing::error!(worker = id, error = %e, "cannot fork a worker");
                drop(worker_end);
                // The master reads the failure as a closed reply; it logs and retries.
                return Err(Fatal::logged(tracing::Level::DEBUG, "fork failed", e));
            }
        }
    }
}

/// Forks a worker that ends up the child of `master`: `Ok(Some((worker pid,
/// intermediate process to reap)))` here, `Ok(None)` in the worker.
fn fork_worker() -> std::io::Result<Option<(u32, nix::unistd::Pid)>> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let forked = Python::attach(|_py| {
        // SAFETY: this process has one thread, which holds the GIL; the intermediate
        // process only forks, writes and exits (async-signal-safe calls).
        unsafe {
            pyo3::ffi::PyOS_BeforeFork();
            match libc::fork() {
                -1 => {
                    let e = std::io::Error::last_os_error();
                    pyo3::ffi::PyOS_AfterFork_Parent();
                    Err(e)
                }
                0 => {
                    let worker = libc::fork();
                    if worker == 0 {
                        pyo3::ffi::PyOS_AfterFork_Child();
                        set_master_signals(libc::SIG_DFL);
                        return Ok(None);
                    }
                    let said = if worker < 0 { -1i32 } else { worker };
                    let bytes = said.to_ne_bytes();
                    let fd = std::os::fd::AsRawFd::as_raw_fd(&write_end);
                    libc::write(fd, bytes.as_ptr().cast(), bytes.len());
                    libc::_exit(0);
                }
                middle => {
                    pyo3::ffi::PyOS_AfterFork_Parent();
                    Ok(Some(middle))
                }
            }
        }
    });
    match forked? {
        None => {
            drop(read_end);
            drop(write_end);
            Ok(None)
        }
        Some(middle) => {
            drop(write_end);
            let mut said = [0u8; 4];
            let middle = nix::unistd::Pid::from_raw(middle);
            let read = std::fs::File::from(read_end).read_exact(&mut said);
            match (read, i32::from_ne_bytes(said)) {
                (Ok(()), pid) if pid > 0 => Ok(Some((pid as u32, middle))),
                (read, _) => {
                    let _ = nix::sys::wait::waitpid(middle, None);
                    read?;
                    Err(std::io::Error::other("the second fork failed"))
                }
            }
        }
    }
}

/// The signals the master answers (gunicorn's set), where they have no handler yet,
/// get `action` in this process: ignored in the `--preload` process (after Python's
/// start, which then records them as default, as in an exec'd worker), which answers
/// only its channel (a stop that signals every process, as systemd's does, must not
/// look like its death); back to the default in a worker forked from it, which then
/// sets its own handlers as an exec'd worker does. A handler the app installed while
/// it was imported stays in both.
fn set_master_signals(action: libc::sighandler_t) {
    const SIGNALS: [libc::c_int; 8] = [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGTTIN,
        libc::SIGTTOU,
    ];
    let unhandled = if action == libc::SIG_IGN {
        libc::SIG_DFL
    } else {
        libc::SIG_IGN
    };
    for sig in SIGNALS {
        // SAFETY: `sigaction` only reads into a zeroed struct here, SIG_IGN and SIG_DFL
        // install no handler code; both calls are async-signal-safe (this may run
        // between fork and the child's first step).
        unsafe {
            let mut now: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut now) == 0
                && now.sa_sigaction == unhandled
            {
                libc::signal(sig, action);
            }
        }
    }
}

/// In a forked worker: waits until the intermediate process is gone and `master`
/// adopted this one, then asks to be killed with the master, as exec'd workers are.
/// Called after Ready, so that the intermediate's exit overlaps the master's answer.
pub fn adopted_by(master: u32) -> std::io::Result<()> {
    let since = Instant::now();
    while nix::unistd::getppid().as_raw() as u32 != master {
        if since.elapsed() > ADOPTION {
            return Err(std::io::Error::other(
                "the master did not adopt the worker (is it a child subreaper?)",
            ));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    // SAFETY: plain prctl on this process.
    if unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    } < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    if nix::unistd::getppid().as_raw() as u32 != master {
        return Err(std::io::Error::other("the master exited"));
    }
    Ok(())
}

/// The collector's thresholds before the import, held off while it runs.
type Thresholds = (i64, i64, i64);
/// The first generation's threshold while the app imports: no collection starts.
const HELD: i64 = 1 << 30;

/// CPython's advice for a process that forks without exec (the `gc.freeze` docs), first
/// half: no collection while the app imports. The objects it makes are kept, not
/// collected and moved between generations (a Django import runs about ten
/// collections: ~10% of its time), and no freed holes are left among them for a
/// worker to fill (copying the page). By threshold, not `gc.disable()`, so that an app
/// that disables the collector or sets its own thresholds at import keeps them.
fn hold_collector() -> Option<Thresholds> {
    let held = Python::attach(|py| -> pyo3::PyResult<Thresholds> {
        let gc = py.import("gc")?;
        let before: Thresholds = gc.call_method0("get_threshold")?.extract()?;
        gc.call_method1("set_threshold", (HELD, before.1, before.2))?;
        Ok(before)
    });
    held.map_err(|e| tracing::warn!(error = %e, "cannot hold the collector off during the import"))
        .ok()
}

/// Second half: the objects the import made are moved out of the collector's
/// generations (`gc.freeze()`, no collection first: the import's garbage is a few
/// dozen objects for Django, and a full collection would take ~14 ms of the start),
/// so that a collection in a worker never writes to them and their pages stay shared
/// with this process and the other workers instead of being copied into each. Then
/// the thresholds `held` come back, unless the app set its own while it imported.
fn freeze_heap(held: Option<Thresholds>) {
    let frozen = Python::attach(|py| -> pyo3::PyResult<()> {
        let gc = py.import("gc")?;
        gc.call_method0("freeze")?;
        if let Some(before) = held {
            let now: Thresholds = gc.call_method0("get_threshold")?.extract()?;
            if now.0 == HELD {
                gc.call_method1("set_threshold", before)?;
            }
        }
        // Counting walks the whole frozen list (~5 ms for a Django app): only when
        // the count is logged.
        if tracing::enabled!(tracing::Level::DEBUG) {
            let n: usize = gc.call_method0("get_freeze_count")?.extract()?;
            tracing::debug!(objects = n, "froze the imported objects (gc.freeze)");
        }
        Ok(())
    });
    if let Err(e) = frozen {
        tracing::warn!(error = %e, "gc.freeze failed; workers share less memory");
    }
}

/// A thread the app started while it was imported (an APM agent's exporter, a
/// scheduler) does not exist in the forked workers, and a lock it held stays held
/// there: gunicorn's `preload_app` has the same limit. Said once, with the count.
fn warn_of_threads() {
    let threads = std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count());
    if threads > 1 {
        tracing::warn!(
            "--preload: the app started {} thread(s) while it was imported; forked workers \
             do not have them (start them in a post_fork hook, or drop --preload)",
            threads - 1
        );
    }
}

/// The `--preload` process's control socket, when this process is one started by
/// exec; the variable is removed so that processes the app starts do not mistake
/// themselves for it.
pub fn env_fd() -> Option<UnixStream> {
    let fd = std::env::var(control::ZYGOTE_FD_ENV).ok()?.parse().ok()?;
    // SAFETY (edition 2021: safe fn): no other thread runs yet in this process.
    std::env::remove_var(control::ZYGOTE_FD_ENV);
    // SAFETY: the master passed this fd number for our end of the control socket.
    let ctl = unsafe { UnixStream::from_raw_fd(fd) };
    let _ = nix::fcntl::fcntl(
        &ctl,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Some(ctl)
}
