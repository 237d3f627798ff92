//! Queue-time measurement: stamp parsing, per-worker recording, mergeable snapshots.

pub mod report;
