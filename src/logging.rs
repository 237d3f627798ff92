//! The server log: tracing to stderr or `--error-log`, human or JSON lines. The log
//! file can be reopened (USR1) after rotation.
//!
//! Every WARN and ERROR line is also counted ([`take_line_counts`]), by the names of
//! gunicorn's statsd counters (`gunicorn.log.warning`, `.error`, `.critical`,
//! `.exception`): a worker sends its counts with each tracker snapshot, the master
//! adds its own, and the statsd sink publishes them. An ERROR line says which of
//! gunicorn's levels it stands for by its target ([`CRITICAL`], [`EXCEPTION`]).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;
use crate::config::LogConfig;

/// The `--error-log` file, reopened in place on USR1.
static FILE: OnceLock<Mutex<(PathBuf, std::fs::File)>> = OnceLock::new();

struct FileWriter;

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match FILE.get().and_then(|m| m.lock().ok()) {
            Some(mut f) => f.1.write(buf),
            None => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match FILE.get().and_then(|m| m.lock().ok()) {
            Some(mut f) => f.1.flush(),
            None => Ok(()),
        }
    }
}

fn open(path: &PathBuf) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Installs the global subscriber. Called once per process, before anything logs.
pub fn init(cfg: &LogConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(format!(
        "{level},hyper=warn,aws_config=warn,aws_smithy_runtime=warn,azure_core=warn,reqwest=warn",
        level = cfg.level
    ))?;
    let writer: tracing_subscriber::fmt::writer::BoxMakeWriter = match &cfg.error_log {
        None => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
        Some(path) => {
            let file =
                open(path).map_err(|e| anyhow::anyhow!("--error-log {}: {e}", path.display()))?;
            let _ = FILE.set(Mutex::new((path.clone(), file)));
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(|| FileWriter)
        }
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(false);
    let fmt = match cfg.format {
        LogFormat::Human => fmt.with_ansi(false).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    // The filter first: only lines that are written get counted.
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(LineCounter)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// The target of an ERROR line that gunicorn logs as critical (`WORKER TIMEOUT`).
pub const CRITICAL: &str = "rwsgi::critical";
/// The target of an ERROR line that gunicorn logs with `log.exception` (the app or
/// a server hook raised; the line carries the traceback).
pub const EXCEPTION: &str = "rwsgi::exception";
/// The app's own `wsgi.errors` writes: gunicorn writes them to the error log's
/// stream without counting them, and so does rwsgi.
pub const WSGI_ERRORS: &str = "wsgi.errors";

static CRITICALS: AtomicU64 = AtomicU64::new(0);
static ERRORS: AtomicU64 = AtomicU64::new(0);
static WARNINGS: AtomicU64 = AtomicU64::new(0);
static EXCEPTIONS: AtomicU64 = AtomicU64::new(0);

/// Counts the WARN and ERROR events that reach the log (see the module docs).
struct LineCounter;

impl<S: Subscriber> Layer<S> for LineCounter {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let counter = match *meta.level() {
            Level::WARN => &WARNINGS,
            Level::ERROR => match meta.target() {
                CRITICAL => &CRITICALS,
                EXCEPTION => &EXCEPTIONS,
                WSGI_ERRORS => return,
                _ => &ERRORS,
            },
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The lines counted since the last call, and a fresh count from zero.
pub fn take_line_counts() -> crate::tracker::LogLines {
    crate::tracker::LogLines {
        critical: CRITICALS.swap(0, Ordering::Relaxed),
        error: ERRORS.swap(0, Ordering::Relaxed),
        warning: WARNINGS.swap(0, Ordering::Relaxed),
        exception: EXCEPTIONS.swap(0, Ordering::Relaxed),
    }
}

/// Reopens `--error-log` (after log rotation). A no-op when logging to stderr.
pub fn reopen() {
    if let Some(m) = FILE.get() {
        if let Ok(mut f) = m.lock() {
            match open(&f.0) {
                Ok(new) => f.1 = new,
                Err(e) => eprintln!("rwsgi: cannot reopen {}: {e}", f.0.display()),
            }
        }
    }
}
