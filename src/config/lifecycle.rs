//! `--health-bind`, `--shutdown-delay` and `--ready-max-server-wait`, validated.

use std::time::Duration;

use super::{secs, ConfigError};
use crate::cli::LifecycleArgs;

/// What the master does for an orchestrator's probes and on TERM.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LifecycleConfig {
    /// Where `/healthz` and `/readyz` are served; `None`: nowhere.
    pub health_bind: Option<String>,
    /// Serving time between TERM (readiness failed) and the start of the drain.
    pub shutdown_delay: Duration,
    /// `/readyz` fails while the last p90 `server_wait` is above this.
    pub ready_max_server_wait: Option<Duration>,
}

impl LifecycleConfig {
    pub fn from_args(a: &LifecycleArgs) -> Result<LifecycleConfig, ConfigError> {
        if let Some(bind) = &a.health_bind {
            crate::notify::check_host_port("--health-bind", bind, true)?;
        }
        let ready_max_server_wait = match a.ready_max_server_wait {
            None => None,
            Some(v) => {
                if a.health_bind.is_none() {
                    return Err(ConfigError(
                        "--ready-max-server-wait needs --health-bind HOST:PORT (it changes what /readyz answers)".into(),
                    ));
                }
                Some(secs("--ready-max-server-wait", v, false)?)
            }
        };
        Ok(LifecycleConfig {
            health_bind: a.health_bind.clone(),
            shutdown_delay: secs("--shutdown-delay", a.shutdown_delay, true)?,
            ready_max_server_wait,
        })
    }
}
