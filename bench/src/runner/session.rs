//! One measured run: start a server on an app, wait until it answers, load it while
//! sampling its memory, stop it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::apps::App;
use super::process::{free_port, group_cpu_s, group_rss, Running};
use super::servers::{Env, Launch, Server, QUEUE_HEADER};
use crate::cli::LoadShape;
use crate::load::request::StampAt;
use crate::report::LoadReport;

/// How long a server may take to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Memory sampling period during the load.
const RSS_PERIOD: Duration = Duration::from_millis(250);

/// The load applied to every server: shared by all runs of an app.
#[derive(Debug, Clone, Copy)]
pub struct LoadPlan {
    pub duration_s: f64,
    pub warmup_s: f64,
    pub client_threads: usize,
    pub workers: usize,
    /// Also load every server with wrk, right after the generator (same server
    /// process, already warm), for the same duration.
    pub wrk: bool,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Measured {
    pub report: LoadReport,
    pub rss_peak_bytes: u64,
    pub ready_s: f64,
    /// Share of the machine's CPU (0..1 of all cores) that neither the server nor the
    /// generator used during the load: other people's work skewing the numbers.
    pub other_cpu: f64,
    /// wrk's run on the same server, when the plan asks for one.
    pub wrk: Option<crate::wrk::WrkResult>,
}

/// The load shape for an app: every request carries the queue stamp, for every
/// server, so that all of them parse the same bytes (peers ignore the header).
pub fn shape_for(app: &App, plan: &LoadPlan) -> LoadShape {
    LoadShape {
        connections: app.connections,
        threads: plan.client_threads,
        duration: plan.duration_s,
        requests: None,
        rate: None,
        warmup: plan.warmup_s,
        timeout: 10.0,
        no_keep_alive: false,
        method: app.method.to_string(),
        body_size: app.body_size,
        headers: Vec::new(),
        stamp_header: Some(QUEUE_HEADER.to_string()),
        stamp_at: StampAt::Sent,
    }
}

/// A started server that stops when dropped.
pub struct Started {
    running: Option<Running>,
    /// Where it serves.
    pub addr: SocketAddr,
    /// Where rwsgi serves /metrics, for tracker-on runs.
    pub metrics: Option<SocketAddr>,
    /// Seconds until the first answer.
    pub ready_s: f64,
}

impl Started {
    /// The process group, for memory sampling.
    pub fn pgid(&self) -> i32 {
        self.running.as_ref().map_or(0, Running::pgid)
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop(STOP_GRACE);
        }
    }
}

/// Starts `server` on `app` and waits until it answers.
pub fn start(
    env: &Env,
    server: Server,
    app: &App,
    workers: usize,
    notify_interval: f64,
    tag: &str,
) -> Result<Started> {
    let port = free_port()?;
    let metrics_port = if server.has_metrics() {
        Some(free_port()?)
    } else {
        None
    };
    let launch = Launch {
        port,
        metrics_port,
        workers,
        notify_interval,
    };
    let cmd = server.command(env, app, &launch);
    let log = env
        .out
        .join("tmp")
        .join(format!("{tag}-{}-{}.log", server.name(), app.name));
    let mut running = Running::spawn(cmd, &log)?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let ready = running.wait_ready(addr, READY_TIMEOUT);
    let mut started = Started {
        running: Some(running),
        addr,
        metrics: metrics_port.map(|p| ([127, 0, 0, 1], p).into()),
        ready_s: 0.0,
    };
    started.ready_s = ready?.as_secs_f64();
    Ok(started)
}

/// Starts the server, runs the app's load against it, stops it.
pub fn measure(
    env: &Env,
    server: Server,
    app: &App,
    plan: &LoadPlan,
    tag: &str,
) -> Result<Measured> {
    let started = start(env, server, app, plan.workers, 10.0, tag)?;
    let url = format!("http://{}/", started.addr);
    let cfg = shape_for(app, plan).to_config(&url)?;
    let pgid = started.pgid();
    let peak = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let wall = std::time::Instant::now();
    let (busy0, server0, self0) = (
        crate::cpu::machine_busy_s(),
        group_cpu_s(pgid),
        crate::cpu::self_cpu_s(),
    );
    let outcome = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(group_rss(pgid), Ordering::Relaxed);
                std::thread::sleep(RSS_PERIOD);
            }
        });
        let r = crate::load::run(&cfg).context("running the load");
        let w = match (&r, plan.wrk) {
            (Ok(_), true) => Some(run_wrk(env, app, plan, &url, tag)),
            _ => None,
        };
        done.store(true, Ordering::Relaxed);
        r.map(|r| (r, w))
    })?;
    let (outcome, wrk) = outcome;
    let wrk = wrk.transpose()?;
    let busy = crate::cpu::machine_busy_s() - busy0;
    let ours = (group_cpu_s(pgid) - server0) + (crate::cpu::self_cpu_s() - self0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let other_cpu = ((busy - ours) / (wall.elapsed().as_secs_f64() * cores)).clamp(0.0, 1.0);
    let ready_s = started.ready_s;
    drop(started);
    Ok(Measured {
        report: LoadReport::from_outcome(&outcome),
        rss_peak_bytes: peak.load(Ordering::Relaxed),
        ready_s,
        other_cpu,
        wrk,
    })
}

/// wrk with the same connections, threads, duration (whole seconds, at least 1),
/// stamp header and request body as the generator's run.
fn run_wrk(
    env: &Env,
    app: &App,
    plan: &LoadPlan,
    url: &str,
    tag: &str,
) -> Result<crate::wrk::WrkResult> {
    let stamp = crate::stamp::Msec::new(crate::stamp::WallClock::now().wall(Instant::now()));
    let mut extra = crate::wrk::Extra {
        headers: vec![format!("{QUEUE_HEADER}: {stamp:?}")],
        script: None,
    };
    if app.method != "GET" || app.body_size > 0 {
        let script = env
            .out
            .join("tmp")
            .join(format!("wrk-{tag}-{}.lua", app.name));
        crate::wrk::body_script(&script, app.method, app.body_size)?;
        extra.script = Some(script);
    }
    let secs = plan.duration_s.ceil().max(1.0) as u64;
    crate::wrk::run_with(url, plan.client_threads, app.connections, secs, &extra)
        .context("running wrk")
}
