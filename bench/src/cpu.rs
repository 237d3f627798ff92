//! CPU time from getrusage(2): how much CPU a load generator spends per request is the
//! noise-free way to compare it with wrk on a machine shared with other work.

fn rusage_s(who: i32) -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU seconds (user + system) used so far by this process, all threads.
pub fn self_cpu_s() -> f64 {
    rusage_s(libc::RUSAGE_SELF)
}

/// CPU seconds used so far by children that have exited and been waited for.
pub fn children_cpu_s() -> f64 {
    rusage_s(libc::RUSAGE_CHILDREN)
}

/// Clock ticks per second of /proc's CPU counters.
fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Busy CPU seconds of the whole machine since boot, from the first line of
/// /proc/stat: user, nice, system and steal. Interrupt and softirq time are left out:
/// the kernel charges them to no process, and on loopback most of it is the
/// benchmark's own network traffic, which would otherwise look like someone else's.
pub fn machine_busy_s() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    parse_busy_ticks(&text) / clk_tck()
}

fn parse_busy_ticks(stat: &str) -> f64 {
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    // user nice system idle iowait irq softirq steal (guest is inside user already).
    line.split_whitespace()
        .skip(1)
        .take(8)
        .enumerate()
        .filter(|(i, _)| matches!(i, 0 | 1 | 2 | 7))
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

/// CPU seconds (user + system) used so far by one process, from /proc/PID/stat.
pub fn process_cpu_s(pid: i32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    // After the command name: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / clk_tck()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_busy_ticks_without_idle_iowait_and_interrupts() {
        let stat = "cpu  10 1 5 1000 7 2 3 4 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        assert_eq!(parse_busy_ticks(stat), 20.0);
        assert_eq!(parse_busy_ticks("garbage"), 0.0);
    }

    /// Spins until this process has used `secs` more CPU (or 10 s pass, on a machine
    /// too busy to give it any), and says whether it got there.
    fn spin(secs: f64) -> bool {
        let before = self_cpu_s();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_secs(10) {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            if self_cpu_s() - before >= secs {
                return true;
            }
        }
        false
    }

    #[test]
    fn busy_work_shows_up_everywhere() {
        let pid = std::process::id() as i32;
        let (proc0, machine0) = (process_cpu_s(pid), machine_busy_s());
        assert!(spin(0.1), "getrusage never saw the CPU time");
        // /proc counts in clock ticks (10 ms): allow for one tick of rounding.
        assert!(process_cpu_s(pid) - proc0 > 0.08);
        assert!(machine_busy_s() - machine0 > 0.08);
    }
}
