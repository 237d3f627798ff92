//! The master's side of `--preload` (the process itself is `crate::zygote`): start
//! it, wait for its import, ask it for each worker, stop it. The master becomes a
//! child subreaper, so that the workers it forks are the master's children.
//!
//! The first one is forked from the master at start-up ([`fork_now`], before the
//! master runs a thread or a runtime), so that it does not pay this binary's start a
//! second time; the next ones (after HUP, or when it died) are started as workers are.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use nix::unistd::Pid;

use super::spawn::{self, Process, Spawned};
use crate::control::{self, FromZygote, ToZygote, ZYGOTE_FD_ENV};

/// How long a fork may take before the process is deemed stuck.
const FORK_TIMEOUT: Duration = Duration::from_secs(10);

/// The running `--preload` process.
pub struct Zygote {
    pid: Pid,
    control: UnixStream,
    /// Set once it was reaped (its pid may then be another process's).
    status: Option<ExitStatus>,
}

/// Where [`fork_now`] returns: in the master, or in the `--preload` process with its
/// end of the control socket.
pub enum Forked {
    Master(Zygote),
    Preload(UnixStream),
}

/// Forks the `--preload` process from this process, which must have no other thread
/// (start-up, before the master's runtime). A Python config file may have started the
/// interpreter here: the fork then follows Python's protocol, as the workers' do.
pub fn fork_now() -> std::io::Result<Forked> {
    let (ours, theirs) = UnixStream::pair()?;
    let master = std::process::id();
    // SAFETY: Py_IsInitialized may be called at any time.
    let python = unsafe { pyo3::ffi::Py_IsInitialized() } != 0;
    let fork = || {
        // SAFETY: this process has one thread (see above).
        unsafe { libc::fork() }
    };
    let pid = if python {
        pyo3::Python::attach(|_py| {
            // SAFETY: the GIL is held, as PyOS_BeforeFork and PyOS_AfterFork_* need.
            unsafe {
                pyo3::ffi::PyOS_BeforeFork();
                let pid = fork();
                if pid == 0 {
                    pyo3::ffi::PyOS_AfterFork_Child();
                } else {
                    pyo3::ffi::PyOS_AfterFork_Parent();
                }
                pid
            }
        })
    } else {
        fork()
    };
    match pid {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            crate::master::early_signals::release_in_child();
            drop(ours);
            // As an exec'd worker: killed with the master (see `spawn::exec`).
            // SAFETY: plain prctl on this process.
            let set = unsafe {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                )
            };
            if set < 0 || nix::unistd::getppid().as_raw() as u32 != master {
                std::process::exit(crate::error::exit::RUNTIME);
            }
            Ok(Forked::Preload(theirs))
        }
        pid => {
            drop(theirs);
            tracing::debug!(pid, "Forked the --preload process");
            Ok(Forked::Master(Zygote {
                pid: Pid::from_raw(pid),
                control: ours,
                status: None,
            }))
        }
    }
}

/// Why the `--preload` process is not ready.
#[derive(Debug)]
pub enum NotReady {
    /// It exited (the import failed: its error is logged) with this status.
    Exited(Option<ExitStatus>),
    /// It did not finish importing in time, or the channel broke.
    Failed(std::io::Error),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Exited(Some(s)) => write!(f, "the --preload process exited ({s})"),
            NotReady::Exited(None) => write!(f, "the --preload process closed its channel"),
            NotReady::Failed(e) => write!(f, "the --preload process: {e}"),
        }
    }
}

/// Makes this process (the master) adopt orphaned descendants: a worker forked by the
/// `--preload` process becomes its child when the intermediate process exits.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: plain prctl on this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Zygote {
    /// Starts it (it imports the app at once); [`wait_ready`] waits for it.
    pub fn start(env: &[(String, String)]) -> std::io::Result<Zygote> {
        let (child, control) = spawn::exec(&[], ZYGOTE_FD_ENV, None, env)?;
        tracing::debug!(pid = child.id(), "Started the --preload process");
        // Waited for and killed by pid, as a forked one is.
        let pid = Pid::from_raw(child.id() as i32);
        Ok(Zygote {
            pid,
            control,
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// A second handle on the channel, for waiting on another thread.
    pub fn channel(&self) -> std::io::Result<UnixStream> {
        self.control.try_clone()
    }

    /// What the failed wait `e` means: the exit status if the process ended.
    pub fn why(&mut self, e: std::io::Error) -> NotReady {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            // It closed the channel because it is exiting.
            for _ in 0..200 {
                if let Some(status) = self.exited() {
                    return NotReady::Exited(Some(status));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            return NotReady::Exited(None);
        }
        NotReady::Failed(e)
    }

    /// Asks for worker `id`: a forked process, the master's child, with its control
    /// socket (and the shared connection counts, `balance_fd`).
    pub fn fork(&mut self, id: u32, balance_fd: Option<RawFd>) -> std::io::Result<Spawned> {
        let (ours, theirs) = UnixStream::pair()?;
        let ask = ToZygote::Fork {
            id,
            master: std::process::id(),
        };
        let fds: Vec<RawFd> = std::iter::once(theirs.as_raw_fd())
            .chain(balance_fd)
            .collect();
        control::send_with_fds(&self.control, &ask, &fds)?;
        drop(theirs);
        self.control.set_read_timeout(Some(FORK_TIMEOUT))?;
        match control::recv_with_fds::<FromZygote>(&mut self.control)? {
            (FromZygote::Forked { pid }, _) => Ok(Spawned {
                process: Process::Forked(Pid::from_raw(pid as i32)),
                control: ours,
            }),
            (other, _) => Err(std::io::Error::other(format!(
                "expected Forked from the --preload process, got {other:?}"
            ))),
        }
    }

    /// Its exit status, once it exited (it is reaped then).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            let mut raw = 0;
            // SAFETY: waitpid on our own child, with a valid pointer.
            let r = unsafe { libc::waitpid(self.pid.as_raw(), &mut raw, libc::WNOHANG) };
            if r == self.pid.as_raw() {
                self.status = Some(ExitStatus::from_raw(raw));
            }
        }
        self.status
    }
}

impl Drop for Zygote {
    /// Stopping it never touches the workers it forked (they are the master's).
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(self.pid, None);
        }
    }
}

/// Reads the `Ready` frame from the process's channel (blocking, at most `timeout`):
/// the Django project's QUEUE_TIME_TRACKER_* settings it found.
pub fn wait_ready(
    channel: &mut UnixStream,
    timeout: Duration,
) -> std::io::Result<BTreeMap<String, String>> {
    channel.set_read_timeout(Some(timeout))?;
    match control::recv_with_fds::<FromZygote>(channel)? {
        (FromZygote::Ready { django }, _) => Ok(django),
        (other, _) => Err(std::io::Error::other(format!(
            "expected Ready from the --preload process, got {other:?}"
        ))),
    }
}
