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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_work_shows_up_as_cpu_time() {
        let before = self_cpu_s();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(self_cpu_s() - before > 0.02);
    }
}
