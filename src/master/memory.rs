//! Whether one more worker fits in memory: the scaler's bound.
//!
//! A new worker costs about what the largest running one holds (same app, same
//! imports). What is left is the cgroup's limit minus its usage (cgroup v2, as a
//! container sees it) or, without a limit, the kernel's `MemAvailable`. One more
//! worker is allowed while it leaves a worker's worth spare, so a traffic spike that
//! grows the workers cannot push the container into the OOM killer.

use std::fs;

/// The cgroup v2 files of this process's cgroup, as a container mounts them.
const CGROUP_MAX: &str = "/sys/fs/cgroup/memory.max";
const CGROUP_CURRENT: &str = "/sys/fs/cgroup/memory.current";

/// Why one more worker is not started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoom {
    /// Neither the cgroup's files nor `/proc/meminfo` could be read.
    Unknown,
    /// `left` bytes are free and a worker holds `worker`: less than two workers' worth.
    Full { left: u64, worker: u64 },
}

impl std::fmt::Display for NoRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoRoom::Unknown => f.write_str("cannot read available memory"),
            NoRoom::Full { left, worker } => write!(
                f,
                "{} MiB left, a worker holds {} MiB: no room for another",
                left >> 20,
                worker >> 20
            ),
        }
    }
}

impl std::error::Error for NoRoom {}

/// `Ok` if a worker as large as the largest of `pids` fits twice into what is left.
pub fn room_for_one_more(pids: &[i32]) -> Result<(), NoRoom> {
    let worker = pids.iter().filter_map(|&p| rss_bytes(p)).max().unwrap_or(0);
    let left = available_bytes().ok_or(NoRoom::Unknown)?;
    if left >= worker.saturating_mul(2) {
        Ok(())
    } else {
        Err(NoRoom::Full { left, worker })
    }
}

/// Resident memory of `pid`, from `/proc/PID/statm` (pages × page size).
fn rss_bytes(pid: i32) -> Option<u64> {
    let statm = fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(4096)
}

/// The cgroup's headroom if it has a limit, else `MemAvailable`.
fn available_bytes() -> Option<u64> {
    let limit = fs::read_to_string(CGROUP_MAX)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    if let Some(limit) = limit {
        let used: u64 = fs::read_to_string(CGROUP_CURRENT)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        return Some(limit.saturating_sub(used));
    }
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_available(&meminfo)
}

fn meminfo_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_available() {
        let text = "MemTotal:  16000000 kB\nMemFree: 100 kB\nMemAvailable:   8000000 kB\n";
        assert_eq!(meminfo_available(text), Some(8_000_000 * 1024));
        assert_eq!(meminfo_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn this_machine_has_room_for_this_process() {
        let me = std::process::id() as i32;
        assert!(rss_bytes(me).is_some_and(|b| b > 0));
        room_for_one_more(&[me]).expect("a test process fits twice");
    }
}
