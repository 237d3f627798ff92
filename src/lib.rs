//! rwsgi: a WSGI server in Rust that embeds CPython and measures request queue time.
//!
//! # Layout
//!
//! - [`start`]: read the configuration, run as the master, as a [`worker`], or as
//!   the `--preload` process ([`zygote`]: imports the app once, forks the workers);
//!   [`error`]: the [`error::Fatal`] error that ends a process, with its exit code.
//! - [`admin_http`]: the master's internal listeners (metrics, health).
//! - [`cli`]: every command-line option, raw (clap derive).
//! - [`config`]: layered sources (command line, `GUNICORN_CMD_ARGS`, `RWSGI_*`
//!   environment, TOML or Python config file, Django settings), gunicorn's settings
//!   table, and the validated [`config::Config`], one sub-struct per component.
//! - [`master`]: the supervising process: sockets, workers, signals, snapshot merging,
//!   the notifier timer.
//! - [`server`]: a worker's HTTP side, bytes ↔ requests and replies: accept loops,
//!   the own HTTP/1.1 path and hyper, the rules both apply (limits), draining. No
//!   Python.
//! - [`dispatch`]: policy: the Python threads and inline turns, the dispatch stamp,
//!   shedding, `X-Forwarded-*`, busy slots, the access log and tracker recording.
//! - [`wsgi`]: PEP 3333, named after its parts: interpreter, environ, start_response,
//!   input, response, file_wrapper.
//! - [`contract`]: what crosses between those three: a request in, a reply out, the
//!   facts of a connection. Layers call one way: server → dispatch → wsgi.
//! - [`tracker`]: queue-time measurement: stamp parsing, the per-worker recorder,
//!   snapshots that merge exactly, the per-interval [`tracker::report::Report`].
//! - [`notify`]: the timer's sinks: log, prometheus, statsd, cloudwatch, azure, redis.
//! - [`throttle`]: one log line per interval for errors that repeat per request.

pub mod admin_http;
pub mod cli;
pub mod config;
pub mod contract;
pub mod control;
pub mod dispatch;
pub mod error;
pub mod hooks;
pub mod logging;
pub mod master;
pub mod notify;
pub mod server;
pub mod start;
pub mod throttle;
pub mod tracker;
pub mod worker;
pub mod wsgi;
pub mod zygote;
