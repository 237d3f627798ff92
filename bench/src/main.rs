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
//! - [`wrk`]: running wrk and reading its numbers; [`vs_wrk`] the comparison.
//! - [`runner`]: the peers, the apps, process control, medians, table and chart.
//! - [`scenario`]: the autoscaling ramp and its plot.

mod cli;
mod hello;
mod load;
mod report;
mod schedule;
mod stamp;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use cli::{Cli, Command};

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
        _ => anyhow::bail!("not yet"),
    }
}
