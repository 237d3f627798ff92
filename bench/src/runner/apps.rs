//! The apps of the comparison (bench/apps/*.py) and the load each one gets.
//!
//! Every server runs the same module with the same load; only `threads` differs by
//! app, because it is what an operator would pick: one Python thread for CPU-bound
//! apps (more only fight over the GIL), many for the I/O-bound sleep app.

use anyhow::{bail, Result};

/// One app of the comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    /// Short name used on the command line, in JSON and in the table.
    pub name: &'static str,
    /// What the table calls it.
    pub title: &'static str,
    /// `module:callable` inside bench/apps.
    pub target: &'static str,
    /// Client connections.
    pub connections: usize,
    /// HTTP method.
    pub method: &'static str,
    /// Request body size (the upload test).
    pub body_size: usize,
    /// Python threads per worker for servers that have them.
    pub threads: usize,
}

const MIB: usize = 1024 * 1024;

/// All apps, in table order.
pub const ALL: &[App] = &[
    App {
        name: "hello",
        title: "hello world",
        target: "hello:app",
        connections: 64,
        method: "GET",
        body_size: 0,
        threads: 1,
    },
    App {
        name: "flask",
        title: "Flask JSON",
        target: "flask_app:app",
        connections: 64,
        method: "GET",
        body_size: 0,
        threads: 1,
    },
    App {
        name: "django",
        title: "Django template",
        target: "django_app:application",
        connections: 64,
        method: "GET",
        body_size: 0,
        threads: 1,
    },
    App {
        name: "bytes1m",
        title: "1 MiB response",
        target: "bytes1m:app",
        connections: 16,
        method: "GET",
        body_size: 0,
        threads: 1,
    },
    App {
        name: "upload1m",
        title: "1 MiB upload",
        target: "upload:app",
        connections: 16,
        method: "POST",
        body_size: MIB,
        threads: 1,
    },
    App {
        name: "sleep",
        title: "sleep 10 ms",
        target: "sleep:app",
        connections: 128,
        method: "GET",
        body_size: 0,
        threads: 32,
    },
];

/// Looks an app up by name.
pub fn find(name: &str) -> Result<&'static App> {
    match ALL.iter().find(|a| a.name == name) {
        Some(a) => Ok(a),
        None => {
            let names: Vec<&str> = ALL.iter().map(|a| a.name).collect();
            bail!("unknown app {name:?}; known: {}", names.join(", "))
        }
    }
}

/// The apps named (all when none are).
pub fn select(names: &[String]) -> Result<Vec<&'static App>> {
    if names.is_empty() {
        return Ok(ALL.iter().collect());
    }
    names.iter().map(|n| find(n.trim())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_by_name_and_refuses_unknown_ones() {
        assert_eq!(select(&[]).unwrap().len(), ALL.len());
        let s = select(&["sleep".into(), "hello".into()]).unwrap();
        assert_eq!(s[0].name, "sleep");
        assert_eq!(s[1].name, "hello");
        assert!(select(&["nope".into()]).is_err());
    }

    #[test]
    fn every_target_names_a_file_in_bench_apps() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("apps");
        for a in ALL {
            let module = a.target.split(':').next().unwrap();
            assert!(dir.join(format!("{module}.py")).is_file(), "{}", a.target);
        }
    }
}
