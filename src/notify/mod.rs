//! The notifier: a timer that hands each interval's merged report to every sink.
//!
//! TEMPORARY (branch `sinks`): only the shared contract the cloud sinks compile
//! against. The framework engineer's version replaces this file on merge; it must
//! keep [`SinkError`] and declare the modules below.

pub mod azure;
pub mod cloudwatch;
mod dimensions;
mod metric_names;
mod redact;
pub mod redis;
#[cfg(test)]
mod test_support;

/// Why one delivery attempt failed; `message` never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkError {
    /// True when another attempt may succeed (timeouts, throttling, 5xx, refused).
    pub retryable: bool,
    /// What went wrong, for the log line.
    pub message: String,
}
