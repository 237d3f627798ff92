//! Starting a worker process: re-execute this binary with the same arguments and
//! environment, plus the worker id and its end of a fresh control socket (the
//! `--preload` process is started the same way, `master/zygote.rs`); [`Process`]:
//! a worker either exec'd here or forked by that process.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};

use nix::unistd::Pid;

use crate::control::{CONTROL_FD_ENV, WORKER_ID_ENV};

/// A worker process as the master holds it: exec'd by the master, or forked by the
/// `--preload` process and adopted by the master (a child subreaper).
pub enum Process {
    Exec(Child),
    Forked(Pid),
}

impl Process {
    pub fn pid(&self) -> Pid {
        match self {
            Process::Exec(c) => Pid::from_raw(c.id() as i32),
            Process::Forked(p) => *p,
        }
    }

    /// The exit status once it exited (the process is then reaped).
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        match self {
            Process::Exec(c) => c.try_wait(),
            Process::Forked(pid) => match wait_pid(*pid, libc::WNOHANG)? {
                // Forked an instant ago: the master adopts it when the intermediate
                // process exits.
                None => Ok(None),
                Some(_) if not_ours_yet(*pid) => Ok(None),
                exited => Ok(exited),
            },
        }
    }

    /// Waits for it to exit (after a SIGKILL).
    pub fn wait(&mut self) {
        match self {
            Process::Exec(c) => {
                let _ = c.wait();
            }
            Process::Forked(pid) => {
                let _ = wait_pid(*pid, 0);
            }
        }
    }
}

/// Whether `pid` runs (not a zombie) without being this process's child: a worker
/// the `--preload` process forked that the master has not adopted yet.
fn not_ours_yet(pid: Pid) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Fields after the command's closing parenthesis: state, ppid, ...
    let mut rest = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace();
    let (state, ppid) = (rest.next(), rest.next());
    state != Some("Z") && ppid.and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id())
}

/// `waitpid` on a child that is not a `std::process::Child`. A pid that is not (or no
/// longer) our child reads as exited with code 1: nothing will ever report it.
fn wait_pid(pid: Pid, flags: i32) -> std::io::Result<Option<ExitStatus>> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid with a valid out pointer.
        let got = unsafe { libc::waitpid(pid.as_raw(), &mut status, flags) };
        if got == 0 {
            return Ok(None);
        }
        if got > 0 {
            return Ok(Some(ExitStatus::from_raw(status)));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ECHILD) => return Ok(Some(ExitStatus::from_raw(1 << 8))),
            _ => return Err(e),
        }
    }
}

/// A started worker process and the master's end of its control socket.
pub struct Spawned {
    pub process: Process,
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
    let (child, control) = exec(
        &[(WORKER_ID_ENV, id.to_string())],
        CONTROL_FD_ENV,
        balance_fd,
        env,
    )?;
    Ok(Spawned {
        process: Process::Exec(child),
        control,
    })
}

/// Starts a process of this binary in the role the `role` variables and the
/// control socket's variable `fd_env` give it (a worker, or the `--preload` process),
/// and returns it with the master's end of its control socket.
pub fn exec(
    role: &[(&str, String)],
    fd_env: &str,
    balance_fd: Option<RawFd>,
    env: &[(String, String)],
) -> std::io::Result<(Child, UnixStream)> {
    let (ours, theirs) = UnixStream::pair()?;
    let exe = std::env::current_exe()?;
    let theirs_fd: OwnedFd = theirs.into();
    let fd = theirs_fd.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.args(crate::hooks::proctitle::args().iter().skip(1))
        .envs(role.iter().map(|(k, v)| (k, v)))
        .env(fd_env, fd.to_string())
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
    Ok((child, ours))
}
