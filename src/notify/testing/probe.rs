//! A scriptable sink for the notifier's own tests: it can hang, fail, and tell the
//! test what it delivered.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};

use crate::notify::SinkError;
use crate::tracker::report::Report;

/// What a test keeps to steer and observe a [`ProbeSink`].
pub struct ProbeHandle {
    /// Each `send` takes one permit first: no permits means the sink hangs.
    pub gate: Arc<Semaphore>,
    /// `shed` (the report number) of each report the sink accepted, in order.
    pub delivered: mpsc::UnboundedReceiver<u64>,
    /// Calls to `send`, retries included.
    pub attempts: Arc<AtomicU32>,
}

/// A sink whose behaviour the test scripts.
pub struct ProbeSink {
    name: &'static str,
    gate: Arc<Semaphore>,
    delivered: mpsc::UnboundedSender<u64>,
    attempts: Arc<AtomicU32>,
    /// Attempts still to fail before sends succeed.
    failures_left: u32,
    /// Whether those failures are worth retrying.
    retryable: bool,
}

impl ProbeSink {
    /// An accepting sink named `name`.
    pub fn new(name: &'static str) -> (ProbeSink, ProbeHandle) {
        let gate = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
        let (tx, rx) = mpsc::unbounded_channel();
        let attempts = Arc::new(AtomicU32::new(0));
        let sink = ProbeSink {
            name,
            gate: gate.clone(),
            delivered: tx,
            attempts: attempts.clone(),
            failures_left: 0,
            retryable: true,
        };
        (
            sink,
            ProbeHandle {
                gate,
                delivered: rx,
                attempts,
            },
        )
    }

    /// A sink that hangs in `send` until the test adds permits to the gate.
    pub fn hanging(name: &'static str) -> (ProbeSink, ProbeHandle) {
        let (mut sink, mut handle) = ProbeSink::new(name);
        sink.gate = Arc::new(Semaphore::new(0));
        handle.gate = sink.gate.clone();
        (sink, handle)
    }

    /// Makes the first `times` attempts fail.
    pub fn failing(mut self, times: u32, retryable: bool) -> ProbeSink {
        self.failures_left = times;
        self.retryable = retryable;
        self
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub async fn send(&mut self, report: &Report) -> Result<(), SinkError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let permit = self
            .gate
            .acquire()
            .await
            .map_err(|_| SinkError::permanent("gate closed"))?;
        permit.forget();
        if self.failures_left > 0 {
            self.failures_left -= 1;
            return Err(SinkError {
                retryable: self.retryable,
                message: "probe failure".into(),
            });
        }
        let _ = self.delivered.send(report.shed);
        Ok(())
    }
}
