//! The supervisor applying [`crate::master::scaler`]'s decisions: it moves the pool
//! target, and `maintain()` does the rest, exactly as for TTIN/TTOU (a retiring
//! worker drains only once enough fresh ones serve, so no request is lost).

use std::time::Instant;

use super::{State, Supervisor};
use crate::master::memory;
use crate::master::scaler::Decision;

impl Supervisor {
    /// Every tick: one decision per new report; nothing while shutting down.
    pub(super) fn autoscale_tick(&mut self) {
        if self.shutdown.is_some() || self.term_at.is_some() {
            return;
        }
        let Some(scaler) = self.scaler.as_mut() else {
            return;
        };
        let pids: Vec<i32> = self
            .workers
            .values()
            .filter(|w| w.state == State::Ready)
            .map(|w| w.pid.as_raw())
            .collect();
        let signals = self.health.signals();
        match scaler.decide(Instant::now(), self.target, signals, || {
            memory::room_for_one_more(&pids)
        }) {
            Decision::Hold => {}
            Decision::Up(to, why) | Decision::Down(to, why) => {
                tracing::info!(
                    from = self.target,
                    to,
                    "Scaling workers: {} -> {to} ({why})",
                    self.target
                );
                self.target = to;
            }
            Decision::MemoryBound(why) => {
                tracing::warn!(workers = self.target, "Not scaling up: {why}");
            }
        }
    }
}
