//! `compare`: every selected server on every selected app, rounds alternating the
//! server order, then latest.{json,md,png}.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use super::apps::{self, App};
use super::results::{utc_date, Comparison, Meta, Note, RunRecord};
use super::servers::{Env, Server};
use super::session::{measure, LoadPlan, Measured};
use super::{chart, table};
use crate::cli::CompareArgs;

/// The run's settings after defaults for normal and quick runs.
struct Plan {
    rounds: usize,
    load: LoadPlan,
    apps: Vec<&'static App>,
    servers: Vec<Server>,
}

fn plan(args: &CompareArgs) -> Result<Plan> {
    let (rounds, duration, warmup) = if args.quick {
        (1, 2.0, 0.5)
    } else {
        (3, 8.0, 1.0)
    };
    Ok(Plan {
        rounds: args.rounds.unwrap_or(rounds).max(1),
        load: LoadPlan {
            duration_s: args.duration.unwrap_or(duration),
            warmup_s: args.warmup.unwrap_or(warmup),
            client_threads: args.client_threads.max(1),
            workers: args.workers.max(1),
            wrk: !args.no_wrk,
        },
        apps: apps::select(&args.apps)?,
        servers: Server::select(&args.servers)?,
    })
}

/// The order of servers in round `r`: rotated each round, so that no server always
/// runs first (cold caches) or right after the same neighbour.
pub fn round_order(servers: &[Server], r: usize) -> Vec<Server> {
    let mut v = servers.to_vec();
    if !v.is_empty() {
        let k = r % v.len();
        v.rotate_left(k);
    }
    v
}

/// Runs the comparison and writes the results.
pub fn run(args: &CompareArgs) -> Result<()> {
    let env = Env::from_paths(&args.paths)?;
    let plan = plan(args)?;
    let started = Instant::now();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut c = Comparison {
        meta: Meta {
            date: utc_date(unix),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            workers: plan.load.workers,
            rounds: plan.rounds,
            duration_s: plan.load.duration_s,
            warmup_s: plan.load.warmup_s,
            client_threads: plan.load.client_threads,
            quick: args.quick,
            apps: plan.apps.iter().map(|a| a.name.to_string()).collect(),
            servers: plan.servers.iter().map(|s| s.name().to_string()).collect(),
            loadavg_before: loadavg(),
        },
        ..Comparison::default()
    };

    // Servers that cannot run at all are noted once and skipped.
    let mut skip: BTreeMap<Server, String> = BTreeMap::new();
    for s in &plan.servers {
        if let Some(reason) = s.unavailable(&env) {
            eprintln!("skipping {}: {reason}", s.name());
            skip.insert(*s, reason);
        }
    }
    let runs = plan.rounds * plan.apps.len() * (plan.servers.len() - skip.len());
    eprintln!(
        "{runs} runs of {} s + {} s warm-up; results in {}",
        plan.load.duration_s,
        plan.load.warmup_s,
        env.out.display()
    );

    let mut failed: BTreeMap<(Server, &str), String> = BTreeMap::new();
    for round in 0..plan.rounds {
        for app in &plan.apps {
            for server in round_order(&plan.servers, round) {
                if skip.contains_key(&server) || failed.contains_key(&(server, app.name)) {
                    continue;
                }
                let tag = format!("r{round}");
                eprint!(
                    "[{:>4.0}s] round {} {:<8} {:<17} ",
                    started.elapsed().as_secs_f64(),
                    round + 1,
                    app.name,
                    server.name()
                );
                match measure_quietly(&env, server, app, &plan.load, &tag, args.retry_above) {
                    Ok(m) => {
                        let r = &m.report;
                        let wrk = m
                            .wrk
                            .map_or(String::new(), |w| format!("  wrk {:>9.0} req/s", w.rps));
                        eprintln!(
                            "{:>9.0} req/s{wrk}  p99 {:>7.2} ms  rss {:>5.0} MiB  errors {}  other CPU {:>3.0}%{}",
                            r.rps,
                            r.latency_ms.p99,
                            m.rss_peak_bytes as f64 / 1048576.0,
                            r.errors,
                            m.other_cpu * 100.0,
                            if m.retried { " (retried)" } else { "" }
                        );
                        c.runs.push(RunRecord {
                            round,
                            app: app.name.to_string(),
                            server: server.name().to_string(),
                            rps: r.rps,
                            latency_ms: r.latency_ms,
                            errors: r.errors,
                            errors_by_kind: r.errors_by_kind.clone(),
                            rss_peak_bytes: m.rss_peak_bytes,
                            ready_s: m.ready_s,
                            other_cpu: m.other_cpu,
                            wrk_rps: m.wrk.map(|w| w.rps),
                            wrk_errors: m.wrk.map_or(0, |w| w.errors),
                        });
                    }
                    Err(e) => {
                        let reason = format!("{e:#}");
                        eprintln!("FAILED: {reason}");
                        // A server that does not start is not retried on that app.
                        failed.insert((server, app.name), reason);
                    }
                }
            }
        }
    }
    for (server, reason) in skip {
        c.notes.push(Note {
            server: server.name().into(),
            app: None,
            reason,
        });
    }
    for ((server, app), reason) in failed {
        c.notes.push(Note {
            server: server.name().into(),
            app: Some(app.into()),
            reason: first_line(&reason),
        });
    }
    c.summarise();
    write_outputs(&c, &env.out)?;
    eprintln!(
        "done in {:.0} s: {}",
        started.elapsed().as_secs_f64(),
        env.out.join("latest.md").display()
    );
    Ok(())
}

/// A measurement, and whether it took a second attempt.
struct Quiet {
    inner: Measured,
    retried: bool,
}

impl std::ops::Deref for Quiet {
    type Target = Measured;
    fn deref(&self) -> &Measured {
        &self.inner
    }
}

/// Measures once; if other processes took more than `retry_above` of the machine
/// meanwhile, measures again and keeps the quieter attempt. On a machine shared with
/// other work this removes most of the outliers for the cost of a few extra runs.
fn measure_quietly(
    env: &Env,
    server: Server,
    app: &App,
    load: &LoadPlan,
    tag: &str,
    retry_above: f64,
) -> Result<Quiet> {
    let first = measure(env, server, app, load, tag)?;
    if first.other_cpu <= retry_above {
        return Ok(Quiet {
            inner: first,
            retried: false,
        });
    }
    let second = measure(env, server, app, load, tag)?;
    let inner = if second.other_cpu < first.other_cpu {
        second
    } else {
        first
    };
    Ok(Quiet {
        inner,
        retried: true,
    })
}

/// Writes latest.json, latest.md and latest.png into `out`.
pub fn write_outputs(c: &Comparison, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = out.join("latest.json");
    std::fs::write(&json, serde_json::to_string_pretty(c)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let md = out.join("latest.md");
    std::fs::write(&md, table::render(c)).with_context(|| format!("writing {}", md.display()))?;
    chart::draw(c, &out.join("latest.png"))?;
    Ok(())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

/// The first field of /proc/loadavg.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_rotate_the_server_order() {
        let s = [Server::Rwsgi, Server::Granian, Server::Bjoern];
        assert_eq!(round_order(&s, 0), s.to_vec());
        assert_eq!(
            round_order(&s, 1),
            vec![Server::Granian, Server::Bjoern, Server::Rwsgi]
        );
        assert_eq!(round_order(&s, 3), s.to_vec());
        assert!(round_order(&[], 2).is_empty());
    }
}
