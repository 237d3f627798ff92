//! latest.md: the comparison as markdown tables, with the ratios and the issue's
//! targets checked.

use std::fmt::Write as _;

use super::apps;
use super::results::Comparison;
use super::servers::Server;

/// A target from the issue: rwsgi ÷ `peer` on `apps` must reach `min`.
struct Target {
    apps: &'static [&'static str],
    peer: Server,
    min: f64,
}

const TARGETS: &[Target] = &[
    Target {
        apps: &["hello"],
        peer: Server::Granian,
        min: 1.3,
    },
    Target {
        apps: &["hello", "flask", "django"],
        peer: Server::Bjoern,
        min: 1.0,
    },
    Target {
        apps: &["flask", "django"],
        peer: Server::Uwsgi,
        min: 1.0,
    },
    Target {
        apps: &["flask", "django"],
        peer: Server::Granian,
        min: 1.1,
    },
    Target {
        apps: &["flask", "django"],
        peer: Server::GunicornGthread,
        min: 3.0,
    },
    Target {
        apps: &["bytes1m", "upload1m"],
        peer: Server::Granian,
        min: 1.0,
    },
];

/// Tracker on ÷ off must reach this.
const TRACKER_MIN: f64 = 0.98;

fn title(app: &str) -> &str {
    apps::find(app).map(|a| a.title).unwrap_or(app)
}

fn label(server: &str) -> &str {
    Server::parse(server).map(|s| s.label()).unwrap_or(server)
}

/// Thousands separators for req/s.
pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn check(v: Option<f64>, min: f64) -> String {
    match v {
        Some(v) if v >= min => format!("{v:.2}× ✅"),
        Some(v) => format!("{v:.2}× ❌"),
        None => "—".into(),
    }
}

/// `generator× / wrk×`, or the generator's alone when wrk did not run.
fn both(generator: Option<f64>, wrk: Option<f64>) -> String {
    match (generator, wrk) {
        (Some(g), Some(w)) => format!("{g:.2}× / {w:.2}×"),
        (Some(g), None) => format!("{g:.2}×"),
        (None, Some(w)) => format!("— / {w:.2}×"),
        (None, None) => "—".into(),
    }
}

/// A target checked under both generators: met only when every measurement that
/// exists reaches `min`.
fn check_both(generator: Option<f64>, wrk: Option<f64>, min: f64) -> String {
    if generator.is_none() && wrk.is_none() {
        return "—".into();
    }
    let met = generator.into_iter().chain(wrk).all(|v| v >= min);
    format!("{} {}", both(generator, wrk), if met { "✅" } else { "❌" })
}

/// rwsgi's peak RSS against the smallest of the peers that have a master or threads
/// (all but bjoern), and how far above bjoern it is.
fn rss_check(c: &Comparison, app: &str) -> String {
    let Some(ours) = c.cell(app, "rwsgi").map(|x| x.rss_mib) else {
        return "—".into();
    };
    let lowest = c
        .cells
        .iter()
        .filter(|x| x.app == app && !x.server.starts_with("rwsgi") && x.server != "bjoern")
        .min_by(|a, b| a.rss_mib.total_cmp(&b.rss_mib));
    let mut s = match lowest {
        Some(p) => format!(
            "{ours:.0} vs {} {:.0} MiB {}",
            label(&p.server),
            p.rss_mib,
            if ours <= p.rss_mib { "✅" } else { "❌" }
        ),
        None => format!("{ours:.0} MiB"),
    };
    if let Some(b) = c.cell(app, "bjoern") {
        let _ = write!(
            s,
            "; bjoern {:.0} MiB ({:+.0})",
            b.rss_mib,
            ours - b.rss_mib
        );
    }
    s
}

/// Renders the whole report.
pub fn render(c: &Comparison) -> String {
    let m = &c.meta;
    let mut out = String::new();
    let _ = writeln!(out, "# rwsgi bench: {}\n", m.date);
    let _ = writeln!(
        out,
        "{} cores shared by servers and load generator · {} worker processes per server · \
         median of {} round(s) · {} s measured after {} s warm-up · {} generator threads{} · \
         load average before: {}\n",
        m.cores,
        m.workers,
        m.rounds,
        m.duration_s,
        m.warmup_s,
        m.client_threads,
        if m.quick { " · **quick run**" } else { "" },
        m.loadavg_before
    );

    if !c.runs.is_empty() {
        let (med, max) = c.noise();
        let _ = writeln!(
            out,
            "CPU used by other processes during the loads (share of all cores): median {:.0}%, \
             max {:.0}%.{}\n",
            med * 100.0,
            max * 100.0,
            if med > 0.10 {
                " **The machine was busy with other work: treat the numbers as rough.**"
            } else {
                ""
            }
        );
    }

    let servers: Vec<&str> = m
        .servers
        .iter()
        .map(String::as_str)
        .filter(|s| c.cells.iter().any(|x| x.server == *s))
        .collect();
    let header = |out: &mut String, first: &str| {
        let _ = write!(out, "| {first} |");
        for s in &servers {
            let _ = write!(out, " {} |", label(s));
        }
        let _ = write!(out, "\n|---|");
        for _ in &servers {
            let _ = write!(out, "---:|");
        }
        out.push('\n');
    };
    let table = |out: &mut String, heading: &str, f: &dyn Fn(&super::results::Cell) -> String| {
        let _ = writeln!(out, "## {heading}\n");
        header(out, "app");
        for app in &m.apps {
            let _ = write!(out, "| {} |", title(app));
            for s in &servers {
                let v = c.cell(app, s).map(f).unwrap_or_else(|| "—".into());
                let _ = write!(out, " {v} |");
            }
            out.push('\n');
        }
        out.push('\n');
    };
    let with_wrk = c.cells.iter().any(|x| x.wrk_rps.is_some());
    table(
        &mut out,
        if with_wrk {
            "Throughput (req/s, median: generator / wrk)"
        } else {
            "Throughput (req/s, median)"
        },
        &|x| match x.wrk_rps {
            Some(w) => format!("{} / {}", thousands(x.rps), thousands(w)),
            None => thousands(x.rps),
        },
    );

    // Ratios: rwsgi against every peer that ran, plus tracker on ÷ off.
    let peers: Vec<&str> = servers
        .iter()
        .copied()
        .filter(|s| !s.starts_with("rwsgi"))
        .collect();
    let _ = writeln!(
        out,
        "## rwsgi ÷ peer (req/s{})\n",
        if with_wrk { ", generator / wrk" } else { "" }
    );
    let _ = write!(out, "| app |");
    for p in &peers {
        let _ = write!(out, " ÷ {} |", label(p));
    }
    let _ = write!(out, " tracker on ÷ off |\n|---|");
    for _ in 0..=peers.len() {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    for app in &m.apps {
        let _ = write!(out, "| {} |", title(app));
        for p in &peers {
            let v = both(c.ratio(app, "rwsgi", p), c.ratio_wrk(app, "rwsgi", p));
            let _ = write!(out, " {v} |");
        }
        let v = both(
            c.ratio(app, "rwsgi-tracker", "rwsgi"),
            c.ratio_wrk(app, "rwsgi-tracker", "rwsgi"),
        );
        let _ = writeln!(out, " {v} |");
    }
    out.push('\n');

    table(
        &mut out,
        "Spread over the rounds (req/s, min – max)",
        &|x| format!("{} – {}", thousands(x.rps_min), thousands(x.rps_max)),
    );
    table(&mut out, "Latency p99 (ms, median)", &|x| {
        format!("{:.1}", x.p99_ms)
    });
    table(
        &mut out,
        "Peak RSS of all server processes (MiB, median)",
        &|x| format!("{:.0}", x.rss_mib),
    );

    let _ = writeln!(out, "## Targets (issues 6 and 16)\n");
    if with_wrk {
        let _ = writeln!(
            out,
            "Measured as generator / wrk; a target is met (✅) only when it holds under both.\n"
        );
    }
    let _ = writeln!(out, "| app | target | measured |\n|---|---|---:|");
    for t in TARGETS {
        for app in t.apps {
            let _ = writeln!(
                out,
                "| {} | rwsgi ≥ {:.1}× {} | {} |",
                title(app),
                t.min,
                t.peer.label(),
                check_both(
                    c.ratio(app, "rwsgi", t.peer.name()),
                    c.ratio_wrk(app, "rwsgi", t.peer.name()),
                    t.min
                )
            );
        }
    }
    for app in &m.apps {
        let _ = writeln!(
            out,
            "| {} | tracker on ≥ {TRACKER_MIN}× off | {} |",
            title(app),
            check(c.ratio(app, "rwsgi-tracker", "rwsgi"), TRACKER_MIN)
        );
    }
    for app in &m.apps {
        let _ = writeln!(
            out,
            "| {} | RSS rwsgi ≤ every peer but bjoern | {} |",
            title(app),
            rss_check(c, app)
        );
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "The tracker rows compare two medians of rounds that each move by about ±10% on \
         a shared machine (see the spread table), so they cannot resolve a 2% effect. \
         `bench/run.sh callgrind` measures it without that noise: instructions per \
         request with the tracker on and off, and the share of CPU time they make up.\n"
    );

    let with_errors: Vec<String> = c
        .cells
        .iter()
        .filter(|x| x.errors > 0)
        .map(|x| format!("{} on {}: {}", label(&x.server), title(&x.app), x.errors))
        .collect();
    if !with_errors.is_empty() {
        let _ = writeln!(out, "## Errors (summed over rounds)\n");
        for e in with_errors {
            let _ = writeln!(out, "- {e}");
        }
        out.push('\n');
    }
    if !c.notes.is_empty() {
        let _ = writeln!(out, "## Notes\n");
        for n in &c.notes {
            match &n.app {
                Some(app) => {
                    let _ = writeln!(
                        out,
                        "- {} on {}: {}",
                        label(&n.server),
                        title(app),
                        n.reason
                    );
                }
                None => {
                    let _ = writeln!(out, "- {}: {}", label(&n.server), n.reason);
                }
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::results::{Cell, Meta, Note};

    fn cell(app: &str, server: &str, rps: f64) -> Cell {
        Cell {
            app: app.into(),
            server: server.into(),
            rounds: 3,
            rps,
            p99_ms: 1.25,
            rss_mib: 40.0,
            ..Cell::default()
        }
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1234.0), "1,234");
        assert_eq!(thousands(1234567.8), "1,234,568");
    }

    #[test]
    fn renders_medians_ratios_targets_and_notes() {
        let c = Comparison {
            meta: Meta {
                date: "2026-11-01 10:00".into(),
                apps: vec!["hello".into(), "flask".into()],
                servers: Server::ALL.iter().map(|s| s.name().to_string()).collect(),
                ..Meta::default()
            },
            notes: vec![Note {
                server: "bjoern".into(),
                app: None,
                reason: "not installed".into(),
            }],
            runs: vec![],
            cells: vec![
                cell("hello", "rwsgi", 130_000.0),
                cell("hello", "rwsgi-tracker", 128_000.0),
                cell("hello", "granian", 100_000.0),
                cell("flask", "granian", 16_000.0),
            ],
        };
        let md = render(&c);
        assert!(
            md.contains("| app | rwsgi | rwsgi +tracker | granian |\n"),
            "{md}"
        );
        assert!(
            md.contains("| hello world | 130,000 | 128,000 | 100,000 |"),
            "{md}"
        );
        assert!(md.contains("| Flask JSON | — | — | 16,000 |"), "{md}");
        assert!(md.contains("| hello world | 1.30× | 0.98× |"), "{md}");
        let mut w = c.clone();
        for x in &mut w.cells {
            x.wrk_rps = Some(x.rps * if x.server == "rwsgi" { 1.2 } else { 1.0 });
        }
        let md_w = render(&w);
        assert!(
            md_w.contains(
                "| hello world | 130,000 / 156,000 | 128,000 / 128,000 | 100,000 / 100,000 |"
            ),
            "{md_w}"
        );
        assert!(
            md_w.contains("| hello world | rwsgi ≥ 1.3× granian | 1.30× / 1.56× ✅ |"),
            "{md_w}"
        );
        w.cells[0].rps = 120_000.0;
        assert!(
            render(&w).contains("| hello world | rwsgi ≥ 1.3× granian | 1.20× / 1.56× ❌ |"),
            "a target is met only under both generators"
        );
        assert!(
            md.contains("| hello world | rwsgi ≥ 1.3× granian | 1.30× ✅ |"),
            "{md}"
        );
        assert!(
            md.contains("| Flask JSON | rwsgi ≥ 1.1× granian | — |"),
            "{md}"
        );
        assert!(
            md.contains("| hello world | tracker on ≥ 0.98× off | 0.98× ✅ |"),
            "{md}"
        );
        assert!(md.contains("- bjoern: not installed"), "{md}");
        assert!(md.contains("## Spread over the rounds"), "{md}");
        // bjoern never ran, so it has no column.
        assert!(!md.contains("| bjoern |"), "{md}");
    }
}
