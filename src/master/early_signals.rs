//! The master's signals before its event loop handles them.
//!
//! From the moment the configuration is valid until the supervisor installs its
//! handlers, the master runs the `on_starting` hook, forks the `--preload` process and
//! builds its runtime: a TERM there would kill it with the default action (exit by
//! signal, the `--preload` process killed with it) instead of stopping it cleanly.
//! [`hold`] installs a handler that only notes which signals came; [`replay`], once the
//! supervisor's handlers exist, sends the noted ones again, to the supervisor. A
//! handler, unlike a blocked mask, is not inherited across `exec`: a subprocess of the
//! `on_starting` hook starts with the default actions.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The signals the supervisor handles (`supervisor.rs`, `Signals`).
const HELD: [libc::c_int; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

/// One bit per signal number that arrived while held.
static NOTED: AtomicU64 = AtomicU64::new(0);
/// Whether the handler still notes: the supervisor's handlers may call it after
/// theirs (a handler that was there before them is chained), and must not note again.
static HOLDING: AtomicBool = AtomicBool::new(false);

extern "C" fn note(sig: libc::c_int) {
    // Only atomics: async-signal-safe.
    if HOLDING.load(Ordering::Acquire) && (0..64).contains(&sig) {
        NOTED.fetch_or(1 << sig, Ordering::AcqRel);
    }
}

/// Notes the supervisor's signals from now on instead of dying of them. Call once,
/// in the master, before anything that takes time.
pub fn hold() {
    HOLDING.store(true, Ordering::Release);
    for sig in HELD {
        // SAFETY: `note` only touches atomics; the struct is zeroed then filled.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = note as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// In a child forked while held (the `--preload` process): the default actions back,
/// before it does anything else.
pub fn release_in_child() {
    for sig in HELD {
        // SAFETY: SIG_DFL installs no code; async-signal-safe.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// Once the supervisor's handlers are installed: stops noting and sends this process
/// every signal that came while held, in the order of [`HELD`] (a TERM before a HUP).
pub fn replay() {
    if !HOLDING.swap(false, Ordering::AcqRel) {
        return;
    }
    let noted = NOTED.swap(0, Ordering::AcqRel);
    for sig in HELD {
        if noted & (1 << sig) != 0 {
            tracing::debug!(
                signal = sig,
                "a signal that came during start-up, handled now"
            );
            // SAFETY: kill on our own pid.
            unsafe {
                libc::kill(libc::getpid(), sig);
            }
        }
    }
}
