//! `scenario`: the autoscaling story in one plot. Open-model load ramps from a fifth
//! of the server's capacity to 150% and back; per second we record offered load,
//! throughput, the true queue time seen by the client, and the queue time rwsgi
//! reports through its prometheus sink. The two queue-time curves must track.
//!
//! - [`ramp`]: the steps and the per-second rows.
//! - [`metrics`]: scraping and differencing `/metrics`.
//! - [`plot`] draws scenario.png.

pub mod metrics;
pub mod plot;
pub mod ramp;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::cli::ScenarioArgs;
use crate::load;
use crate::load::config::secs;
use crate::load::request::Target;
use crate::report::LoadReport;
use crate::runner::apps;
use crate::runner::servers::{Env, Server};
use crate::runner::session::{self, Started};
use metrics::Scrape;
use ramp::Row;

/// scenario.json.
#[derive(Debug, Serialize)]
struct Output {
    server: String,
    app: String,
    workers: usize,
    threads: usize,
    capacity_rps: f64,
    levels: Vec<f64>,
    step_secs: f64,
    service_time_s: f64,
    /// Pearson correlation and mean absolute difference (s) of the two curves.
    agreement: Option<(f64, f64)>,
    totals: LoadReport,
    rows: Vec<Row>,
    scrapes: Vec<Scrape>,
}

/// Runs the scenario and writes results/scenario.{json,md,png}.
pub fn run(args: &ScenarioArgs) -> Result<()> {
    let env = Env::from_paths(&args.paths)?;
    let step = secs("step-secs", args.step_secs)?;
    if args.levels.is_empty() || step.is_zero() {
        bail!("--levels and --step-secs must describe at least one step");
    }
    let mut app = apps::find(&args.app)?.clone();
    app.threads = args.threads.max(1);

    // Either an external server, or one we start (and stop on drop).
    let mut _started: Option<Started> = None;
    let (url, metrics_addr, server_name) = match &args.url {
        Some(url) => {
            let m = match &args.metrics_url {
                Some(u) => {
                    let t = Target::parse(u)?;
                    Some((t.addr, t.path.to_string()))
                }
                None => None,
            };
            (url.clone(), m, "external".to_string())
        }
        None => {
            let mut server = Server::parse(&args.server)?;
            if server == Server::Rwsgi {
                // The scenario is about the tracker: rwsgi always runs with it on.
                server = Server::RwsgiTracker;
            }
            if let Some(why) = server.unavailable(&env) {
                bail!("{}: {why}", server.name());
            }
            eprintln!(
                "starting {} on {} ({} workers × {} threads)",
                server.name(),
                app.name,
                args.workers,
                app.threads
            );
            let s = session::start(&env, server, &app, args.workers, 1.0, "scenario")?;
            let url = format!("http://{}/", s.addr);
            let m = s.metrics.map(|a| (a, "/metrics".to_string()));
            _started = Some(s);
            (url, m, server.name().to_string())
        }
    };

    let shape = ramp::shape(
        &app,
        args.connections,
        args.client_threads,
        &args.queue_header,
        true,
    );
    let capacity = match args.capacity {
        Some(c) if c > 0.0 => c,
        Some(_) => bail!("--capacity must be positive"),
        None => {
            let mut probe = shape.clone();
            probe.warmup = 1.0;
            // Enough connections to keep every Python thread busy several times over.
            probe.connections =
                (args.workers * app.threads * 8).clamp(32, args.connections.max(32));
            let r = LoadReport::from_outcome(&load::run(&probe.to_config(&url)?)?);
            eprintln!(
                "capacity (closed loop, {} connections): {:.0} req/s",
                probe.connections, r.rps
            );
            if r.rps <= 0.0 {
                bail!("the server served nothing while measuring capacity");
            }
            r.rps
        }
    };

    let cfg = ramp::config(&shape, &url, capacity, &args.levels, step)?;
    let schedule = ramp::schedule(capacity, &args.levels, step);
    eprintln!(
        "ramp: {} levels × {} s = {:.0} s, {} requests, {:.0}..{:.0} req/s",
        args.levels.len(),
        args.step_secs,
        schedule.total_duration().as_secs_f64(),
        schedule.total_requests(),
        capacity * args.levels.iter().copied().fold(f64::MAX, f64::min),
        capacity * args.levels.iter().copied().fold(0.0, f64::max)
    );
    let scrapes = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let outcome = std::thread::scope(|s| {
        if let Some((addr, path)) = &metrics_addr {
            let (scrapes, stop, metric) = (&scrapes, &stop, args.metric.as_str());
            s.spawn(move || metrics::scrape_loop(*addr, path, metric, start, stop, scrapes));
        }
        let r = load::run(&cfg);
        stop.store(true, Ordering::Relaxed);
        r
    })?;
    let scrapes = scrapes.into_inner().unwrap_or_default();
    drop(_started);

    let series = &outcome.stats.series;
    let step_whole = args.step_secs.round().max(1.0) as usize;
    let service = match args.service_ms {
        Some(ms) => ms / 1000.0,
        None => ramp::service_time(series, step_whole),
    };
    let mut rows = ramp::rows(series, service, &metrics::interval_means(&scrapes));
    // Answers after the last due second are the run's tail, not a level of the ramp.
    rows.truncate((args.levels.len() as f64 * args.step_secs).ceil() as usize);
    let agreement = ramp::agreement(&rows);
    let out = Output {
        server: server_name.clone(),
        app: app.name.to_string(),
        workers: args.workers,
        threads: app.threads,
        capacity_rps: capacity,
        levels: args.levels.clone(),
        step_secs: args.step_secs,
        service_time_s: service,
        agreement,
        totals: LoadReport::from_outcome(&outcome),
        rows,
        scrapes,
    };
    write(&env, &out, metrics_addr.is_some())
}

fn write(env: &Env, out: &Output, metrics: bool) -> Result<()> {
    std::fs::create_dir_all(&env.out)?;
    std::fs::write(
        env.out.join("scenario.json"),
        serde_json::to_string_pretty(out)?,
    )?;
    let title = format!(
        "{} on {} ({} workers × {} threads): ramp {:.0}%..{:.0}% of {:.0} req/s",
        out.server,
        out.app,
        out.workers,
        out.threads,
        out.levels.iter().copied().fold(f64::MAX, f64::min) * 100.0,
        out.levels.iter().copied().fold(0.0, f64::max) * 100.0,
        out.capacity_rps
    );
    plot::draw(&out.rows, &title, &env.out.join("scenario.png"))?;
    let mut md = String::new();
    let _ = writeln!(md, "# Autoscaling scenario\n\n{title}\n");
    let _ = writeln!(
        md,
        "Service time subtracted from client latency: {:.2} ms. Totals: {:.0} req/s, {} errors, p99 {:.1} ms.\n",
        out.service_time_s * 1000.0,
        out.totals.rps,
        out.totals.errors,
        out.totals.latency_ms.p99
    );
    match (metrics, out.agreement) {
        (false, _) => {
            let _ = writeln!(md, "No metrics endpoint: client curve only.\n");
        }
        (true, None) => {
            let _ = writeln!(
                md,
                "Metrics endpoint gave too few samples to compare ({} scrapes).\n",
                out.scrapes.len()
            );
        }
        (true, Some((r, mad))) => {
            let _ = writeln!(
                md,
                "Client vs. rwsgi queue time: correlation {r:.3}, mean absolute difference {:.1} ms.\n",
                mad * 1000.0
            );
        }
    }
    let _ = writeln!(md, "![scenario](scenario.png)\n");
    let _ = writeln!(md, "| s | offered | throughput | errors | client queue ms | rwsgi queue ms |\n|---:|---:|---:|---:|---:|---:|");
    let ms = |v: Option<f64>| v.map_or("—".into(), |v| format!("{:.1}", v * 1000.0));
    for r in &out.rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            r.client.t,
            r.client.offered,
            r.client.throughput,
            r.client.errors,
            ms(r.client.client_queue),
            ms(r.server_queue)
        );
    }
    std::fs::write(env.out.join("scenario.md"), md).context("writing scenario.md")?;
    eprintln!("wrote {}", env.out.join("scenario.png").display());
    Ok(())
}
