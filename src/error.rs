//! The one error that ends a process: [`Fatal`], which carries its exit code and
//! says itself once, where `main` returns it. Functions that can end the process
//! return `Result<_, Fatal>` and use `?`; nothing logs an error and then returns a
//! code by hand.
//!
//! Below it, each layer's errors are typed ([`ConfigError`] here, for a value the
//! user must change; `LoadError`, `HookError`, `DecodeError`, `ProxyError`,
//! `SinkError`, `NoRoom` in the modules they come from). The place that ends the
//! process picks the exit code: `.map_err(Fatal::usage)?` and friends.

use std::fmt::Display;
use std::process::ExitCode;

/// Exit codes, as gunicorn uses them.
pub mod exit {
    pub const OK: i32 = 0;
    pub const RUNTIME: i32 = 1;
    pub const USAGE: i32 = 2;
    /// The app (or a worker) failed to boot.
    pub const BOOT: i32 = 3;
}

/// A configuration error: the message names the option (flag, variable or file key)
/// and says what to change. Ends the process with exit 2 where it is found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl From<String> for ConfigError {
    fn from(s: String) -> Self {
        ConfigError(s)
    }
}

impl From<&str> for ConfigError {
    fn from(s: &str) -> Self {
        ConfigError(s.to_owned())
    }
}

/// Why the process ends, and the exit code that says so.
#[derive(Debug)]
pub struct Fatal {
    code: i32,
    how: Say,
}

#[derive(Debug)]
enum Say {
    /// `rwsgi: error: …` on stderr: something the user must change (a flag, a path,
    /// the app), said the same way whether or not logging is set up.
    Stderr(String),
    /// An error in the log, in the span where it happened (a worker's, say).
    Log {
        level: tracing::Level,
        what: &'static str,
        error: String,
        span: tracing::Span,
    },
    /// Already said (clap printed its usage; the supervisor logged why a worker
    /// failed), or nothing to say.
    Said,
}

impl Fatal {
    /// A misconfiguration (exit 2).
    pub fn usage(message: impl Display) -> Fatal {
        Fatal::stderr(exit::USAGE, message)
    }

    /// The app (or the interpreter) could not boot (exit 3).
    pub fn boot(message: impl Display) -> Fatal {
        Fatal::stderr(exit::BOOT, message)
    }

    /// Anything else that stops the process (exit 1).
    pub fn runtime(message: impl Display) -> Fatal {
        Fatal::stderr(exit::RUNTIME, message)
    }

    fn stderr(code: i32, message: impl Display) -> Fatal {
        Fatal {
            code,
            how: Say::Stderr(message.to_string()),
        }
    }

    /// Ends with `code` and nothing more to say.
    pub fn said(code: i32) -> Fatal {
        Fatal {
            code,
            how: Say::Said,
        }
    }

    /// Exit 1 with `what` and `error` logged (at `level`) in the current span.
    pub fn logged(level: tracing::Level, what: &'static str, error: impl Display) -> Fatal {
        Fatal {
            code: exit::RUNTIME,
            how: Say::Log {
                level,
                what,
                error: error.to_string(),
                span: tracing::Span::current(),
            },
        }
    }

    /// The exit code.
    pub fn code(&self) -> i32 {
        self.code
    }

    /// Says why (once), and returns the exit code for `main`.
    pub fn report(self) -> ExitCode {
        match self.how {
            Say::Stderr(message) => eprintln!("rwsgi: error: {message}"),
            Say::Log {
                level,
                what,
                error,
                span,
            } => span.in_scope(|| {
                if level == tracing::Level::DEBUG {
                    tracing::debug!(error = %error, "{what}");
                } else {
                    tracing::error!(error = %error, "{what}");
                }
            }),
            Say::Said => {}
        }
        exit_code(self.code)
    }
}

/// `code` as a process exit code.
pub fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// `.or_log("what failed")?`: a failure that ends the process with exit 1, logged.
pub trait OrLog<T> {
    fn or_log(self, what: &'static str) -> Result<T, Fatal>;
}

impl<T, E: Display> OrLog<T> for Result<T, E> {
    fn or_log(self, what: &'static str) -> Result<T, Fatal> {
        self.map_err(|e| Fatal::logged(tracing::Level::ERROR, what, e))
    }
}
