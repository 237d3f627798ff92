//! The master process: sockets, workers, signals, snapshot merging, the notifier timer.

/// Runs rwsgi and returns the process exit code.
pub fn main() -> i32 {
    0
}
