//! rwsgi: a WSGI server in Rust that embeds CPython and measures request queue time.
//!
//! # Layout
//!
//! - [`cli`]: every command-line option, raw (clap derive).
//! - [`config`]: layered sources (command line, `RWSGI_*` environment, TOML file) and
//!   the validated [`config::Config`], one sub-struct per component.
//! - [`master`]: the supervising process: sockets, workers, signals, snapshot merging,
//!   the notifier timer.
//! - [`server`]: a worker's HTTP side: accept loop, hyper connections, limits, the
//!   handoff to Python threads.
//! - [`wsgi`]: PEP 3333, named after its parts: interpreter, environ, start_response,
//!   input, response, file_wrapper.
//! - [`tracker`]: queue-time measurement: stamp parsing, the per-worker recorder,
//!   snapshots that merge exactly, the per-interval [`tracker::report::Report`].
//! - [`notify`]: the timer's sinks: log, prometheus, statsd, cloudwatch, azure, redis.
//! - [`hooks`]: gunicorn's server hooks from a Python config file, and the process
//!   behaviour around them: timeouts that explain themselves, `--reload`,
//!   `--user/--group/--umask`, process titles.

pub mod cli;
pub mod config;
pub mod control;
pub mod hooks;
pub mod logging;
pub mod master;
pub mod notify;
pub mod server;
pub mod tracker;
pub mod worker;
pub mod wsgi;
