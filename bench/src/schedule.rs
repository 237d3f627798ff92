//! The open-model schedule: when each request is due, independent of responses.
//!
//! A closed-loop generator slows down when the server does, so it never sees a queue
//! build up (coordinated omission). In the open model request `k` is due at a fixed
//! time whatever happened before, and its latency is measured from that due time. The
//! schedule is piecewise constant, so one type serves both a fixed rate and the
//! autoscaling ramp.

use std::sync::Arc;
use std::time::Duration;

/// One stretch of constant offered load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Requests per second offered during the step (0 = a pause).
    pub rate: f64,
    /// How long the step lasts.
    pub duration: Duration,
}

/// A sequence of steps; request `k` (counting from 0 over the whole schedule) is due at
/// [`Schedule::due`]`(k)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    steps: Arc<[Step]>,
}

impl Schedule {
    /// A single step at `rate` req/s for `duration`.
    pub fn constant(rate: f64, duration: Duration) -> Self {
        Self::steps(vec![Step { rate, duration }])
    }

    /// Steps played one after the other. Negative or non-finite rates count as 0.
    pub fn steps(steps: Vec<Step>) -> Self {
        let steps: Vec<Step> = steps
            .into_iter()
            .map(|s| Step {
                rate: if s.rate.is_finite() && s.rate > 0.0 {
                    s.rate
                } else {
                    0.0
                },
                duration: s.duration,
            })
            .collect();
        Self {
            steps: steps.into(),
        }
    }

    /// The steps, as given.
    #[cfg(test)]
    pub fn step_list(&self) -> &[Step] {
        &self.steps
    }

    /// Length of the whole schedule.
    pub fn total_duration(&self) -> Duration {
        self.steps.iter().map(|s| s.duration).sum()
    }

    /// Number of requests the schedule offers in total (rounded down).
    pub fn total_requests(&self) -> u64 {
        self.steps
            .iter()
            .map(|s| s.rate * s.duration.as_secs_f64())
            .sum::<f64>()
            .floor() as u64
    }

    /// Offset from the start at which request `k` is due, or `None` past the end.
    #[cfg(test)]
    pub fn due(&self, k: u64) -> Option<Duration> {
        self.lane(0, 1).skip_to(k)
    }

    /// A cursor over the requests `lane, lane + lanes, lane + 2·lanes, …`: each
    /// generator thread walks its own lane, so threads share no counter and together
    /// offer exactly the schedule.
    pub fn lane(&self, lane: u64, lanes: u64) -> Cursor {
        Cursor {
            steps: Arc::clone(&self.steps),
            step: 0,
            step_start: 0.0,
            before: 0.0,
            next: lane,
            stride: lanes.max(1),
        }
    }
}

/// Walks one lane of a [`Schedule`] in order; amortised O(1) per request.
#[derive(Debug, Clone)]
pub struct Cursor {
    steps: Arc<[Step]>,
    /// Index of the step that holds `next` (or past the end).
    step: usize,
    /// Start of that step, seconds from the schedule's start.
    step_start: f64,
    /// Requests offered by all steps before it.
    before: f64,
    /// Global index of the next request of this lane.
    next: u64,
    /// Number of lanes: the distance between two requests of this lane.
    stride: u64,
}

impl Cursor {
    #[cfg(test)]
    fn skip_to(mut self, k: u64) -> Option<Duration> {
        self.next = k;
        self.next_due()
    }

    /// Offset from the start at which this lane's next request is due, or `None` when
    /// the schedule is over.
    pub fn next_due(&mut self) -> Option<Duration> {
        let k = self.next as f64;
        while let Some(step) = self.steps.get(self.step) {
            let secs = step.duration.as_secs_f64();
            let count = step.rate * secs;
            if k < self.before + count {
                let offset = self.step_start + (k - self.before) / step.rate;
                self.next += self.stride;
                return Some(Duration::from_secs_f64(offset.min(self.step_start + secs)));
            }
            self.before += count;
            self.step_start += secs;
            self.step += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn constant_rate_spaces_requests_evenly() {
        let s = Schedule::constant(100.0, secs(1.0));
        assert_eq!(s.due(0), Some(secs(0.0)));
        assert_eq!(s.due(1), Some(secs(0.01)));
        assert_eq!(s.due(99), Some(secs(0.99)));
        assert_eq!(s.due(100), None);
        assert_eq!(s.total_requests(), 100);
    }

    #[test]
    fn steps_change_the_spacing() {
        let s = Schedule::steps(vec![
            Step {
                rate: 10.0,
                duration: secs(1.0),
            },
            Step {
                rate: 0.0,
                duration: secs(2.0),
            },
            Step {
                rate: 100.0,
                duration: secs(1.0),
            },
        ]);
        assert_eq!(s.total_duration(), secs(4.0));
        assert_eq!(s.total_requests(), 110);
        assert_eq!(s.due(9), Some(secs(0.9)));
        // The pause offers nothing: request 10 is the first of the last step.
        assert_eq!(s.due(10), Some(secs(3.0)));
        let d = s.due(11).unwrap().as_secs_f64();
        assert!((d - 3.01).abs() < 1e-9, "{d}");
        assert_eq!(s.due(110), None);
    }

    #[test]
    fn lanes_partition_the_schedule() {
        let s = Schedule::steps(vec![
            Step {
                rate: 7.0,
                duration: secs(3.0),
            },
            Step {
                rate: 13.0,
                duration: secs(2.0),
            },
        ]);
        let mut all: Vec<Duration> = Vec::new();
        for lane in 0..3 {
            let mut c = s.lane(lane, 3);
            let mut last = Duration::ZERO;
            while let Some(d) = c.next_due() {
                assert!(d >= last, "a lane must be in order");
                last = d;
                all.push(d);
            }
        }
        all.sort();
        let single: Vec<Duration> = (0..).map_while(|k| s.due(k)).collect();
        assert_eq!(all, single);
        assert_eq!(single.len() as u64, s.total_requests());
    }

    #[test]
    fn bad_rates_count_as_pauses() {
        let s = Schedule::steps(vec![
            Step {
                rate: f64::NAN,
                duration: secs(1.0),
            },
            Step {
                rate: -5.0,
                duration: secs(1.0),
            },
            Step {
                rate: 1.0,
                duration: secs(1.0),
            },
        ]);
        assert_eq!(s.due(0), Some(secs(2.0)));
        assert_eq!(s.due(1), None);
    }
}
