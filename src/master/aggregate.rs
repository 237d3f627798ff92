//! Merges the workers' tracker snapshots into one report per host per interval and
//! hands it to the notifier.
//!
//! On each interval the master asks every serving worker for its snapshot and waits
//! a short while for the answers; histograms are merged exactly. Snapshots that
//! arrive late, and the final ones of workers that exit (recycling, HUP, TERM), are
//! carried into the next report, so no request goes uncounted.

use std::time::{Duration, Instant, SystemTime};

use super::supervisor::Collector;
use crate::control::FINAL_SEQ;
use crate::notify::Notifier;
use crate::tracker::Snapshot;

/// How long the master waits for workers' snapshots after asking.
fn answer_window(interval: Duration) -> Duration {
    (interval / 2).min(Duration::from_secs(1))
}

struct Pending {
    seq: u64,
    asked: usize,
    received: usize,
    deadline: Instant,
    merged: Snapshot,
}

pub struct Aggregator {
    interval: Duration,
    next_due: Instant,
    seq: u64,
    pending: Option<Pending>,
    /// Late and final snapshots, merged into the next report.
    carry: Snapshot,
    hostname: String,
    notifier: Option<Notifier>,
    serving: usize,
    last_report: Instant,
    /// Receives each report's signals for `/readyz` and worker scaling.
    health: Option<std::sync::Arc<super::health::Health>>,
}

impl Aggregator {
    pub fn new(interval: Duration, notifier: Option<Notifier>) -> Aggregator {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        let now = Instant::now();
        Aggregator {
            interval,
            next_due: now + interval,
            seq: 0,
            pending: None,
            carry: Snapshot::new(),
            hostname,
            notifier,
            serving: 0,
            last_report: now,
            health: None,
        }
    }

    /// Also hands every report to `health`.
    pub fn set_health(&mut self, health: std::sync::Arc<super::health::Health>) {
        self.health = Some(health);
    }

    fn publish(&mut self, mut merged: Snapshot) {
        merged.merge(&std::mem::replace(&mut self.carry, Snapshot::new()));
        // The master's own log lines join the workers'.
        merged.log_lines.add(&crate::logging::take_line_counts());
        let now = Instant::now();
        let covered = now.duration_since(self.last_report);
        self.last_report = now;
        let mut report = merged.render(&self.hostname, SystemTime::now(), covered);
        report.workers = self.serving as u32;
        if let Some(h) = &self.health {
            h.record(&report);
        }
        if let Some(n) = &self.notifier {
            n.publish(report);
        }
    }

    /// Reports the last partial interval and stops the sinks within `deadline`.
    pub async fn finish(mut self, deadline: Duration) {
        let merged = match self.pending.take() {
            Some(p) => p.merged,
            None => Snapshot::new(),
        };
        self.publish(merged);
        if let Some(n) = self.notifier.take() {
            n.shutdown(deadline).await;
        }
    }
}

impl Collector for Aggregator {
    fn snapshot(&mut self, worker: u32, seq: u64, data: Vec<u8>) {
        let snap = match Snapshot::decode(&data) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(worker, error = %e, "unreadable tracker snapshot");
                return;
            }
        };
        match &mut self.pending {
            Some(p) if p.seq == seq && seq != FINAL_SEQ => {
                p.merged.merge(&snap);
                p.received += 1;
            }
            _ => self.carry.merge(&snap),
        }
    }

    fn tick(&mut self, collect: &mut dyn FnMut(u64) -> usize, serving: usize) {
        self.serving = serving;
        let now = Instant::now();
        if let Some(p) = &self.pending {
            if p.received >= p.asked || now >= p.deadline {
                if let Some(p) = self.pending.take() {
                    self.publish(p.merged);
                }
            }
            return;
        }
        if now >= self.next_due {
            self.next_due += self.interval;
            if self.next_due < now {
                self.next_due = now + self.interval;
            }
            self.seq += 1;
            let asked = collect(self.seq);
            self.pending = Some(Pending {
                seq: self.seq,
                asked,
                received: 0,
                deadline: now + answer_window(self.interval),
                merged: Snapshot::new(),
            });
        }
    }
}
