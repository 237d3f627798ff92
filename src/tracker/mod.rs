//! Queue-time measurement: everything between a request's proxy stamp and the
//! per-interval [`report::Report`] that the notifier sinks receive.
//!
//! It owns the definitions of ARCHITECTURE.md's "Queue-time definitions"
//! (`queue_time`, `server_wait`, `app_time`, `utilization`) and nothing else: no I/O,
//! no threads, no clock of its own except `Instant` for interval lengths. Dispatch
//! (`dispatch/request.rs`) and the master call it like this:
//!
//! 1. At startup, [`TrustedPeers::parse`] the `--queue-header-trusted-from` list.
//! 2. At dispatch, [`classify_at`] the queue header against the wall clock the caller
//!    already has (the arrival's kernel stamp plus `server_wait`: no second clock
//!    read), then [`Recorder::record_dispatch_at`] (or [`Recorder::record_shed`] when
//!    the request waited longer than `--max-queue-time`).
//! 3. When the response is done, [`Recorder::record_finish_at`].
//! 4. On the worker's timer, [`Recorder::take`] a [`Snapshot`] and send
//!    [`Snapshot::encode`]d bytes to the master.
//! 5. In the master, [`Snapshot::decode`], [`Snapshot::merge`] every worker's, and
//!    [`Snapshot::render`] the host's report once per interval.
//!
//! # Layout
//!
//! - [`header`]: stamp parsing and classification.
//! - [`peers`]: the trusted-peer set (also serves `--forwarded-allow-ips`).
//! - [`recorder`]: the per-worker hot path.
//! - [`timing`]: one metric's histogram with its exact sum, min, max and buckets.
//! - [`snapshot`]: one interval's measurements; merging and rendering.
//! - `codec`: the worker → master wire form of a snapshot.
//! - [`report`]: the contract with the notifier sinks.

mod codec;
pub mod header;
pub mod peers;
pub mod recorder;
pub mod report;
pub mod snapshot;
pub mod status;
pub mod timing;

pub use codec::DecodeError;
pub use header::{classify, classify_at, last_value, parse_stamp, Stamp};
pub use peers::TrustedPeers;
pub use recorder::Recorder;
pub use report::{LogLines, MetricReport, Report, StampCounts, PROMETHEUS_BUCKETS};
pub use snapshot::Snapshot;
pub use timing::Timing;
