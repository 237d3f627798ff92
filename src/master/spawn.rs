//! Starting a worker process: re-execute this binary with the same arguments and
//! environment, plus the worker id and its end of a fresh control socket.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use crate::control::{CONTROL_FD_ENV, WORKER_ID_ENV};

/// A started worker process and the master's end of its control socket.
pub struct Spawned {
    pub child: Child,
    pub control: UnixStream,
}

/// Starts worker `id`. The child inherits stdout and stderr, so its log lines land
/// where the master's do, and the environment, with `env` (`-e/--env`, as the
/// configuration says now: HUP may have changed it) on top.
pub fn spawn(
    id: u32,
    balance_fd: Option<RawFd>,
    env: &[(String, String)],
) -> std::io::Result<Spawned> {
    let (ours, theirs) = UnixStream::pair()?;
    let exe = std::env::current_exe()?;
    let theirs_fd: OwnedFd = theirs.into();
    let fd = theirs_fd.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.args(crate::hooks::proctitle::args().iter().skip(1))
        .env(WORKER_ID_ENV, id.to_string())
        .env(CONTROL_FD_ENV, fd.to_string())
        .envs(env.iter().map(|(k, v)| (k, v)));
    if let Some(b) = balance_fd {
        cmd.env(crate::server::balance::BALANCE_FD_ENV, b.to_string());
    }
    let master = std::process::id();
    // SAFETY: only async-signal-safe calls (fcntl, prctl, getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // A worker must not outlive its master: nobody would supervise it, yet it
            // would keep accepting from the inherited socket. The control socket's
            // EOF stops a serving worker, but not one still importing the app, so
            // the kernel kills it when the master dies. (The signal follows the
            // thread that forks: the master's runtime is current-thread, so that
            // is its main thread, which lives as long as the master.)
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The master may have died before the prctl took effect.
            if libc::getppid() as u32 != master {
                return Err(std::io::Error::other("the master exited"));
            }
            // The control socket (and the balance memfd) are CLOEXEC like every fd
            // Rust opens; keep just these across exec.
            for keep in std::iter::once(fd).chain(balance_fd) {
                let flags = libc::fcntl(keep, libc::F_GETFD);
                if flags < 0 || libc::fcntl(keep, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(theirs_fd);
    Ok(Spawned {
        child,
        control: ours,
    })
}
