//! Settings behind gunicorn's process behaviour that rwsgi's hooks side implements:
//! the Python config file (whose hooks run), `--reload`, `--user/--group/--umask`
//! and `-n/--name`, checked once at start.

use std::path::{Path, PathBuf};

use super::gunicorn::Gunicorn;
use super::ConfigError;

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
    /// `--initgroups`: the worker also takes the user's supplementary groups from
    /// the group database (gunicorn's `os.initgroups`); otherwise it keeps only its
    /// primary group (`gid`).
    pub initgroups: bool,
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
    /// The Python config file whose hooks run (as named, for `server.cfg.config` and
    /// log lines), when one was evaluated: its namespace is
    /// [`crate::config::pyfile::namespace`].
    pub python_config: Option<String>,
}

impl HooksConfig {
    /// From gunicorn's settings, validated once by [`Gunicorn::from_values`];
    /// `config_option` is the `-c` value, if any.
    pub fn from_gunicorn(g: &Gunicorn, config_option: Option<&Path>) -> Result<Self, ConfigError> {
        let mut user = owner(g.user.as_deref(), g.group.as_deref())?;
        match &mut user {
            Some(o) => o.initgroups = g.initgroups,
            None if g.initgroups => {
                tracing::info!(
                    "--initgroups without --user/--group: workers keep the master's groups"
                )
            }
            None => {}
        }
        if !g.reload_extra_files.is_empty() && !g.reload {
            tracing::debug!("--reload-extra-file without --reload: nothing is watched");
        }
        let python_config = crate::config::pyfile::in_use().then(|| match config_option {
            Some(p) => p.display().to_string(),
            None => crate::config::pyfile::DEFAULT_FILE.to_string(),
        });
        Ok(HooksConfig {
            proc_name: g.proc_name.clone().filter(|n| !n.is_empty()),
            reload: g.reload,
            reload_extra_files: g
                .reload_extra_files
                .iter()
                .map(|p| absolute(Path::new(p)))
                .collect(),
            user,
            umask: g.umask,
            python_config,
        })
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
    Ok(Some(Owner {
        uid,
        gid,
        name,
        initgroups: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

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
