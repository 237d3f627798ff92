//! rwsgi scaling its own workers (`--min-workers`/`--max-workers`): the decision,
//! from each interval's report, with hysteresis and a cooldown. No I/O here: the
//! supervisor applies the decision (through the same overlap handover as TTIN/TTOU,
//! so a retiring worker drains only once the others serve) and supplies the memory
//! check ([`super::memory`]).
//!
//! Up: the p90 wait (the larger of `server_wait` and `queue_time`) is above
//! `--scale-up-wait`: requests are waiting for a Python thread, so one more worker.
//! Down: for 3 reports in a row the wait is under a quarter of that, and the
//! remaining workers would stay under `--scale-down-utilization` (utilization × n ÷
//! (n − 1)). The gap between the two thresholds is the hysteresis; the cooldown
//! lets a step show in the next reports before another is taken.

use std::time::Instant;

use super::health::Signals;
use super::memory::NoRoom;
use crate::config::lifecycle::ScalingConfig;

/// Quiet reports in a row before a worker retires.
const DOWN_STREAK: u32 = 3;

/// What to do with the pool after one report.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Hold,
    /// New target, and why (for the log line).
    Up(usize, String),
    Down(usize, String),
    /// Would scale up, but another worker does not fit in memory.
    MemoryBound(NoRoom),
}

#[derive(Debug)]
pub struct Scaler {
    cfg: ScalingConfig,
    /// The last report acted on (reports are counted in [`Signals::reports`]).
    seen: u64,
    last_step: Option<Instant>,
    quiet: u32,
}

impl Scaler {
    pub fn new(cfg: ScalingConfig) -> Scaler {
        Scaler {
            cfg,
            seen: 0,
            last_step: None,
            quiet: 0,
        }
    }

    /// Decides once per new report. `room` says whether one more worker fits in memory
    /// (asked only when scaling up).
    pub fn decide(
        &mut self,
        now: Instant,
        current: usize,
        s: Signals,
        room: impl FnOnce() -> Result<(), NoRoom>,
    ) -> Decision {
        if s.reports == self.seen {
            return Decision::Hold;
        }
        self.seen = s.reports;
        let wait = s.server_wait_p90.max(s.queue_time_p90);
        let up_wait = self.cfg.up_wait.as_secs_f64();
        if self
            .last_step
            .is_some_and(|t| now.duration_since(t) < self.cfg.cooldown)
        {
            self.quiet = 0;
            return Decision::Hold;
        }
        if wait > up_wait {
            self.quiet = 0;
            if current >= self.cfg.max {
                return Decision::Hold;
            }
            if let Err(why) = room() {
                return Decision::MemoryBound(why);
            }
            self.last_step = Some(now);
            return Decision::Up(
                current + 1,
                format!("p90 wait {wait:.3}s over --scale-up-wait {up_wait:.3}s"),
            );
        }
        let after = if current > 1 {
            s.utilization * current as f64 / (current - 1) as f64
        } else {
            f64::INFINITY
        };
        if current > self.cfg.min && wait < up_wait / 4.0 && after < self.cfg.down_utilization {
            self.quiet += 1;
            if self.quiet >= DOWN_STREAK {
                self.quiet = 0;
                self.last_step = Some(now);
                return Decision::Down(
                    current - 1,
                    format!(
                        "p90 wait {wait:.3}s, utilization {:.2} would be {after:.2} with one fewer",
                        s.utilization
                    ),
                );
            }
        } else {
            self.quiet = 0;
        }
        Decision::Hold
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn cfg() -> ScalingConfig {
        ScalingConfig {
            min: 1,
            max: 3,
            up_wait: Duration::from_millis(50),
            down_utilization: 0.5,
            cooldown: Duration::from_secs(10),
        }
    }

    fn report(n: u64, wait: f64, utilization: f64) -> Signals {
        Signals {
            server_wait_p90: wait,
            queue_time_p90: 0.0,
            utilization,
            reports: n,
        }
    }

    fn ok() -> Result<(), NoRoom> {
        Ok(())
    }

    #[test]
    fn scales_up_once_per_cooldown_and_stops_at_max() {
        let mut s = Scaler::new(cfg());
        let t0 = Instant::now();
        assert!(matches!(
            s.decide(t0, 1, report(1, 0.2, 1.0), ok),
            Decision::Up(2, _)
        ));
        assert_eq!(
            s.decide(t0, 2, report(1, 0.2, 1.0), ok),
            Decision::Hold,
            "same report"
        );
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(
            s.decide(t1, 2, report(2, 0.2, 1.0), ok),
            Decision::Hold,
            "cooldown"
        );
        let t2 = t0 + Duration::from_secs(11);
        assert!(matches!(
            s.decide(t2, 2, report(3, 0.2, 1.0), ok),
            Decision::Up(3, _)
        ));
        let t3 = t0 + Duration::from_secs(30);
        assert_eq!(
            s.decide(t3, 3, report(4, 0.2, 1.0), ok),
            Decision::Hold,
            "at max"
        );
    }

    #[test]
    fn memory_bounds_scaling_up() {
        let mut s = Scaler::new(cfg());
        let d = s.decide(Instant::now(), 1, report(1, 0.2, 1.0), || {
            Err(NoRoom::Unknown)
        });
        assert_eq!(d, Decision::MemoryBound(NoRoom::Unknown));
    }

    #[test]
    fn scales_down_after_three_quiet_reports_with_hysteresis() {
        let mut s = Scaler::new(cfg());
        let t = Instant::now();
        // Utilization 0.2 on 3 workers is 0.3 on 2: under 0.5.
        assert_eq!(s.decide(t, 3, report(1, 0.001, 0.2), ok), Decision::Hold);
        assert_eq!(s.decide(t, 3, report(2, 0.001, 0.2), ok), Decision::Hold);
        assert!(matches!(
            s.decide(t, 3, report(3, 0.001, 0.2), ok),
            Decision::Down(2, _)
        ));
        // A wait between a quarter of the threshold and the threshold holds (hysteresis).
        let mut s = Scaler::new(cfg());
        for n in 1..=5 {
            assert_eq!(s.decide(t, 3, report(n, 0.03, 0.2), ok), Decision::Hold);
        }
        // Busy workers hold too: 0.4 on 2 workers is 0.8 on 1.
        let mut s = Scaler::new(cfg());
        for n in 1..=5 {
            assert_eq!(s.decide(t, 2, report(n, 0.0, 0.4), ok), Decision::Hold);
        }
        // Never below min.
        let mut s = Scaler::new(cfg());
        for n in 1..=5 {
            assert_eq!(s.decide(t, 1, report(n, 0.0, 0.0), ok), Decision::Hold);
        }
    }
}
