//! The master's side of `--preload` (the process itself is `crate::zygote`): start
//! it, wait for its import, ask it for each worker, stop it. The master becomes a
//! child subreaper, so that the workers it forks are the master's children.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, ExitStatus};
use std::time::Duration;

use nix::unistd::Pid;

use super::spawn::{self, Process, Spawned};
use crate::control::{self, FromZygote, ToZygote, ZYGOTE_FD_ENV};

/// How long a fork may take before the process is deemed stuck.
const FORK_TIMEOUT: Duration = Duration::from_secs(10);

/// The running `--preload` process.
pub struct Zygote {
    child: Child,
    control: UnixStream,
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
    /// Starts it (it imports the app at once); [`Zygote::wait_ready`] waits for it.
    pub fn start(balance_fd: Option<RawFd>, env: &[(String, String)]) -> std::io::Result<Zygote> {
        let (child, control) = spawn::exec(&[], ZYGOTE_FD_ENV, balance_fd, env)?;
        tracing::debug!(pid = child.id(), "Started the --preload process");
        Ok(Zygote { child, control })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A second handle on the channel, for waiting on another thread.
    pub fn channel(&self) -> std::io::Result<UnixStream> {
        self.control.try_clone()
    }

    /// Blocks until the app imported (at most `timeout`).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), NotReady> {
        let mut channel = self.channel().map_err(NotReady::Failed)?;
        match wait_ready(&mut channel, timeout) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.why(e)),
        }
    }

    /// What the failed wait `e` means: the exit status if the process ended.
    pub fn why(&mut self, e: std::io::Error) -> NotReady {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            // It closed the channel because it is exiting.
            for _ in 0..200 {
                if let Ok(Some(status)) = self.child.try_wait() {
                    return NotReady::Exited(Some(status));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            return NotReady::Exited(None);
        }
        NotReady::Failed(e)
    }

    /// Asks for worker `id`: a forked process, the master's child, with its control
    /// socket.
    pub fn fork(&mut self, id: u32) -> std::io::Result<Spawned> {
        let (ours, theirs) = UnixStream::pair()?;
        let ask = ToZygote::Fork {
            id,
            master: std::process::id(),
        };
        control::send_with_fds(&self.control, &ask, &[theirs.as_raw_fd()])?;
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

    /// Its exit status, once it exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Zygote {
    /// Stopping it never touches the workers it forked (they are the master's).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
