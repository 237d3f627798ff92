//! Starting a server, knowing when it is ready, measuring its memory, stopping it.
//!
//! Each server runs in its own process group, so that its workers (gunicorn's,
//! granian's, bjoern's forks, rwsgi's) can be measured and stopped together, by that
//! group's id only.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::http_get;

/// A running server.
pub struct Running {
    child: Child,
    /// The process group: the server's own pid, since it leads its group.
    pgid: i32,
    /// Where its stdout and stderr go.
    log: PathBuf,
}

/// A free TCP port on 127.0.0.1 (the kernel picks it; it is released at once).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

impl Running {
    /// Starts `cmd` in a new process group, output to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> Result<Running> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        let pgid = i32::try_from(child.id()).context("pid out of range")?;
        Ok(Running {
            child,
            pgid,
            log: log.to_path_buf(),
        })
    }

    /// Waits until `GET /` on `addr` gets any HTTP answer, the server exits, or
    /// `timeout` passes.
    pub fn wait_ready(&mut self, addr: SocketAddr, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("exited with {status} before serving; {}", self.log_tail());
            }
            if http_get::get(addr, "/", Duration::from_secs(2)).is_ok() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!("not ready after {:?}; {}", timeout, self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process group id, for [`group_rss`].
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// The last lines of the server's output, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(8).collect();
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        format!("log {}:\n{}", self.log.display(), tail.join("\n"))
    }

    /// SIGTERM to the group, SIGKILL after `grace`; returns once the group is gone, so
    /// the next server starts on an idle machine.
    pub fn stop(mut self, grace: Duration) {
        signal_group(self.pgid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            let _ = self.child.try_wait();
            if group_pids(self.pgid).is_empty() {
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal_group(self.pgid, libc::SIGKILL);
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !group_pids(self.pgid).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn signal_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals exactly the group we created.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Live (non-zombie) processes of a process group.
pub fn group_pids(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| parse_stat(&s))
                .is_some_and(|(state, pgrp)| pgrp == pgid && state != 'Z')
        })
        .collect()
}

/// State and process group from /proc/PID/stat. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last ')'.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// CPU seconds used so far by the live processes of a group.
pub fn group_cpu_s(pgid: i32) -> f64 {
    group_pids(pgid)
        .into_iter()
        .map(crate::cpu::process_cpu_s)
        .sum()
}

/// Resident memory of all processes in a group, bytes.
pub fn group_rss(pgid: i32) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    group_pids(pgid)
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/statm")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * page)
        .sum()
}

/// Proportional set size of every process in the group, bytes: each shared page
/// counted once across the processes that map it (what the machine holds for the
/// server, where RSS counts a page once per process).
pub fn group_pss(pgid: i32) -> u64 {
    group_pids(pgid)
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|s| pss_kib(&s))
        .map(|kib| kib * 1024)
        .sum()
}

/// The `Pss:` line of /proc/PID/smaps_rollup, KiB.
fn pss_kib(rollup: &str) -> Option<u64> {
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pss_from_smaps_rollup() {
        let rollup = "55d0-7ffd ---p 00000000 00:00 0  [rollup]\nRss:  46320 kB\nPss:  30512 kB\nPss_Anon: 28000 kB\n";
        assert_eq!(pss_kib(rollup), Some(30512));
        assert_eq!(pss_kib("Rss: 1 kB\n"), None);
    }

    #[test]
    fn reads_stat_with_odd_command_names() {
        let s = "123 (a (b) c) S 1 4567 4567 0 -1 4194560 100";
        assert_eq!(parse_stat(s), Some(('S', 4567)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn measures_and_stops_a_process_group() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & sleep 30 & wait"]);
        let dir = std::env::temp_dir().join(format!("rwsgi-bench-test-{}", std::process::id()));
        let r = Running::spawn(cmd, &dir.join("log")).unwrap();
        let pgid = r.pgid();
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_pids(pgid).len() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(group_pids(pgid).len(), 3);
        assert!(group_rss(pgid) > 0);
        r.stop(Duration::from_secs(5));
        assert!(group_pids(pgid).is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
