//! `autoscale`: the closed loop. The same ramp is served by rwsgi starting with one
//! worker; a controller applying the HPA's rule scales its workers, once from rwsgi's
//! queue time, once from the workers' CPU utilization, and once from both queue time
//! and utilization (the larger count), as the shipped KEDA ScaledObject does. Per second we record
//! the client's queue time and p99 latency and the worker count, and draw both runs
//! in one PNG.
//!
//! - [`controller`]: the HPA rule, TTIN/TTOU, the two metrics.
//! - [`plot`] draws autoscale.png.

pub mod controller;
pub mod plot;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::cli::AutoscaleArgs;
use crate::load;
use crate::load::config::secs;
use crate::report::LoadReport;
use crate::runner::apps;
use crate::runner::servers::{Env, Server};
use crate::runner::session;
use crate::scenario::ramp;
use controller::{Controller, Policy, Step};

/// One second of one run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Row {
    #[serde(flatten)]
    pub client: ramp::Client,
    /// p99 latency of the answers in this second, seconds (within a √2 bucket).
    pub p99: Option<f64>,
    /// Workers the controller had set at this second.
    pub workers: usize,
}

/// One policy's run.
#[derive(Debug, Serialize)]
pub struct Run {
    pub policy: Policy,
    pub target: f64,
    pub totals: LoadReport,
    pub rows: Vec<Row>,
    pub steps: Vec<Step>,
    /// Worker-seconds used: the cost side of the comparison.
    pub worker_seconds: f64,
}

/// autoscale.json.
#[derive(Debug, Serialize)]
struct Output {
    app: String,
    threads: usize,
    per_worker_rps: f64,
    levels: Vec<f64>,
    step_secs: f64,
    period_secs: f64,
    max_workers: usize,
    service_time_s: f64,
    runs: Vec<Run>,
}

pub fn run(args: &AutoscaleArgs) -> Result<()> {
    let env = Env::from_paths(&args.paths)?;
    let step = secs("step-secs", args.step_secs)?;
    let period = secs("period", args.period)?;
    if args.levels.is_empty() || step.is_zero() || period.is_zero() || args.max_workers == 0 {
        bail!("--levels, --step-secs, --period and --max-workers must be positive");
    }
    let mut app = apps::find(&args.app)?.clone();
    app.threads = args.threads.max(1);
    let service = args.service_ms / 1000.0;
    let per_worker = app.threads as f64 / service;
    let mut runs = Vec::new();
    for (policy, target) in [
        (Policy::QueueTime, args.queue_target),
        (Policy::Cpu, args.cpu_target),
        (Policy::QueueTimeAndUtilization, args.queue_target),
    ] {
        eprintln!("run: scaling on {} (target {target})", policy.name());
        runs.push(one_run(
            &env, &app, args, policy, target, per_worker, step, period,
        )?);
    }
    let out = Output {
        app: app.name.to_string(),
        threads: app.threads,
        per_worker_rps: per_worker,
        levels: args.levels.clone(),
        step_secs: args.step_secs,
        period_secs: args.period,
        max_workers: args.max_workers,
        service_time_s: service,
        runs,
    };
    write(&env, &out)
}

#[allow(clippy::too_many_arguments)]
fn one_run(
    env: &Env,
    app: &apps::App,
    args: &AutoscaleArgs,
    policy: Policy,
    target: f64,
    per_worker: f64,
    step: Duration,
    period: Duration,
) -> Result<Run> {
    let started = session::start(env, Server::RwsgiTracker, app, 1, 1.0, "autoscale")?;
    let metrics = started
        .metrics
        .context("rwsgi started without its metrics listener")?;
    // A connection per request, as nginx without an upstream pool: a keep-alive
    // connection stays with the worker that accepted it, so workers added later would
    // get none of the traffic already connected.
    let shape = ramp::shape(app, args.connections, 1, "X-RequestTime", false);
    let url = format!("http://{}/", started.addr);
    let cfg = ramp::config(&shape, &url, per_worker, &args.levels, step)?;
    let controller = Controller {
        policy,
        target,
        period,
        max_workers: args.max_workers,
        master: started.pgid(),
        metrics,
    };
    let steps = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let outcome = std::thread::scope(|s| {
        s.spawn(|| controller.run(start, &stop, &steps));
        let r = load::run(&cfg);
        stop.store(true, Ordering::Relaxed);
        r
    })?;
    drop(started);
    let steps = steps.into_inner().unwrap_or_default();
    let service = args.service_ms / 1000.0;
    let len = (args.levels.len() as f64 * args.step_secs).ceil() as usize;
    let rows: Vec<Row> = outcome
        .stats
        .series
        .iter()
        .take(len)
        .enumerate()
        .map(|(i, s)| Row {
            client: ramp::Client::of(i, s, service),
            p99: s.latency_quantile(0.99),
            workers: workers_at(&steps, i as f64 + 0.5),
        })
        .collect();
    let worker_seconds = rows.iter().map(|r| r.workers as f64).sum();
    Ok(Run {
        policy,
        target,
        totals: LoadReport::from_outcome(&outcome),
        rows,
        steps,
        worker_seconds,
    })
}

/// The worker count in force at `t` (1 before the first step).
fn workers_at(steps: &[Step], t: f64) -> usize {
    steps
        .iter()
        .take_while(|s| s.t <= t)
        .last()
        .map_or(1, |s| s.desired)
}

fn write(env: &Env, out: &Output) -> Result<()> {
    std::fs::create_dir_all(&env.out)?;
    std::fs::write(
        env.out.join("autoscale.json"),
        serde_json::to_string_pretty(out)?,
    )?;
    let title = format!(
        "HPA rule on rwsgi ({} app, {} thread(s)/worker, {:.0} req/s per worker): ramp {:.1}x..{:.1}x of one worker",
        out.app,
        out.threads,
        out.per_worker_rps,
        out.levels.iter().copied().fold(f64::MAX, f64::min),
        out.levels.iter().copied().fold(0.0, f64::max),
    );
    plot::draw(out, &title, &env.out.join("autoscale.png"))?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Closed-loop autoscaling: queue time vs CPU\n\n{title}\n"
    );
    let _ = writeln!(
        md,
        "Controller every {} s: desired = ceil(current × metric ÷ target), 10% tolerance, scale-down to the highest desired count of the last 5 periods, 1..{} workers.\n",
        out.period_secs, out.max_workers
    );
    let _ = writeln!(md, "| scaled on | target | answered | errors | mean queue ms | p99 ms (whole run) | max workers | worker-seconds |\n|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &out.runs {
        let queued: Vec<f64> = r
            .rows
            .iter()
            .filter_map(|x| x.client.client_queue)
            .collect();
        let mean_q = queued.iter().sum::<f64>() / queued.len().max(1) as f64;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.1} | {:.1} | {} | {:.0} |",
            r.policy.name(),
            r.target,
            r.totals.ok,
            r.totals.errors,
            mean_q * 1000.0,
            r.totals.latency_ms.p99,
            r.rows.iter().map(|x| x.workers).max().unwrap_or(1),
            r.worker_seconds
        );
    }
    let _ = writeln!(md, "\n![autoscale](autoscale.png)\n");
    for r in &out.runs {
        let _ = writeln!(
            md,
            "## Scaled on {}\n\n| s | offered | served | queue ms | p99 ms | workers |\n|---:|---:|---:|---:|---:|---:|",
            r.policy.name()
        );
        let ms = |v: Option<f64>| v.map_or("—".into(), |v| format!("{:.0}", v * 1000.0));
        for x in &r.rows {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                x.client.t,
                x.client.offered,
                x.client.throughput,
                ms(x.client.client_queue),
                ms(x.p99),
                x.workers
            );
        }
        let _ = writeln!(md);
    }
    std::fs::write(env.out.join("autoscale.md"), md).context("writing autoscale.md")?;
    eprintln!("wrote {}", env.out.join("autoscale.png").display());
    Ok(())
}
