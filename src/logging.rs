//! The server log: tracing to stderr or `--error-log`, human or JSON lines.

use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;
use crate::config::LogConfig;

/// Installs the global subscriber. Called once per process, before anything logs.
pub fn init(cfg: &LogConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(format!(
        "{level},hyper=warn,aws_config=warn,aws_smithy_runtime=warn,azure_core=warn,reqwest=warn",
        level = cfg.level
    ))?;
    let writer: tracing_subscriber::fmt::writer::BoxMakeWriter = match &cfg.error_log {
        None => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("--error-log {}: {e}", path.display()))?;
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(Mutex::new(file))
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
