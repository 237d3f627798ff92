//! The server log: tracing to stderr or `--error-log`, human or JSON lines. The log
//! file can be reopened (USR1) after rotation.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let res = match cfg.format {
        LogFormat::Human => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    res.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
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
