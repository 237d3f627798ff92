//! `--user/--group/--umask`: the master binds (it may need root for port 80) and
//! stays as it started, so it can bind again and signal every worker; each worker
//! switches to the configured account before it imports the app, as gunicorn's do.

use crate::config::hooks::Owner;
use crate::error::ConfigError;

/// Applies `--umask` to this process (children inherit it).
pub fn apply_umask(mask: Option<u32>) {
    if let Some(m) = mask {
        // SAFETY: umask has no preconditions.
        unsafe { libc::umask(m as libc::mode_t) };
    }
}

/// Switches this process to `owner`: supplementary groups, then group, then user (in
/// that order: after setuid the others are no longer allowed). The supplementary
/// groups are the user's from the group database with `--initgroups` (gunicorn's
/// `os.initgroups`), else the primary group alone: gunicorn then leaves the master's
/// list in place (root's groups, in a worker that dropped root), which rwsgi does
/// not. `Err` names what failed; the worker then refuses to boot rather than run as
/// root.
pub fn drop_to(owner: &Owner) -> Result<(), ConfigError> {
    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
    let gid = Gid::from_raw(owner.gid);
    let uid = Uid::from_raw(owner.uid);
    if Uid::effective() == uid && Gid::effective() == gid {
        return Ok(());
    }
    let groups = match &owner.name {
        Some(name) if owner.initgroups => {
            let c = std::ffi::CString::new(name.as_str())
                .map_err(|_| ConfigError(format!("--user {name}: the name contains NUL")))?;
            nix::unistd::getgrouplist(&c, gid).unwrap_or_else(|_| vec![gid])
        }
        // A uid without a passwd entry has no groups to look up (gunicorn skips
        // initgroups for it too).
        _ => vec![gid],
    };
    setgroups(&groups)
        .map_err(|e| ConfigError(format!("--user/--group: cannot set groups: {e}")))?;
    setgid(gid).map_err(|e| ConfigError(format!("--group {}: cannot switch: {e}", owner.gid)))?;
    setuid(uid).map_err(|e| ConfigError(format!("--user {}: cannot switch: {e}", owner.uid)))?;
    Ok(())
}
