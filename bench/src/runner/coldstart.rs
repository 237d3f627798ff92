//! `coldstart`: how long each server takes from exec to serving, what a burst that
//! arrives during start-up sees, and how much memory the master and the whole server
//! hold once every worker serves.
//!
//! An autoscaler's reaction time includes the new instance's start. Each run starts a
//! server twice, servers alternating within each run:
//! 1. **quiet start**: `GET /pid` is polled (8 connections at a time, each opened
//!    anew) until the first 200, then until every worker's pid has answered; the RSS
//!    of the master (the process started) and the RSS and PSS of the whole group are
//!    read then (RSS counts a shared page once per process that maps it, PSS once in
//!    all: PSS is what the machine holds for the server); then `GET /gc` is polled
//!    until every worker ran a full `gc.collect()` (as a long-lived worker does now
//!    and then: in a forked worker it copies every page whose objects it touches),
//!    and the PSS is read again;
//! 2. **burst start**: 100 requests are fired at exec time, each retrying a refused
//!    connect every `--retry-ms` until the port accepts; their latency counts from
//!    exec.
//!
//! Each run also times the floor no server can beat: the bench venv's `python`
//! importing the app module and exiting (`import floor`).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::apps::App;
use super::process::{free_port, group_pids, group_pss, group_rss, Running};
use super::results::median;
use super::servers::{Env, Launch, Server};
use crate::cli::ColdstartArgs;

/// The longest a start may take before the run counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections per polling round: enough that every worker gets some at once.
const POLL_CONNS: usize = 8;

/// One quiet start and one burst start of one server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Start {
    pub run: usize,
    pub server: String,
    /// Exec → the first 200, ms.
    pub first_ok_ms: f64,
    /// Exec → every worker has answered, ms.
    pub all_workers_ms: f64,
    /// RSS of the process started (the master; bjoern's forking parent), MiB.
    pub master_rss_mib: f64,
    /// RSS of all the server's processes, MiB.
    pub total_rss_mib: f64,
    /// PSS of all the server's processes (shared pages counted once), MiB.
    #[serde(default)]
    pub total_pss_mib: f64,
    /// The same once every worker ran a full collection (`GET /gc`), MiB; 0 when the
    /// app has no such route.
    #[serde(default)]
    pub total_pss_gc_mib: f64,
    /// Burst latencies from exec, ms: p50, p99, max; and failures.
    pub burst_p50_ms: f64,
    pub burst_p99_ms: f64,
    pub burst_max_ms: f64,
    pub burst_errors: usize,
}

/// Everything `coldstart` measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Coldstart {
    pub date: String,
    pub app: String,
    pub workers: usize,
    pub burst: usize,
    /// The burst's connect retry period, ms (0 in files written before it was set).
    #[serde(default)]
    pub retry_ms: u64,
    /// Each run's exec → exit of `python -c "import <app module>"`, ms.
    #[serde(default)]
    pub import_floor_ms: Vec<f64>,
    pub loadavg_before: String,
    pub starts: Vec<Start>,
    pub notes: Vec<String>,
}

/// Runs the cold-start comparison and writes results/coldstart.{json,md}.
pub fn run(args: &ColdstartArgs) -> Result<()> {
    if let Some(json) = &args.render {
        return rerender(json);
    }
    let env = Env::from_paths(&args.paths)?;
    let app = super::apps::find(&args.app)?;
    let servers = if args.servers.is_empty() {
        vec![
            Server::Rwsgi,
            Server::RwsgiPreload,
            Server::GunicornSync,
            Server::Granian,
            Server::Uwsgi,
            Server::Bjoern,
        ]
    } else {
        Server::select(&args.servers)?
    };
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = Coldstart {
        date: super::results::utc_date(unix),
        app: app.name.into(),
        workers: args.workers,
        burst: args.burst,
        retry_ms: args.retry_ms,
        loadavg_before: super::compare::loadavg(),
        ..Coldstart::default()
    };
    let servers: Vec<Server> = servers
        .into_iter()
        .filter(|s| match s.unavailable(&env) {
            Some(why) => {
                out.notes.push(format!("{}: {why}", s.label()));
                false
            }
            None => true,
        })
        .collect();
    let retry = Duration::from_millis(args.retry_ms.max(1));
    for run in 0..args.runs.max(1) {
        match import_floor(&env, app) {
            Ok(ms) => {
                eprintln!("| {} | import floor | {ms:.0} |", run + 1);
                out.import_floor_ms.push(ms);
            }
            Err(e) => out
                .notes
                .push(format!("import floor, run {}: {e:#}", run + 1)),
        }
        for server in super::compare::round_order(&servers, run) {
            match one(&env, server, app, args.workers, (args.burst, retry), run) {
                Ok(s) => {
                    eprintln!("{}", run_row(&s));
                    out.starts.push(s);
                }
                Err(e) => {
                    eprintln!("run {} {}: FAILED: {e:#}", run + 1, server.name());
                    out.notes
                        .push(format!("{} run {}: {e:#}", server.label(), run + 1));
                }
            }
        }
    }
    std::fs::create_dir_all(&env.out)?;
    let json = env.out.join("coldstart.json");
    std::fs::write(&json, serde_json::to_string_pretty(&out)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let md = env.out.join("coldstart.md");
    std::fs::write(&md, render(&out)).with_context(|| format!("writing {}", md.display()))?;
    eprintln!("{}", md.display());
    Ok(())
}

/// Both starts of one server.
fn one(
    env: &Env,
    server: Server,
    app: &App,
    workers: usize,
    (burst, retry): (usize, Duration),
    run: usize,
) -> Result<Start> {
    let mut s = Start {
        run,
        server: server.name().into(),
        ..Start::default()
    };
    // Quiet start.
    let (mut running, addr, t0) = spawn(env, server, app, workers, run, "quiet")?;
    let quiet = poll_workers(&mut running, addr, t0, workers);
    let quiet = match quiet {
        Ok(q) => q,
        Err(e) => {
            running.stop(Duration::from_secs(5));
            return Err(e);
        }
    };
    (s.first_ok_ms, s.all_workers_ms) = quiet;
    // Let the workers settle (a thread or two may still start) before reading memory.
    std::thread::sleep(Duration::from_millis(300));
    s.master_rss_mib = group_rss_of(&[running.pgid()]);
    s.total_rss_mib = group_rss(running.pgid()) as f64 / MIB;
    s.total_pss_mib = group_pss(running.pgid()) as f64 / MIB;
    if collect_everywhere(addr, workers) {
        std::thread::sleep(Duration::from_millis(300));
        s.total_pss_gc_mib = group_pss(running.pgid()) as f64 / MIB;
    }
    running.stop(Duration::from_secs(5));

    // Burst start.
    let (running, addr, t0) = spawn(env, server, app, workers, run, "burst")?;
    let lat = fire(addr, t0, burst, retry);
    running.stop(Duration::from_secs(5));
    let mut ok: Vec<f64> = lat.iter().flatten().copied().collect();
    s.burst_errors = lat.len() - ok.len();
    if ok.is_empty() {
        bail!("no request of the burst was answered");
    }
    ok.sort_by(f64::total_cmp);
    s.burst_p50_ms = percentile(&ok, 0.50);
    s.burst_p99_ms = percentile(&ok, 0.99);
    s.burst_max_ms = ok[ok.len() - 1];
    Ok(s)
}

const MIB: f64 = 1024.0 * 1024.0;

/// RSS of exactly these processes, MiB.
fn group_rss_of(pids: &[i32]) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as f64;
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/statm")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|pages| pages * page / MIB)
        .sum()
}

fn spawn(
    env: &Env,
    server: Server,
    app: &App,
    workers: usize,
    run: usize,
    what: &str,
) -> Result<(Running, SocketAddr, Instant)> {
    let port = free_port()?;
    let launch = Launch {
        port,
        metrics_port: None,
        workers,
        notify_interval: 10.0,
    };
    let cmd = server.command(env, app, &launch);
    let log = env
        .out
        .join("tmp")
        .join(format!("coldstart-{what}-{run}-{}.log", server.name()));
    let t0 = Instant::now();
    let running = Running::spawn(cmd, &log)?;
    Ok((running, ([127, 0, 0, 1], port).into(), t0))
}

/// Polls `GET /pid` until the first 200 and until `workers` distinct pids answered:
/// (ms to the first, ms to all), both from `t0`.
fn poll_workers(
    running: &mut Running,
    addr: SocketAddr,
    t0: Instant,
    workers: usize,
) -> Result<(f64, f64)> {
    let mut first = None;
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let round: Vec<_> = (0..POLL_CONNS)
            .filter_map(|_| TcpStream::connect(addr).ok())
            .collect();
        for mut c in &round {
            let _ = c.write_all(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        }
        for mut c in &round {
            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
            if let Ok(a) = crate::http_get::read_answer(&mut c) {
                if a.status == 200 {
                    first.get_or_insert_with(|| t0.elapsed());
                    if let Ok(pid) = String::from_utf8_lossy(&a.body).trim().parse::<i32>() {
                        seen.insert(pid);
                    }
                }
            }
        }
        if let Some(f) = first {
            if seen.len() >= workers {
                let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                return Ok((ms(f), ms(t0.elapsed())));
            }
        }
        if t0.elapsed() > START_TIMEOUT {
            bail!(
                "{} of {workers} workers answered in {START_TIMEOUT:?}; {}",
                seen.len(),
                running.log_tail()
            );
        }
        if group_pids(running.pgid()).is_empty() {
            bail!("the server exited; {}", running.log_tail());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Polls `GET /gc` (a full collection; the answer is the worker's pid) until
/// `workers` distinct pids answered: `false` when the app has no such route or not
/// every worker answered within a few seconds.
fn collect_everywhere(addr: SocketAddr, workers: usize) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.len() < workers && Instant::now() < deadline {
        let round: Vec<_> = (0..POLL_CONNS)
            .filter_map(|_| TcpStream::connect(addr).ok())
            .collect();
        for mut c in &round {
            let _ = c.write_all(b"GET /gc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        }
        for mut c in &round {
            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
            match crate::http_get::read_answer(&mut c) {
                Ok(a) if a.status == 200 => {
                    if let Ok(pid) = String::from_utf8_lossy(&a.body).trim().parse::<i32>() {
                        seen.insert(pid);
                    }
                }
                Ok(_) => return false,
                Err(_) => {}
            }
        }
    }
    seen.len() >= workers
}

/// Exec → the end of the app's import by the venv's `python` (the module imported
/// from bench/apps, then a line on stdout), ms: the interpreter's start and the app's
/// import, which every server pays before its first 200.
fn import_floor(env: &Env, app: &App) -> Result<f64> {
    use std::io::BufRead;
    let module = app.target.split(':').next().unwrap_or(app.target);
    let python = env.venv.join("bin").join("python");
    let t0 = Instant::now();
    let mut child = std::process::Command::new(&python)
        .args([
            "-c",
            &format!("import {module}; print('imported', flush=True)"),
        ])
        .current_dir(&env.apps)
        .env("VIRTUAL_ENV", &env.venv)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", python.display()))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        std::io::BufReader::new(out).read_line(&mut line)?;
    }
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    let status = child.wait()?;
    if !status.success() || line.trim() != "imported" {
        bail!("{} -c 'import {module}' failed: {status}", python.display());
    }
    Ok(ms)
}

/// Fires `n` requests at once, each retrying a refused connect every `retry` until
/// the port accepts: each one's latency from `t0` in ms, `None` when it failed.
fn fire(addr: SocketAddr, t0: Instant, n: usize, retry: Duration) -> Vec<Option<f64>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(move || -> Option<f64> {
                    let mut c = loop {
                        match TcpStream::connect(addr) {
                            Ok(c) => break c,
                            Err(_) if t0.elapsed() < START_TIMEOUT => {
                                std::thread::sleep(retry);
                            }
                            Err(_) => return None,
                        }
                    };
                    c.set_read_timeout(Some(START_TIMEOUT)).ok()?;
                    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .ok()?;
                    let a = crate::http_get::read_answer(&mut c).ok()?;
                    (a.status == 200).then(|| t0.elapsed().as_secs_f64() * 1000.0)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().ok().flatten())
            .collect()
    })
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// One start as a row of coldstart.md's table of every run (also printed as it ends).
fn run_row(s: &Start) -> String {
    format!(
        "| {} | {} | {:.0} | {:.0} | {:.0} / {:.0} / {:.0} | {:.1} / {:.1} | {:.1} | {:.1} |",
        s.run + 1,
        s.server,
        s.first_ok_ms,
        s.all_workers_ms,
        s.burst_p50_ms,
        s.burst_p99_ms,
        s.burst_max_ms,
        s.master_rss_mib,
        s.total_rss_mib,
        s.total_pss_mib,
        s.total_pss_gc_mib
    )
}

/// coldstart.md: medians over the runs per server, and every run.
pub fn render(c: &Coldstart) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "# rwsgi bench: cold start, {}\n", c.date);
    let _ = writeln!(
        out,
        "App `{}`, {} workers, 1 thread each; a burst of {} requests fired at exec time, \
         each retrying a refused connect every {} ms; medians over the runs (servers \
         alternate within each run); load average before: {}.\n",
        c.app, c.workers, c.burst, c.retry_ms, c.loadavg_before
    );
    if !c.import_floor_ms.is_empty() {
        let _ = writeln!(
            out,
            "Import floor (the venv's `python` from exec to the end of `import <app \
             module>`, which no server can beat): {:.0} ms, median of {}.\n",
            median(c.import_floor_ms.iter().copied()),
            c.import_floor_ms.len()
        );
    }
    let _ = writeln!(
        out,
        "| server | exec → first 200 (ms) | exec → all workers (ms) | burst p50 / p99 / max (ms) | burst errors | master RSS (MiB) | total RSS (MiB) | total PSS (MiB) | total PSS after a full gc (MiB) | runs |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let names = server_names(c);
    for name in names {
        let runs: Vec<&Start> = c.starts.iter().filter(|s| s.server == name).collect();
        let m = |f: fn(&Start) -> f64| median(runs.iter().map(|s| f(s)));
        let label = Server::parse(name).map_or(name, |s| s.label());
        let _ = writeln!(
            out,
            "| {label} | {:.0} | {:.0} | {:.0} / {:.0} / {:.0} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            m(|s| s.first_ok_ms),
            m(|s| s.all_workers_ms),
            m(|s| s.burst_p50_ms),
            m(|s| s.burst_p99_ms),
            m(|s| s.burst_max_ms),
            runs.iter().map(|s| s.burst_errors).sum::<usize>(),
            m(|s| s.master_rss_mib),
            m(|s| s.total_rss_mib),
            m(|s| s.total_pss_mib),
            m(|s| s.total_pss_gc_mib),
            runs.len()
        );
    }
    paired(&mut out, c);
    let _ = writeln!(out, "\n## Every run\n");
    let _ = writeln!(
        out,
        "| run | server | first 200 | all workers | burst p50 / p99 / max | master / total RSS | total PSS | PSS after gc |\n|---:|---|---:|---:|---:|---:|---:|---:|"
    );
    for s in &c.starts {
        let _ = writeln!(out, "{}", run_row(s));
    }
    if !c.notes.is_empty() {
        let _ = writeln!(out, "\n## Notes\n");
        for n in &c.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}

/// The servers started, in the order they first ran.
fn server_names(c: &Coldstart) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for s in &c.starts {
        if !names.contains(&s.server.as_str()) {
            names.push(&s.server);
        }
    }
    names
}

/// Each rwsgi variant against each peer, run by run: the machine's pace drifts over a
/// run of several minutes (the import floor alone moves by tens of ms), and the servers
/// of one run start seconds apart, so the difference within a run says more than the
/// difference of two medians taken over different moments.
fn paired(out: &mut String, c: &Coldstart) {
    use std::fmt::Write as _;
    let names = server_names(c);
    let ours: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.starts_with("rwsgi"))
        .collect();
    let peers: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !n.starts_with("rwsgi"))
        .collect();
    if ours.is_empty() || peers.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## Run by run\n\nrwsgi − peer within each run, median over the runs (negative: \
         rwsgi earlier), and the runs in which rwsgi was earlier.\n\n| rwsgi | peer | first 200 \
         (ms) | earlier in | burst p50 (ms) | earlier in |\n|---|---|---:|---:|---:|---:|"
    );
    let label = |n: &str| Server::parse(n).map_or(n.to_string(), |s| s.label().to_string());
    for us in &ours {
        for peer in &peers {
            let pairs: Vec<(&Start, &Start)> = c
                .starts
                .iter()
                .filter(|a| a.server == *us)
                .filter_map(|a| {
                    c.starts
                        .iter()
                        .find(|b| b.server == *peer && b.run == a.run)
                        .map(|b| (a, b))
                })
                .collect();
            if pairs.is_empty() {
                continue;
            }
            let diff = |f: fn(&Start) -> f64| {
                let d: Vec<f64> = pairs.iter().map(|(a, b)| f(a) - f(b)).collect();
                let earlier = d.iter().filter(|x| **x < 0.0).count();
                (median(d.into_iter()), earlier)
            };
            let (first, first_won) = diff(|s| s.first_ok_ms);
            let (burst, burst_won) = diff(|s| s.burst_p50_ms);
            let n = pairs.len();
            let _ = writeln!(
                out,
                "| {} | {} | {first:+.0} | {first_won} of {n} | {burst:+.0} | {burst_won} of {n} |",
                label(us),
                label(peer)
            );
        }
    }
}

/// Rewrites coldstart.md from a coldstart.json (`coldstart --render JSON`).
pub fn rerender(json: &std::path::Path) -> Result<()> {
    let text =
        std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
    let c: Coldstart =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", json.display()))?;
    let md = json.with_extension("md");
    std::fs::write(&md, render(&c)).with_context(|| format!("writing {}", md.display()))?;
    eprintln!("{}", md.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn renders_medians_per_server() {
        let start = |run, server: &str, first| Start {
            run,
            server: server.into(),
            first_ok_ms: first,
            all_workers_ms: first + 10.0,
            ..Start::default()
        };
        let c = Coldstart {
            app: "django".into(),
            workers: 2,
            burst: 100,
            retry_ms: 10,
            import_floor_ms: vec![120.0, 140.0, 130.0],
            starts: vec![
                start(0, "rwsgi", 300.0),
                start(1, "rwsgi", 500.0),
                start(2, "rwsgi", 400.0),
                start(0, "uwsgi", 600.0),
            ],
            ..Coldstart::default()
        };
        let md = render(&c);
        assert!(md.contains("| rwsgi | 400 | 410 |"), "{md}");
        assert!(md.contains("every 10 ms"), "{md}");
        assert!(
            md.contains("no server can beat): 130 ms, median of 3"),
            "{md}"
        );
        assert!(md.contains("| uWSGI | 600 | 610 |"), "{md}");
        // Run 0 is the only run both started: rwsgi 300 vs uWSGI 600.
        assert!(md.contains("| rwsgi | uWSGI | -300 | 1 of 1 |"), "{md}");
    }
}
