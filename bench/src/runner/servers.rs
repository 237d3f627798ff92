//! The servers under comparison and the command line that starts each one.
//!
//! Every server gets the same app, the same number of worker processes and, where it
//! has Python threads, the app's thread count. They all run from bench/apps with the
//! bench venv's packages.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

use super::apps::App;

/// One server configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Server {
    /// rwsgi, queue-time tracking off.
    Rwsgi,
    /// rwsgi with `--queue-header` and the prometheus sink: must cost ≤ 2%.
    RwsgiTracker,
    /// rwsgi `--preload`: the app imported once, workers forked (as uWSGI's default).
    RwsgiPreload,
    /// granian `--interface wsgi`.
    Granian,
    /// bjoern, one process per worker sharing the port with SO_REUSEPORT.
    Bjoern,
    /// uWSGI (the `pyuwsgi` wheel) speaking HTTP/1.1 itself, prefork master.
    Uwsgi,
    /// gunicorn's gthread worker.
    GunicornGthread,
    /// gunicorn's sync worker.
    GunicornSync,
}

/// Header the load stamps and the tracker-on run reads.
pub const QUEUE_HEADER: &str = "X-RequestTime";

impl Server {
    /// All servers, in table order.
    pub const ALL: [Server; 8] = [
        Server::Rwsgi,
        Server::RwsgiTracker,
        Server::RwsgiPreload,
        Server::Granian,
        Server::Bjoern,
        Server::Uwsgi,
        Server::GunicornGthread,
        Server::GunicornSync,
    ];

    /// Name on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Server::Rwsgi => "rwsgi",
            Server::RwsgiTracker => "rwsgi-tracker",
            Server::RwsgiPreload => "rwsgi-preload",
            Server::Granian => "granian",
            Server::Bjoern => "bjoern",
            Server::Uwsgi => "uwsgi",
            Server::GunicornGthread => "gunicorn-gthread",
            Server::GunicornSync => "gunicorn-sync",
        }
    }

    /// Name in tables and charts.
    pub fn label(self) -> &'static str {
        match self {
            Server::Rwsgi => "rwsgi",
            Server::RwsgiTracker => "rwsgi +tracker",
            Server::RwsgiPreload => "rwsgi --preload",
            Server::Granian => "granian",
            Server::Bjoern => "bjoern",
            Server::Uwsgi => "uWSGI",
            Server::GunicornGthread => "gunicorn gthread",
            Server::GunicornSync => "gunicorn sync",
        }
    }

    /// Parses a name.
    pub fn parse(name: &str) -> Result<Server> {
        match Server::ALL.iter().find(|s| s.name() == name) {
            Some(s) => Ok(*s),
            None => {
                let names: Vec<&str> = Server::ALL.iter().map(|s| s.name()).collect();
                bail!("unknown server {name:?}; known: {}", names.join(", "))
            }
        }
    }

    /// The servers named (all when none are).
    pub fn select(names: &[String]) -> Result<Vec<Server>> {
        if names.is_empty() {
            return Ok(Server::ALL.to_vec());
        }
        names.iter().map(|n| Server::parse(n.trim())).collect()
    }

    /// Whether the server serves the prometheus metrics the scenario scrapes.
    pub fn has_metrics(self) -> bool {
        self == Server::RwsgiTracker
    }

    /// The program that must exist for this server to run.
    pub fn program(self, env: &Env) -> PathBuf {
        match self {
            Server::Rwsgi | Server::RwsgiTracker | Server::RwsgiPreload => env.rwsgi.clone(),
            Server::Granian => env.venv.join("bin/granian"),
            Server::Bjoern => env.venv.join("bin/python"),
            Server::Uwsgi => env.venv.join("bin/uwsgi"),
            Server::GunicornGthread | Server::GunicornSync => env.venv.join("bin/gunicorn"),
        }
    }

    /// Why this server cannot run here, if it cannot.
    pub fn unavailable(self, env: &Env) -> Option<String> {
        let program = self.program(env);
        if !program.is_file() {
            return Some(match self {
                Server::Rwsgi | Server::RwsgiTracker | Server::RwsgiPreload => format!(
                    "{} is not built (cargo build --release in the repo root)",
                    program.display()
                ),
                _ => format!(
                    "{} is missing (run bench/run.sh to set up the venv)",
                    program.display()
                ),
            });
        }
        if self == Server::Bjoern && !env.venv_has("bjoern") {
            return Some("bjoern is not installed in the venv (it needs libev-dev)".into());
        }
        None
    }

    /// The command that starts this server on `app` at `port`.
    pub fn command(self, env: &Env, app: &App, spec: &Launch) -> Command {
        let bind = format!("127.0.0.1:{}", spec.port);
        let workers = spec.workers.to_string();
        let threads = app.threads.to_string();
        let apps = env.apps.display().to_string();
        let mut cmd = Command::new(self.program(env));
        match self {
            Server::Rwsgi | Server::RwsgiTracker | Server::RwsgiPreload => {
                cmd.args([
                    "--bind",
                    &bind,
                    "--workers",
                    &workers,
                    "--threads",
                    &threads,
                ]);
                cmd.args(["--chdir", &apps, "--log-level", "warning"]);
                if self == Server::RwsgiPreload {
                    cmd.arg("--preload");
                }
                if self == Server::RwsgiTracker {
                    let metrics = format!("127.0.0.1:{}", spec.metrics_port.unwrap_or(0));
                    cmd.args(["--queue-header", QUEUE_HEADER, "--notify", "prometheus"]);
                    cmd.args(["--metrics-bind", &metrics]);
                    cmd.args(["--notify-interval", &spec.notify_interval.to_string()]);
                }
                cmd.arg(app.target);
            }
            Server::Granian => {
                cmd.args(["--interface", "wsgi", "--host", "127.0.0.1"]);
                cmd.args(["--port", &spec.port.to_string(), "--workers", &workers]);
                cmd.args(["--blocking-threads", &threads, "--http", "1", "--no-ws"]);
                cmd.args(["--log-level", "warning", "--working-dir", &apps]);
                cmd.arg(app.target);
            }
            Server::Bjoern => {
                cmd.arg(env.apps.join("bjoern_serve.py"));
                cmd.args(["--workers", &workers, "--port", &spec.port.to_string()]);
                cmd.arg(app.target);
            }
            Server::Uwsgi => {
                // uWSGI's docs: `--http-socket` when a proxy is in front (the
                // `--http` router would add a process hop); its HTTP/1.1 form keeps
                // connections alive as every other server here does (the plain one
                // closes each after one answer). The master imports the app once and
                // forks (the default, no `--lazy-apps`); `--need-app` exits on a failed
                // import instead of serving 500s; `--die-on-term` makes SIGTERM stop
                // it (uWSGI 2.0 reloads on TERM); `--disable-logging` drops the
                // per-request log line, which the others do not write either.
                cmd.args(["--http11-socket", &bind, "--master"]);
                cmd.args(["--processes", &workers, "--threads", &threads]);
                cmd.args(["--need-app", "--die-on-term", "--disable-logging"]);
                cmd.args(["--listen", "1024", "--chdir", &apps, "--module"]);
                cmd.arg(app.target);
            }
            Server::GunicornGthread | Server::GunicornSync => {
                cmd.args(["--bind", &bind, "--workers", &workers]);
                if self == Server::GunicornGthread {
                    cmd.args(["--worker-class", "gthread", "--threads", &threads]);
                } else {
                    cmd.args(["--worker-class", "sync"]);
                }
                cmd.args([
                    "--chdir",
                    &apps,
                    "--log-level",
                    "warning",
                    "--backlog",
                    "2048",
                ]);
                cmd.arg(app.target);
            }
        }
        cmd.current_dir(&env.apps);
        cmd.env("VIRTUAL_ENV", &env.venv);
        cmd.env("PYTHONPATH", &env.apps);
        cmd.env("PYTHONDONTWRITEBYTECODE", "1");
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![env.venv.join("bin")];
        paths.extend(std::env::split_paths(&path));
        if let Ok(joined) = std::env::join_paths(paths) {
            cmd.env("PATH", joined);
        }
        cmd
    }
}

/// Per-launch settings.
#[derive(Debug, Clone, Copy)]
pub struct Launch {
    /// Port to serve on.
    pub port: u16,
    /// Port for rwsgi's /metrics (tracker-on runs).
    pub metrics_port: Option<u16>,
    /// Worker processes.
    pub workers: usize,
    /// rwsgi's --notify-interval, seconds.
    pub notify_interval: f64,
}

/// Where things are.
#[derive(Debug, Clone)]
pub struct Env {
    /// bench/apps.
    pub apps: PathBuf,
    /// The venv with the peers.
    pub venv: PathBuf,
    /// The rwsgi binary.
    pub rwsgi: PathBuf,
    /// Where results go.
    pub out: PathBuf,
}

impl Env {
    /// Resolves the paths from the flags, finding the repository root from the
    /// current directory when not given.
    pub fn from_paths(p: &crate::cli::Paths) -> Result<Env> {
        let root = match &p.root {
            Some(r) => r.clone(),
            None => find_root(&std::env::current_dir()?)?,
        };
        let root = root.canonicalize().unwrap_or(root);
        Ok(Env {
            apps: root.join("bench/apps"),
            venv: p.venv.clone().unwrap_or_else(|| root.join("bench/.venv")),
            rwsgi: p
                .rwsgi
                .clone()
                .unwrap_or_else(|| root.join("target/release/rwsgi")),
            out: p.out.clone().unwrap_or_else(|| root.join("bench/results")),
        })
    }

    /// Whether the venv has a top-level package or module of this name.
    pub fn venv_has(&self, module: &str) -> bool {
        let Ok(libs) = std::fs::read_dir(self.venv.join("lib")) else {
            return false;
        };
        libs.flatten().any(|py| {
            let site = py.path().join("site-packages");
            site.join(module).is_dir()
                || std::fs::read_dir(&site).is_ok_and(|mut d| {
                    d.any(|e| {
                        e.is_ok_and(|e| {
                            let n = e.file_name();
                            let n = n.to_string_lossy();
                            n.starts_with(&format!("{module}."))
                                || n.starts_with(&format!("_{module}."))
                        })
                    })
                })
        })
    }
}

fn find_root(start: &Path) -> Result<PathBuf> {
    let mut dir = Some(start);
    while let Some(d) = dir {
        if d.join("bench/apps").is_dir() {
            return Ok(d.to_path_buf());
        }
        dir = d.parent();
    }
    bail!(
        "no bench/apps above {}: run from the repository or pass --root",
        start.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::apps;

    fn env() -> Env {
        Env {
            apps: "/r/bench/apps".into(),
            venv: "/r/bench/.venv".into(),
            rwsgi: "/r/target/release/rwsgi".into(),
            out: "/r/bench/results".into(),
        }
    }

    fn args(s: Server) -> Vec<String> {
        let launch = Launch {
            port: 9000,
            metrics_port: Some(9001),
            workers: 2,
            notify_interval: 1.0,
        };
        let app = apps::find("sleep").unwrap();
        s.command(&env(), app, &launch)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn names_round_trip() {
        for s in Server::ALL {
            assert_eq!(Server::parse(s.name()).unwrap(), s);
        }
        assert!(Server::parse("nginx").is_err());
    }

    #[test]
    fn rwsgi_gets_the_gunicorn_like_cli_and_the_tracker_flags() {
        let a = args(Server::Rwsgi).join(" ");
        assert!(
            a.starts_with("--bind 127.0.0.1:9000 --workers 2 --threads 32"),
            "{a}"
        );
        assert!(a.ends_with("sleep:app"));
        assert!(!a.contains("--queue-header"));
        let t = args(Server::RwsgiTracker).join(" ");
        assert!(
            t.contains("--queue-header X-RequestTime --notify prometheus"),
            "{t}"
        );
        assert!(t.contains("--metrics-bind 127.0.0.1:9001"), "{t}");
    }

    #[test]
    fn peers_get_the_same_workers_and_threads() {
        let g = args(Server::Granian).join(" ");
        assert!(
            g.contains("--workers 2") && g.contains("--blocking-threads 32"),
            "{g}"
        );
        let t = args(Server::GunicornGthread).join(" ");
        assert!(
            t.contains("--workers 2") && t.contains("gthread --threads 32"),
            "{t}"
        );
        let s = args(Server::GunicornSync).join(" ");
        assert!(
            s.contains("--worker-class sync") && !s.contains("--threads"),
            "{s}"
        );
        let u = args(Server::Uwsgi).join(" ");
        assert!(
            u.starts_with("--http11-socket 127.0.0.1:9000 --master --processes 2 --threads 32"),
            "{u}"
        );
        assert!(u.ends_with("--module sleep:app"), "{u}");
        let b = args(Server::Bjoern).join(" ");
        assert!(
            b.contains("bjoern_serve.py --workers 2 --port 9000 sleep:app"),
            "{b}"
        );
    }
}
