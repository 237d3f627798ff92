//! The controller: the HPA's rule, `desired = ceil(current × metric ÷ target)`, run
//! every `period` against one rwsgi, changing its workers with TTIN/TTOU.
//!
//! As the HPA does: no change within a 10% tolerance of the target, and a scale-down
//! only to the highest desired count of the last few periods (its stabilization
//! window, compressed like everything else in this bench). The metric is either
//! rwsgi's queue time (the mean of the last interval, from `/queue-time.json`, as
//! the shipped KEDA metrics-api trigger reads it) or the workers' CPU utilization
//! (CPU seconds per second per worker, as the HPA's resource metric with one core
//! requested per worker).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// What the controller scales on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Policy {
    /// rwsgi's mean queue time of the last interval, seconds.
    QueueTime,
    /// Mean CPU utilization of the workers, 0..1 per worker.
    Cpu,
    /// What the shipped KEDA ScaledObject does: the larger of the queue-time rule and
    /// the rule on rwsgi's utilization (target [`UTILIZATION_TARGET`]).
    QueueTimeAndUtilization,
}

/// The utilization target of the shipped ScaledObject's second trigger.
pub const UTILIZATION_TARGET: f64 = 0.7;

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::QueueTime => "queue time",
            Policy::Cpu => "CPU",
            Policy::QueueTimeAndUtilization => "queue time + utilization",
        }
    }
}

/// One control period.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Step {
    /// Seconds since the load started.
    pub t: f64,
    pub metric: f64,
    /// Workers before and after this step.
    pub workers: usize,
    pub desired: usize,
}

pub struct Controller {
    pub policy: Policy,
    pub target: f64,
    pub period: Duration,
    pub max_workers: usize,
    /// The rwsgi master (TTIN/TTOU go here; its children are the workers).
    pub master: i32,
    pub metrics: SocketAddr,
}

/// Periods whose desired counts bound a scale-down.
const STABILIZATION: usize = 5;
/// No change while metric ÷ target is within this of 1.
const TOLERANCE: f64 = 0.1;

impl Controller {
    /// Runs until `stop`; every step goes into `steps`.
    pub fn run(&self, start: Instant, stop: &AtomicBool, steps: &Mutex<Vec<Step>>) {
        let mut current = 1usize;
        let mut recent: VecDeque<usize> = VecDeque::new();
        let mut cpu = CpuMeter::default();
        cpu.sample(self.master);
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(self.period);
            let (metric, ratio) = match self.policy {
                Policy::QueueTime => {
                    let q = last_interval(self.metrics).map_or(0.0, |(q, _)| q);
                    (q, q / self.target)
                }
                Policy::Cpu => {
                    let c = cpu.sample(self.master);
                    (c, c / self.target)
                }
                Policy::QueueTimeAndUtilization => {
                    let (q, u) = last_interval(self.metrics).unwrap_or((0.0, 0.0));
                    (q, (q / self.target).max(u / UTILIZATION_TARGET))
                }
            };
            let rule = |ratio: f64| {
                if (ratio - 1.0).abs() <= TOLERANCE {
                    current
                } else {
                    ((current as f64 * ratio).ceil() as usize).clamp(1, self.max_workers)
                }
            };
            let mut desired = rule(ratio);
            recent.push_back(desired);
            if recent.len() > STABILIZATION {
                recent.pop_front();
            }
            if desired < current {
                desired = recent.iter().copied().max().unwrap_or(current).min(current);
            }
            let sig = if desired > current {
                libc::SIGTTIN
            } else {
                libc::SIGTTOU
            };
            for _ in 0..desired.abs_diff(current) {
                // SAFETY: kill has no memory preconditions; a gone master only fails.
                unsafe { libc::kill(self.master, sig) };
                std::thread::sleep(Duration::from_millis(5));
            }
            if let Ok(mut s) = steps.lock() {
                s.push(Step {
                    t: start.elapsed().as_secs_f64(),
                    metric,
                    workers: current,
                    desired,
                });
            }
            current = desired;
        }
    }
}

/// The last interval's mean queue time and utilization from rwsgi's `/queue-time.json`.
fn last_interval(addr: SocketAddr) -> Option<(f64, f64)> {
    let answer = crate::http_get::get(addr, "/queue-time.json", Duration::from_secs(2)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&answer.body).ok()?;
    Some((
        v["queue_time_seconds"]["avg"].as_f64()?,
        v["utilization_ratio"].as_f64()?,
    ))
}

/// CPU seconds of the master's children between two samples, per second per worker.
#[derive(Default)]
struct CpuMeter {
    last: HashMap<i32, f64>,
    at: Option<Instant>,
}

impl CpuMeter {
    fn sample(&mut self, master: i32) -> f64 {
        let now = Instant::now();
        let workers = children(master);
        let mut used = 0.0;
        let mut next = HashMap::new();
        for pid in &workers {
            let cpu = crate::cpu::process_cpu_s(*pid);
            used += cpu - self.last.get(pid).copied().unwrap_or(cpu);
            next.insert(*pid, cpu);
        }
        let elapsed = self.at.map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        self.last = next;
        self.at = Some(now);
        if elapsed <= 0.0 || workers.is_empty() {
            return 0.0;
        }
        used / elapsed / workers.len() as f64
    }
}

/// The children of `pid` (its workers), from /proc.
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}
