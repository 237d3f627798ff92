//! The supervisor's side of the orchestrator lifecycle: TERM with `--shutdown-delay`
//! and the pool state that `/healthz` and `/readyz` read.
//!
//! Kubernetes sends TERM and removes the pod from its Service endpoints at the same
//! time, and the removal reaches every node's proxy and every ingress some seconds
//! later; requests keep arriving meanwhile. Draining at once (closing the listeners)
//! loses them. With a delay, readiness fails at once and the workers serve as before
//! until the delay is over; only then does the usual graceful drain begin.

use std::time::Instant;

use super::Supervisor;
use crate::server::Stop;

impl Supervisor {
    /// TERM: drain now, or fail readiness and drain after `--shutdown-delay`. A second
    /// TERM during the delay drains at once.
    pub(super) fn on_term(&mut self) {
        let delay = self.config.lifecycle.shutdown_delay;
        if delay.is_zero() || self.term_at.is_some() || self.shutdown.is_some() {
            self.term_at = None;
            self.begin_shutdown(Stop::Graceful, "term");
            return;
        }
        self.health.set_draining();
        self.term_at = Some(Instant::now() + delay);
        tracing::info!(
            shutdown_delay = delay.as_secs_f64(),
            "Handling signal: term; not ready any more, serving {:.1}s before draining",
            delay.as_secs_f64()
        );
    }

    /// Every tick: publish the pool for the probes; start a delayed drain when due.
    pub(super) fn lifecycle_tick(&mut self) {
        self.health.set_pool(self.ready_count(), self.target);
        if self.term_at.is_some_and(|at| Instant::now() >= at) {
            self.term_at = None;
            self.begin_shutdown(Stop::Graceful, "term (after --shutdown-delay)");
        }
    }
}
