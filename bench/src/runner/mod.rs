//! The comparison runner: each server on each app, the same load, several rounds.
//!
//! - [`apps`]: the apps and the load each gets.
//! - [`servers`]: the peers and rwsgi, and their command lines.
//! - [`process`]: start, readiness, RSS, stop.
//! - [`session`]: one measured run of one server on one app.
//! - [`compare`]: the rounds, alternation and output files.
//! - [`coldstart`]: exec to serving, a burst during start-up, memory once serving.
//! - [`results`], [`table`], [`chart`]: the data, latest.md and latest.png.

pub mod apps;
pub mod chart;
pub mod coldstart;
pub mod compare;
pub mod process;
pub mod results;
pub mod servers;
pub mod session;
pub mod table;
