//! gunicorn compatibility: every setting of gunicorn's `KNOWN_SETTINGS` is accepted
//! under every spelling gunicorn accepts, and means what [`table::SETTINGS`] says.
//!
//! - [`command`] teaches clap those spellings: a setting rwsgi shares becomes aliases
//!   of rwsgi's own option, any other setting a hidden option of its own, so that the
//!   environment and file layers of [`crate::config::sources`] take it like any other.
//! - [`Values`] holds the raw values of the settings rwsgi does not share, and
//!   [`Gunicorn::from_values`] validates them once: refusals fail the start, ignored
//!   and not-yet-implemented settings give one log line each ([`Gunicorn::notes`]).

pub mod table;

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Arg, ArgAction, Command};

use super::ConfigError;
pub use table::{Kind, Setting, Treat, SETTINGS};

/// Raw values of the gunicorn settings that are not rwsgi options, by gunicorn name
/// (`preload_app`); a set flag has the value `true`, a config-file hook its repr.
pub type Values = BTreeMap<String, Vec<String>>;

/// The setting with this gunicorn name or config-file key (`preload_app`,
/// `preload-app`).
pub fn setting(key: &str) -> Option<&'static Setting> {
    let key = key.replace('-', "_");
    SETTINGS.iter().find(|s| s.name == key)
}

/// The rwsgi option (long name, or `app`) a gunicorn config-file key stands for.
pub fn rwsgi_option(key: &str) -> Option<&'static str> {
    match setting(key)?.treat {
        Treat::Same(long, _) => Some(long),
        _ => None,
    }
}

/// The name clap knows a setting by when rwsgi has no option for it: its first long
/// flag without dashes (`preload`), or `None` for config-file-only settings.
pub fn own_long(s: &Setting) -> Option<&'static str> {
    s.flags.iter().find_map(|f| f.strip_prefix("--"))
}

/// How a setting is shown to users: its first long flag, else its name.
pub fn display_name(s: &Setting) -> String {
    s.flags
        .iter()
        .find(|f| f.starts_with("--"))
        .map_or_else(|| s.name.to_string(), |f| f.to_string())
}

/// `cmd` (rwsgi's [`crate::cli::Cli`]) with every gunicorn spelling.
pub fn command(mut cmd: Command) -> Command {
    for s in SETTINGS {
        match s.treat {
            Treat::Same(long, _) => {
                for flag in s.flags {
                    cmd = cmd.mut_args(|a| {
                        if a.get_long() == Some(long) {
                            add_spelling(a, flag)
                        } else {
                            a
                        }
                    });
                }
            }
            _ => {
                let Some(long) = own_long(s) else { continue };
                let mut arg = Arg::new(s.name)
                    .long(long)
                    .hide(true)
                    .help(help(s))
                    .action(match s.kind {
                        Kind::Flag => ArgAction::SetTrue,
                        Kind::List => ArgAction::Append,
                        _ => ArgAction::Set,
                    });
                if s.kind != Kind::Flag {
                    arg = arg.value_name("VALUE").allow_hyphen_values(false);
                }
                if s.name == "proxy_protocol" {
                    // gunicorn's `nargs="?"`: the bare flag means auto.
                    arg = arg.num_args(0..=1).default_missing_value("auto");
                }
                for flag in s.flags {
                    arg = add_spelling(arg, flag);
                }
                cmd = cmd.arg(arg);
            }
        }
    }
    cmd
}

fn add_spelling(arg: Arg, flag: &'static str) -> Arg {
    if let Some(long) = flag.strip_prefix("--") {
        let known = arg.get_long() == Some(long)
            || arg.get_all_aliases().is_some_and(|a| a.contains(&long));
        if known {
            arg
        } else {
            arg.visible_alias(long)
        }
    } else if let Some(c) = flag.strip_prefix('-').and_then(|c| c.chars().next()) {
        match arg.get_short() {
            None => arg.short(c),
            Some(have) if have == c => arg,
            Some(_) => arg.short_alias(c),
        }
    } else {
        arg
    }
}

fn help(s: &Setting) -> String {
    match s.treat {
        Treat::Same(..) => String::new(),
        Treat::Implemented(what) => format!("gunicorn's {}: {what}", s.name),
        Treat::Ignored(why) => format!("gunicorn's {}: no effect in rwsgi ({why})", s.name),
        Treat::Planned(what) => format!("gunicorn's {}: {what}", s.name),
        Treat::Refused(why) => format!("gunicorn's {}: refused ({why})", s.name),
    }
}

// ===== Validation =====

/// The PROXY protocol, as gunicorn's `--proxy-protocol` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    Off,
    V1,
    V2,
    /// Either version, detected per connection.
    Auto,
}

/// TLS settings with gunicorn's meaning (`--certfile` …), checked for shape here and
/// for content by the TLS layer that serves them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    /// CA bundle to verify client certificates against.
    pub ca_certs: Option<PathBuf>,
    /// gunicorn's `ssl.VerifyMode`: 0 none, 1 optional, 2 required.
    pub cert_reqs: u8,
    /// OpenSSL cipher string, as gunicorn passes it to `ssl`.
    pub ciphers: Option<String>,
    pub ssl_version: Option<String>,
    /// The rustls configuration the settings above make, loaded and checked once
    /// (`None`: TLS is off).
    pub server: Option<super::tls::ServerTls>,
}

/// gunicorn settings that another part of rwsgi implements, validated here with
/// gunicorn's meaning. A field that is set but not implemented yet is reported by
/// [`Gunicorn::notes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gunicorn {
    /// `-D/--daemon`: the master detaches (fork, setsid) before it starts anything.
    pub daemon: bool,
    /// `-R/--enable-stdio-inheritance`: a daemon keeps stdio instead of /dev/null.
    pub enable_stdio_inheritance: bool,
    /// `--reload`: restart workers when a source file changes (development).
    pub reload: bool,
    /// `--reload-extra-file`: more files (or globs) that trigger a reload.
    pub reload_extra_files: Vec<String>,
    /// `--user`: name or uid the workers switch to after the master has bound.
    pub user: Option<String>,
    /// `--group`: name or gid, likewise.
    pub group: Option<String>,
    /// `--umask`: the process umask (gunicorn's default 0).
    pub umask: Option<u32>,
    /// `--initgroups`: also take the user's supplementary groups.
    pub initgroups: bool,
    /// `-n/--name`: the base of the process titles (`gunicorn` style `master [NAME]`).
    pub proc_name: Option<String>,
    pub tls: Tls,
    /// `--proxy-protocol`.
    pub proxy_protocol: ProxyProtocol,
    /// `--proxy-allow-from`: peers allowed to send a PROXY header (gunicorn's default
    /// 127.0.0.1,::1).
    pub proxy_allow: crate::tracker::TrustedPeers,
    /// Server hooks the config file defines (gunicorn names); their callables are in
    /// [`crate::config::pyfile::namespace`] (an import string from a TOML file is in
    /// [`Values`] as given).
    pub hooks: Vec<String>,
    /// One line per gunicorn setting given that does nothing (yet) in rwsgi.
    notes: Vec<String>,
}

impl Gunicorn {
    /// Validates `values`; a refused setting fails with its message.
    pub fn from_values(values: &Values) -> Result<Gunicorn, ConfigError> {
        let one = |name: &str| values.get(name).and_then(|v| v.last()).cloned();
        let flag = |name: &str| values.contains_key(name);
        let mut notes = Vec::new();
        let mut hooks = Vec::new();
        for (name, vals) in values {
            let Some(s) = setting(name) else { continue };
            let shown = display_name(s);
            if s.kind == Kind::Hook && matches!(s.treat, Treat::Planned(_) | Treat::Implemented(_))
            {
                hooks.push(s.name.to_string());
            }
            match s.treat {
                Treat::Same(..) | Treat::Implemented(_) => {}
                Treat::Refused(why) => {
                    if accepted_default(s, vals) {
                        continue;
                    }
                    return Err(ConfigError(format!(
                        "{shown} (gunicorn's {}): {why}",
                        s.name
                    )));
                }
                Treat::Ignored(why) => notes.push(format!(
                    "{shown}: gunicorn's {} has no effect in rwsgi: {why}",
                    s.name
                )),
                Treat::Planned(what) => {
                    notes.push(format!(
                        "{shown}: gunicorn's {} is accepted but has no effect yet: this \
                         build does not implement {what}",
                        s.name
                    ));
                }
            }
        }
        let umask = match one("umask") {
            None => None,
            Some(v) => Some(auto_int(&v).filter(|m| *m <= 0o777).ok_or_else(|| {
                ConfigError(format!(
                    "--umask {v}: expected a mask like 0o022, 0x12 or 18 (at most 0o777)"
                ))
            })?),
        };
        let proxy_protocol = match one("proxy_protocol").as_deref().map(str::trim) {
            None => ProxyProtocol::Off,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "false" | "off" | "0" | "none" => ProxyProtocol::Off,
                "true" | "auto" | "1" => ProxyProtocol::Auto,
                "v1" => ProxyProtocol::V1,
                "v2" => ProxyProtocol::V2,
                _ => {
                    return Err(ConfigError(format!(
                        "--proxy-protocol {v}: expected off, v1, v2 or auto"
                    )))
                }
            },
        };
        let proxy_allow = crate::tracker::TrustedPeers::parse(
            one("proxy_allow_ips").as_deref().unwrap_or("127.0.0.1,::1"),
        )
        .map_err(|e| ConfigError(format!("--proxy-allow-from: {e}")))?;
        let cert_reqs = match one("cert_reqs") {
            None => 0,
            Some(v) => v
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= 2)
                .ok_or_else(|| {
                    ConfigError(format!(
                        "--cert-reqs {v}: expected 0 (none), 1 (optional) or 2 (required)"
                    ))
                })?,
        };
        let path = |name: &str| one(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let mut tls = Tls {
            certfile: path("certfile"),
            keyfile: path("keyfile"),
            ca_certs: path("ca_certs"),
            cert_reqs,
            ciphers: one("ciphers"),
            ssl_version: one("ssl_version"),
            server: None,
        };
        tls.server = super::tls::load(&tls)?;
        for (option, id) in [("--user", "user"), ("--group", "group")] {
            if one(id).is_some_and(|v| v.trim().is_empty()) {
                return Err(ConfigError(format!("{option}: empty name")));
            }
        }
        Ok(Gunicorn {
            daemon: flag("daemon"),
            enable_stdio_inheritance: flag("enable_stdio_inheritance"),
            reload: flag("reload"),
            reload_extra_files: values
                .get("reload_extra_files")
                .cloned()
                .unwrap_or_default(),
            user: one("user"),
            group: one("group"),
            umask,
            initgroups: flag("initgroups"),
            proc_name: one("proc_name").or_else(|| one("default_proc_name")),
            tls,
            proxy_protocol,
            proxy_allow,
            hooks,
            notes,
        })
    }

    /// One line for each gunicorn setting given that does nothing in rwsgi (yet),
    /// for the master to log once at start.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }
}

/// A refused setting given its gunicorn default (`--protocol http`, `daemon = False`)
/// asks for what rwsgi does anyway.
fn accepted_default(s: &Setting, vals: &[String]) -> bool {
    match s.name {
        "protocol" => vals
            .last()
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("http")),
        _ => vals.is_empty(),
    }
}

/// The table as JSON lines, for `rwsgi --gunicorn-settings` (the docs generator
/// reads it): name, flags, kind, treatment, the rwsgi option and the note.
pub fn table_json() -> String {
    let mut out = String::new();
    for s in SETTINGS {
        let (treatment, option, note) = match s.treat {
            Treat::Same(long, note) => ("same", long, note),
            Treat::Implemented(what) => ("implemented", "", what),
            Treat::Ignored(why) => ("ignored", "", why),
            Treat::Planned(what) => ("planned", "", what),
            Treat::Refused(why) => ("refused", "", why),
        };
        let kind = match s.kind {
            Kind::Flag => "flag",
            Kind::Value => "value",
            Kind::List => "list",
            Kind::Hook => "hook",
            Kind::FileOnly => "file-only",
        };
        out.push_str(
            &serde_json::json!({
                "name": s.name,
                "flags": s.flags,
                "kind": kind,
                "treatment": treatment,
                "option": option,
                "note": note,
            })
            .to_string(),
        );
        out.push('\n');
    }
    out
}

/// gunicorn's `auto_int`: `0o22`, `0x12`, `0b10010` or decimal; a leading `0` alone
/// (`022`) is octal too, as umasks are written.
fn auto_int(v: &str) -> Option<u32> {
    let v = v.trim();
    let lower = v.to_ascii_lowercase();
    if let Some(o) = lower.strip_prefix("0o") {
        u32::from_str_radix(o, 8).ok()
    } else if let Some(x) = lower.strip_prefix("0x") {
        u32::from_str_radix(x, 16).ok()
    } else if let Some(b) = lower.strip_prefix("0b") {
        u32::from_str_radix(b, 2).ok()
    } else if lower.len() > 1 && lower.starts_with('0') {
        u32::from_str_radix(&lower[1..], 8).ok()
    } else {
        lower.parse().ok()
    }
}

/// What `-k/--worker-class` asks for, checked: `Ok(Some(note))` for the classes that
/// mean rwsgi's own worker, an error naming the alternative for the others.
pub fn worker_class(value: &str) -> Result<Option<String>, ConfigError> {
    let v = value.trim();
    let lower = v.to_ascii_lowercase();
    let base = lower.rsplit(['.', ':']).next().unwrap_or(&lower);
    let ours = [
        "sync",
        "gthread",
        "gunicorn.workers.sync.syncworker",
        "gunicorn.workers.gthread.threadworker",
    ];
    if ours.contains(&lower.as_str()) || base == "syncworker" || base == "threadworker" {
        return Ok(Some(format!(
            "--worker-class {v}: rwsgi has one worker kind (Python threads fed by tokio; \
             --threads sets how many), which serves this class's apps as gunicorn does"
        )));
    }
    let green = ["gevent", "eventlet", "tornado"];
    if green.iter().any(|g| lower.contains(g)) {
        return Err(ConfigError(format!(
            "--worker-class {v}: rwsgi has no {} worker: the app's monkey-patched \
             concurrency would silently run on plain threads. Use --threads N for \
             concurrency, or keep gunicorn with this worker class",
            green
                .iter()
                .find(|g| lower.contains(*g))
                .unwrap_or(&"green")
        )));
    }
    if lower.contains("uvicorn") || lower.contains("asgi") || lower.contains("hypercorn") {
        return Err(ConfigError(format!(
            "--worker-class {v}: this is an ASGI worker; rwsgi serves WSGI apps only. \
             Run the ASGI app with uvicorn, hypercorn or granian"
        )));
    }
    Err(ConfigError(format!(
        "--worker-class {v}: unknown worker class; rwsgi accepts sync and gthread \
         (both mean its own threaded worker)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_has_one_row_and_every_flag_one_owner() {
        let mut names = std::collections::BTreeSet::new();
        let mut flags = std::collections::BTreeSet::new();
        for s in SETTINGS {
            assert!(names.insert(s.name), "{} twice", s.name);
            for f in s.flags {
                assert!(flags.insert(*f), "{f} twice");
            }
        }
        assert_eq!(SETTINGS.len(), 120);
    }

    #[test]
    fn umask_reads_like_gunicorn() {
        assert_eq!(auto_int("0o022"), Some(0o22));
        assert_eq!(auto_int("022"), Some(0o22));
        assert_eq!(auto_int("18"), Some(18));
        assert_eq!(auto_int("0x12"), Some(18));
        assert_eq!(auto_int("0"), Some(0));
        assert_eq!(auto_int("x"), None);
    }

    #[test]
    fn worker_classes() {
        for ok in ["sync", "gthread", "gunicorn.workers.gthread.ThreadWorker"] {
            assert!(worker_class(ok).unwrap().is_some(), "{ok}");
        }
        for bad in [
            "gevent",
            "eventlet",
            "tornado",
            "uvicorn.workers.UvicornWorker",
        ] {
            let e = worker_class(bad).unwrap_err();
            assert!(e.0.starts_with("--worker-class"), "{e}");
        }
    }

    #[test]
    fn refusals_name_the_flag_and_notes_name_the_setting() {
        let mut v = Values::new();
        v.insert("worker_tmp_dir".into(), vec!["/dev/shm".into()]);
        v.insert("protocol".into(), vec!["http".into()]);
        let g = Gunicorn::from_values(&v).unwrap();
        assert_eq!(g.notes().len(), 1);
        assert!(g.notes()[0].starts_with("--worker-tmp-dir: gunicorn's worker_tmp_dir"));
        v.insert("paste".into(), vec!["app.ini".into()]);
        let e = Gunicorn::from_values(&v).unwrap_err();
        assert!(e.0.starts_with("--paste (gunicorn's paste): "), "{e}");
    }
}
