//! The load generator: closed-loop and open-model HTTP/1.1 load with hyper.
//!
//! A run spreads its connections over `threads` OS threads, each with its own
//! single-threaded tokio runtime and its own [`lane::Lane`]: no work stealing, no
//! shared counters, so the generator spends its CPU on requests and stays well below
//! the server's cost per request (see `vs-wrk`).

pub mod config;
pub mod conn;
pub mod lane;
pub mod request;
pub mod stats;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::schedule::Schedule;
use crate::stamp::WallClock;
use lane::{Lane, Slots};
use request::RequestTemplate;
use stats::Stats;

/// When a closed-loop run stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After the warm-up plus this long.
    Duration(Duration),
    /// After this many requests in total (warm-up included).
    Requests(u64),
}

/// How requests are issued.
#[derive(Debug, Clone)]
pub enum Model {
    /// Each connection sends its next request when the previous answer arrives.
    Closed { stop: Stop },
    /// Requests are due on a fixed schedule, whatever the answers do; latency counts
    /// from the due time, so a stalled server shows as latency, not as fewer samples.
    Open { schedule: Schedule },
}

/// A validated load-generator run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Where to connect.
    pub addr: SocketAddr,
    /// What to send.
    pub template: RequestTemplate,
    /// Closed or open model.
    pub model: Model,
    /// Connections in total, spread over the threads.
    pub connections: usize,
    /// Generator OS threads.
    pub threads: usize,
    /// Leading time whose outcomes are left out of the totals (not of the series).
    pub warmup: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Reuse connections (HTTP/1.1 keep-alive) or open one per request.
    pub keep_alive: bool,
}

/// What a run measured: merged counts plus the measurement window.
#[derive(Debug, Clone)]
pub struct LoadOutcome {
    /// All threads' counts merged.
    pub stats: Stats,
    /// Length of the measurement window (warm-up end → last connection stopped).
    pub window: Duration,
}

/// Runs the load and blocks until it is done.
pub fn run(cfg: &LoadConfig) -> Result<LoadOutcome> {
    let threads = cfg.threads.max(1).min(cfg.connections.max(1));
    let start = Instant::now();
    let clock = WallClock::now();
    let measure_from = start + cfg.warmup;
    let results: Vec<Result<(Stats, Option<Instant>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let conns = share(cfg.connections.max(1), threads, t);
                let slots = slots_for(cfg, start, t, threads);
                scope.spawn(move || -> Result<(Stats, Option<Instant>)> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("building a tokio runtime")?;
                    let lane = Rc::new(Lane {
                        start,
                        measure_from,
                        clock,
                        target_addr: cfg.addr,
                        timeout: cfg.timeout,
                        keep_alive: cfg.keep_alive,
                        template: cfg.template.clone(),
                        slots,
                        stats: RefCell::new(Stats::new()),
                        finished: Cell::new(None),
                    });
                    let local = tokio::task::LocalSet::new();
                    for _ in 0..conns {
                        local.spawn_local(conn::run(Rc::clone(&lane)));
                    }
                    rt.block_on(local);
                    let finished = lane.finished.get();
                    let stats = lane.stats.replace(Stats::new());
                    Ok((stats, finished))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a generator thread panicked")))
            })
            .collect()
    });
    let mut stats = Stats::new();
    let mut end = measure_from;
    for r in results {
        let (s, finished) = r?;
        stats.merge(&s);
        if let Some(f) = finished {
            end = end.max(f);
        }
    }
    Ok(LoadOutcome {
        stats,
        window: end.saturating_duration_since(measure_from),
    })
}

/// How many of `total` items thread `t` of `threads` gets (the first ones get the
/// remainder).
pub fn share(total: usize, threads: usize, t: usize) -> usize {
    total / threads + usize::from(t < total % threads)
}

fn slots_for(cfg: &LoadConfig, start: Instant, t: usize, threads: usize) -> Slots {
    match &cfg.model {
        Model::Closed { stop } => match stop {
            Stop::Duration(d) => Slots::Closed {
                deadline: Some(start + cfg.warmup + *d),
                remaining: None,
            },
            Stop::Requests(n) => Slots::Closed {
                deadline: None,
                remaining: Some(Cell::new(share(*n as usize, threads, t) as u64)),
            },
        },
        Model::Open { schedule } => Slots::Open {
            cursor: RefCell::new(schedule.lane(t as u64, threads as u64)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::LoadShape;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        shape: LoadShape,
    }

    /// A hello server on a free port, serving for the rest of the test process.
    fn hello() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || crate::hello::serve_on(l, 1));
        format!("http://{addr}/")
    }

    fn run_with(url: &str, args: &[&str]) -> LoadOutcome {
        let shape = T::parse_from(std::iter::once("t").chain(args.iter().copied())).shape;
        run(&shape.to_config(url).unwrap()).unwrap()
    }

    #[test]
    fn a_counted_closed_loop_sends_exactly_that_many() {
        let url = hello();
        let o = run_with(&url, &["-n", "301", "-c", "4", "-t", "2"]);
        assert_eq!(o.stats.ok, 301);
        assert_eq!(o.stats.errors.total(), 0);
        assert_eq!(o.stats.body_bytes, 301 * 13);
        let offered: u64 = o.stats.series.iter().map(|s| s.offered).sum();
        assert_eq!(offered, 301);
    }

    #[test]
    fn keep_alive_off_opens_a_connection_per_request() {
        let url = hello();
        let o = run_with(&url, &["-n", "50", "-c", "2", "--no-keep-alive"]);
        assert_eq!(o.stats.ok, 50);
        assert_eq!(o.stats.errors.total(), 0);
    }

    #[test]
    fn the_open_model_keeps_its_rate() {
        let url = hello();
        let o = run_with(&url, &["--rate", "200", "-d", "1", "-c", "8", "-t", "2"]);
        assert_eq!(o.stats.ok, 200);
        let offered: u64 = o.stats.series.iter().map(|s| s.offered).sum();
        assert_eq!(offered, 200);
        // The last request is due at 0.995 s: the run cannot end much earlier.
        assert!(o.window >= Duration::from_millis(990), "{:?}", o.window);
        assert!(o.window < Duration::from_secs(5), "{:?}", o.window);
    }

    #[test]
    fn a_silent_server_counts_timeouts() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // Accepts and holds connections, never answers.
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in l.incoming().flatten() {
                held.push(s);
            }
        });
        let start = std::time::Instant::now();
        let o = run_with(
            &format!("http://{addr}/"),
            &["-n", "3", "-c", "1", "-t", "1", "--timeout", "0.2"],
        );
        assert_eq!(o.stats.ok, 0);
        assert_eq!(o.stats.errors.get(stats::ErrorKind::Timeout), 3);
        assert!(start.elapsed() >= Duration::from_millis(600));
    }

    #[test]
    fn a_closed_port_counts_connect_errors() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let o = run_with(
            &format!("http://127.0.0.1:{port}/"),
            &["-d", "0.2", "-c", "2", "-t", "1"],
        );
        assert_eq!(o.stats.ok, 0);
        assert!(o.stats.errors.get(stats::ErrorKind::Connect) > 0);
        assert_eq!(
            o.stats.errors.total(),
            o.stats.errors.get(stats::ErrorKind::Connect)
        );
    }

    #[test]
    fn shares_add_up() {
        for total in [0usize, 1, 5, 64, 65] {
            for threads in 1..5 {
                let sum: usize = (0..threads).map(|t| share(total, threads, t)).sum();
                assert_eq!(sum, total);
            }
        }
    }
}
