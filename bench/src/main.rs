//! `rwsgi-bench`: parse the command line, run one mode, map errors to an exit code.
//!
//! # Layout
//!
//! - [`cli`]: the subcommands and their flags.
//! - [`load`]: the generator (hyper client, closed loop and open model), its
//!   per-thread [`load::stats`] and the request template.
//! - [`schedule`]: due times of the open model, constant or stepped.
//! - [`stamp`]: nginx `$msec` stamps, so the generator stands in for the proxy.
//! - [`report`]: a run's summary, human and JSON.
//! - [`hello`]: the plain hyper server used as the fastest reference.
//! - [`http_get`]: a blocking GET for readiness probes and metrics scrapes.
//! - [`font`]: the TrueType font the PNGs are drawn with.
//! - [`cpu`]: CPU time from getrusage, to compare clients' cost per request.
//! - [`wrk`]: running wrk and reading its numbers; [`vs_wrk`] the comparison.
//! - [`runner`]: the peers, the apps, process control, medians, table and chart.
//! - [`scenario`]: the autoscaling ramp and its plot.
//! - [`autoscale`]: the closed loop, the HPA rule scaling rwsgi on queue time vs CPU.

mod autoscale;
mod cli;
mod cpu;
mod font;
mod hello;
mod http_get;
mod load;
mod report;
mod runner;
mod scenario;
mod schedule;
mod stamp;
mod vs_wrk;
mod wrk;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use cli::{Cli, Command};

/// hyper allocates a handful of small objects per request (header maps, channels);
/// mimalloc makes those cheaper than glibc's malloc, which keeps the generator's CPU
/// per request at wrk's level (see `vs-wrk`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rwsgi-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Load(args) => {
            let cfg = args.shape.to_config(&args.url)?;
            let outcome = load::run(&cfg)?;
            let report = report::LoadReport::from_outcome(&outcome);
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.human());
            }
            Ok(())
        }
        Command::ServeHello(args) => {
            let addr = args
                .bind
                .parse()
                .with_context(|| format!("invalid --bind {:?}", args.bind))?;
            hello::serve(addr, args.threads)
        }
        Command::VsWrk(args) => vs_wrk::run(&args),
        Command::Compare(args) => runner::compare::run(&args),
        Command::Coldstart(args) => runner::coldstart::run(&args),
        Command::Scenario(args) => scenario::run(&args),
        Command::Autoscale(args) => autoscale::run(&args),
        Command::Render(args) => {
            let env = runner::servers::Env::from_paths(&args.paths)?;
            let path = args.json.unwrap_or_else(|| env.out.join("latest.json"));
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut c: runner::results::Comparison = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            c.summarise();
            let out = path.parent().map_or(env.out.clone(), |p| p.to_path_buf());
            runner::compare::write_outputs(&c, &out)
        }
    }
}
