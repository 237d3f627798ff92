//! `vs-wrk`: is the generator fast enough? wrk and this generator load the same
//! server, alternately, with the same threads and connections; the ratio of medians
//! must be ≥ 0.9, or every comparison made with the generator is suspect.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::{LoadShape, VsWrkArgs};
use crate::load::request::StampAt;
use crate::report::LoadReport;
use crate::runner::apps;
use crate::runner::process::{free_port, Running};
use crate::runner::results::median;
use crate::runner::servers::{Env, Server};
use crate::runner::session;
use crate::wrk;

/// The comparison for one server.
#[derive(Debug, Clone, Serialize)]
pub struct VsWrkRow {
    pub server: String,
    pub wrk_rps: Vec<f64>,
    pub gen_rps: Vec<f64>,
    pub wrk_median: f64,
    pub gen_median: f64,
    /// generator ÷ wrk.
    pub ratio: f64,
    pub gen_errors: u64,
    pub wrk_errors: u64,
    /// CPU µs per request, median over rounds: what each client costs the machine
    /// (both share the cores with the server), insensitive to other load.
    pub wrk_cpu_us_per_req: f64,
    pub gen_cpu_us_per_req: f64,
}

/// Runs the comparison, prints it, writes results/vs-wrk.{md,json}.
pub fn run(args: &VsWrkArgs) -> Result<()> {
    let env = Env::from_paths(&args.paths)?;
    let secs = args.duration.ceil().max(1.0) as u64;
    let mut rows = Vec::new();
    for name in &args.servers {
        eprintln!("== {name}");
        let row = match one_server(&env, args, name, secs) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("skipping {name}: {e:#}");
                continue;
            }
        };
        eprintln!(
            "{name}: wrk {:.0} req/s, generator {:.0} req/s, ratio {:.3}; CPU µs/request wrk {:.1}, generator {:.1}",
            row.wrk_median, row.gen_median, row.ratio, row.wrk_cpu_us_per_req, row.gen_cpu_us_per_req
        );
        rows.push(row);
    }
    let md = render(&rows, args, secs);
    print!("{md}");
    std::fs::create_dir_all(&env.out)?;
    std::fs::write(env.out.join("vs-wrk.md"), &md)?;
    std::fs::write(
        env.out.join("vs-wrk.json"),
        serde_json::to_string_pretty(&rows)?,
    )?;
    Ok(())
}

fn one_server(env: &Env, args: &VsWrkArgs, name: &str, secs: u64) -> Result<VsWrkRow> {
    // Keep whichever server we start alive for all rounds.
    let (addr, _guard): (SocketAddr, Box<dyn std::any::Any>) = if name == "hello" {
        let port = free_port()?;
        let exe = std::env::current_exe().context("finding this binary")?;
        let mut cmd = Command::new(exe);
        cmd.args([
            "serve-hello",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--threads",
            &args.hello_threads.to_string(),
        ]);
        let mut r = Running::spawn(cmd, &env.out.join("tmp/vs-wrk-hello.log"))?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        r.wait_ready(addr, Duration::from_secs(10))?;
        (addr, Box::new(StopOnDrop(Some(r))))
    } else {
        let server = Server::parse(name)?;
        if let Some(why) = server.unavailable(env) {
            anyhow::bail!("{why}");
        }
        let app = apps::find("hello")?;
        let s = session::start(env, server, app, args.workers, 10.0, "vs-wrk")?;
        (s.addr, Box::new(s))
    };
    let url = format!("http://{addr}/");
    let shape = LoadShape {
        connections: args.connections,
        threads: args.threads,
        duration: secs as f64,
        requests: None,
        rate: None,
        warmup: 0.0,
        timeout: 10.0,
        no_keep_alive: false,
        method: "GET".into(),
        body_size: 0,
        headers: Vec::new(),
        stamp_header: None,
        stamp_at: StampAt::Sent,
    };
    let cfg = shape.to_config(&url)?;
    // A short warm-up so the first measurement does not pay for cold caches.
    let _ = wrk::run(&url, args.threads, args.connections, 1);
    let mut row = VsWrkRow {
        server: name.to_string(),
        wrk_rps: Vec::new(),
        gen_rps: Vec::new(),
        wrk_median: 0.0,
        gen_median: 0.0,
        ratio: 0.0,
        gen_errors: 0,
        wrk_errors: 0,
        wrk_cpu_us_per_req: 0.0,
        gen_cpu_us_per_req: 0.0,
    };
    let (mut wrk_cpu, mut gen_cpu) = (Vec::new(), Vec::new());
    let per_req = |cpu_s: f64, n: u64| if n > 0 { cpu_s * 1e6 / n as f64 } else { 0.0 };
    for round in 0..args.rounds.max(1) {
        // Alternate which goes first, so neither always gets the warmer server.
        for first_wrk in [round % 2 == 0, round % 2 == 1] {
            if first_wrk {
                let w = wrk::run(&url, args.threads, args.connections, secs)?;
                eprintln!("  round {} wrk       {:>9.0} req/s", round + 1, w.rps);
                row.wrk_rps.push(w.rps);
                row.wrk_errors += w.errors;
                wrk_cpu.push(per_req(w.cpu_s, w.requests));
            } else {
                let before = crate::cpu::self_cpu_s();
                let o = crate::load::run(&cfg)?;
                let cpu = crate::cpu::self_cpu_s() - before;
                gen_cpu.push(per_req(cpu, o.stats.ok + o.stats.errors.total()));
                let r = LoadReport::from_outcome(&o);
                eprintln!("  round {} generator {:>9.0} req/s", round + 1, r.rps);
                row.gen_rps.push(r.rps);
                row.gen_errors += r.errors;
            }
        }
    }
    row.wrk_cpu_us_per_req = median(wrk_cpu.into_iter());
    row.gen_cpu_us_per_req = median(gen_cpu.into_iter());
    row.wrk_median = median(row.wrk_rps.iter().copied());
    row.gen_median = median(row.gen_rps.iter().copied());
    row.ratio = if row.wrk_median > 0.0 {
        row.gen_median / row.wrk_median
    } else {
        0.0
    };
    Ok(row)
}

struct StopOnDrop(Option<Running>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            r.stop(Duration::from_secs(5));
        }
    }
}

fn render(rows: &[VsWrkRow], args: &VsWrkArgs, secs: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Generator vs wrk\n\n{} threads, {} connections, {} s per run, median of {} \
         alternating rounds, keep-alive, GET /. Load average before: {}.\n",
        args.threads,
        args.connections,
        secs,
        args.rounds,
        crate::runner::compare::loadavg()
    );
    let _ = writeln!(
        out,
        "| server | wrk req/s | generator req/s | generator ÷ wrk | CPU µs/request wrk | CPU µs/request generator |\n|---|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} {} | {:.1} | {:.1} |",
            r.server,
            crate::runner::table::thousands(r.wrk_median),
            crate::runner::table::thousands(r.gen_median),
            r.ratio,
            if r.ratio >= 0.9 { "✅" } else { "❌" },
            r.wrk_cpu_us_per_req,
            r.gen_cpu_us_per_req
        );
    }
    out
}
