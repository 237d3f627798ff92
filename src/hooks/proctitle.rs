//! `-n/--name`: process titles as gunicorn's (`rwsgi: master [NAME]`,
//! `rwsgi: worker [NAME]`), shown by `ps`, `top` and `/proc/PID/cmdline`.
//!
//! Like setproctitle(3), the title is written over the process's own argument area
//! (its bounds come from `/proc/self/stat`), so it needs no privilege; the thread
//! name (`comm`, 15 bytes) is set too. Rust's `std::env::args` reads that area on
//! every call, so the original arguments are copied first ([`args`]) and the master
//! re-executes workers from the copy.

use std::ffi::OsString;
use std::sync::OnceLock;

static ARGS: OnceLock<Vec<OsString>> = OnceLock::new();

/// The command line as it was at start (before any title was written over it).
pub fn args() -> &'static [OsString] {
    ARGS.get_or_init(|| std::env::args_os().collect())
}

/// Sets this process's title; failures are logged at debug and ignored (a title is
/// cosmetic).
pub fn set(title: &str) {
    let _ = args();
    let comm: Vec<u8> = title
        .bytes()
        .filter(|b| *b != 0)
        .take(15)
        .chain([0])
        .collect();
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, comm.as_ptr() as libc::c_ulong, 0, 0, 0) };
    match arg_area() {
        Some((start, end)) if end > start => {
            let len = end - start;
            let mut bytes = title.as_bytes().to_vec();
            bytes.truncate(len - 1);
            bytes.resize(len, 0);
            // SAFETY: [start, end) is this process's argument area as the kernel
            // reports it: mapped, writable memory that nothing else references now
            // (the arguments were copied by `args()` above).
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), start as *mut u8, len) };
        }
        _ => tracing::debug!("cannot find the argument area; process title unchanged"),
    }
}

/// `arg_start` and `arg_end` (fields 48 and 49 of `/proc/self/stat`).
fn arg_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Field 2 (comm) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let start = fields.get(48 - 3)?.parse().ok()?;
    let end = fields.get(49 - 3)?.parse().ok()?;
    Some((start, end))
}
