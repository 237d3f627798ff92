//! Settings behind gunicorn's process behaviour that rwsgi's hooks side implements:
//! the Python config file (whose hooks run), `--reload`, `--user/--group/--umask`
//! and `-n/--name`, checked once at start.

use std::path::{Path, PathBuf};

use super::ConfigError;
use crate::cli::HookArgs;

/// The Python config file gunicorn would read: `-c FILE.py`, `-c python:module`, or
/// `./gunicorn.conf.py` when no `-c` is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PythonConfigFile {
    /// An absolute path (resolved against the working directory at start, before
    /// `--chdir`, as gunicorn does).
    Path(PathBuf),
    /// A dotted module name, imported from `sys.path`.
    Module(String),
}

impl PythonConfigFile {
    /// What gunicorn's `-c` accepts as a Python config: `python:NAME`, or a path ending
    /// in `.py`. Anything else is a TOML file (`None`).
    pub fn from_option(value: &Path) -> Option<PythonConfigFile> {
        let text = value.to_string_lossy();
        if let Some(module) = text.strip_prefix("python:") {
            return Some(PythonConfigFile::Module(module.to_string()));
        }
        if value.extension().is_some_and(|e| e == "py") {
            return Some(PythonConfigFile::Path(absolute(value)));
        }
        None
    }

    /// The file named by `-c`, else `./gunicorn.conf.py` if it exists.
    pub fn locate(config_option: Option<&Path>) -> Option<PythonConfigFile> {
        match config_option {
            Some(v) => PythonConfigFile::from_option(v),
            None => {
                let default = absolute(Path::new("gunicorn.conf.py"));
                default.is_file().then_some(PythonConfigFile::Path(default))
            }
        }
    }

    /// For log lines and `server.cfg.config`.
    pub fn describe(&self) -> String {
        match self {
            PythonConfigFile::Path(p) => p.display().to_string(),
            PythonConfigFile::Module(m) => format!("python:{m}"),
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The account workers run as (`--user`, `--group`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// The user's name, for its supplementary groups (`initgroups`); `None` for a
    /// numeric uid with no passwd entry.
    pub name: Option<String>,
}

/// The hooks side's validated settings.
#[derive(Debug, Clone, Default)]
pub struct HooksConfig {
    /// `-n/--name`: `rwsgi: master [NAME]` in `ps`; `None` uses the APP.
    pub proc_name: Option<String>,
    /// `--reload`: replace the workers when a source file changes.
    pub reload: bool,
    /// `--reload-extra-file`: more files to watch (with `--reload`).
    pub reload_extra_files: Vec<PathBuf>,
    /// `--user/--group`: workers switch to this account before importing the app.
    pub user: Option<Owner>,
    /// `--umask`, applied to the master (pid file, unix sockets) and the workers.
    pub umask: Option<u32>,
    /// The Python config file whose hooks run.
    pub python_config: Option<PythonConfigFile>,
}

impl HooksConfig {
    pub fn from_args(args: &HookArgs, config_option: Option<&Path>) -> Result<Self, ConfigError> {
        let user = owner(args.user.as_deref(), args.group.as_deref())?;
        let umask = match &args.umask {
            None => None,
            Some(v) => Some(parse_umask(v)?),
        };
        if !args.reload_extra_file.is_empty() && !args.reload {
            tracing::debug!("--reload-extra-file without --reload: nothing is watched");
        }
        Ok(HooksConfig {
            proc_name: args.name.clone().filter(|n| !n.is_empty()),
            reload: args.reload,
            reload_extra_files: args.reload_extra_file.iter().map(|p| absolute(p)).collect(),
            user,
            umask,
            python_config: PythonConfigFile::locate(config_option),
        })
    }
}

/// gunicorn reads the umask as an integer in any base (`0o22`, `0x12`, `18`), and a
/// leading `0` as octal (`022`).
fn parse_umask(v: &str) -> Result<u32, ConfigError> {
    let t = v.trim();
    let parsed = if let Some(o) = t.strip_prefix("0o").or_else(|| t.strip_prefix("0O")) {
        u32::from_str_radix(o, 8)
    } else if let Some(x) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u32::from_str_radix(x, 16)
    } else if t.len() > 1 && t.starts_with('0') {
        u32::from_str_radix(&t[1..], 8)
    } else {
        t.parse()
    };
    match parsed {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(ConfigError(format!(
            "--umask {v}: expected a file mode mask such as 0o22, 022 or 18"
        ))),
    }
}

fn owner(user: Option<&str>, group: Option<&str>) -> Result<Option<Owner>, ConfigError> {
    use nix::unistd::{Gid, Group, Uid, User};
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let found = match user {
        None => None,
        Some(u) => {
            let by = match u.parse::<u32>() {
                Ok(n) => User::from_uid(Uid::from_raw(n)),
                Err(_) => User::from_name(u),
            };
            match (by, u.parse::<u32>()) {
                (Ok(Some(user)), _) => Some((user.uid.as_raw(), Some(user.gid.as_raw()), Some(user.name))),
                (_, Ok(n)) => Some((n, None, None)),
                _ => {
                    return Err(ConfigError(format!(
                        "--user {u}: no such user on this system (give a name from /etc/passwd or a uid)"
                    )))
                }
            }
        }
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => match Group::from_name(g) {
                Ok(Some(gr)) => gr.gid.as_raw(),
                _ => {
                    return Err(ConfigError(format!(
                        "--group {g}: no such group on this system (give a name from /etc/group or a gid)"
                    )))
                }
            },
        },
        None => found
            .as_ref()
            .and_then(|(_, gid, _)| *gid)
            .unwrap_or_else(|| Gid::current().as_raw()),
    };
    let (uid, name) = match found {
        Some((uid, _, name)) => (uid, name),
        None => (Uid::current().as_raw(), None),
    };
    Ok(Some(Owner { uid, gid, name }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umask_in_gunicorn_bases() {
        assert_eq!(parse_umask("0o22").unwrap(), 0o22);
        assert_eq!(parse_umask("022").unwrap(), 0o22);
        assert_eq!(parse_umask("18").unwrap(), 18);
        assert_eq!(parse_umask("0x12").unwrap(), 0x12);
        assert_eq!(parse_umask("0").unwrap(), 0);
        assert!(parse_umask("0o1000").unwrap_err().0.contains("--umask"));
        assert!(parse_umask("abc").is_err());
    }

    #[test]
    fn python_config_forms() {
        assert_eq!(
            PythonConfigFile::from_option(Path::new("python:conf.gunicorn")),
            Some(PythonConfigFile::Module("conf.gunicorn".into()))
        );
        assert!(matches!(
            PythonConfigFile::from_option(Path::new("gunicorn.conf.py")),
            Some(PythonConfigFile::Path(p)) if p.is_absolute()
        ));
        assert_eq!(PythonConfigFile::from_option(Path::new("rwsgi.toml")), None);
    }

    #[test]
    fn unknown_user_names_the_option() {
        let e = owner(Some("no-such-user-xyz"), None).unwrap_err();
        assert!(e.0.contains("--user no-such-user-xyz"), "{e}");
        let e = owner(None, Some("no-such-group-xyz")).unwrap_err();
        assert!(e.0.contains("--group"), "{e}");
        let nobody = owner(Some("nobody"), None).unwrap().unwrap();
        assert_eq!(nobody.name.as_deref(), Some("nobody"));
    }
}
