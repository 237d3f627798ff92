//! `--health-bind`, `--shutdown-delay`, `--ready-max-server-wait` and worker scaling
//! (`--min-workers`, `--max-workers`, thresholds), `--set-request-start`, validated.

use std::time::Duration;

use super::{secs, ConfigError};
use crate::cli::LifecycleArgs;

/// What the master does for an orchestrator's probes and on TERM.
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleConfig {
    /// Where `/healthz` and `/readyz` are served; `None`: nowhere.
    pub health_bind: Option<String>,
    /// Serving time between TERM (readiness failed) and the start of the drain.
    pub shutdown_delay: Duration,
    /// `/readyz` fails while the last p90 `server_wait` is above this.
    pub ready_max_server_wait: Option<Duration>,
    /// rwsgi's own worker scaling; `None`: the pool stays at `--workers` (TTIN/TTOU).
    pub scaling: Option<ScalingConfig>,
    /// `--set-request-start`: add `HTTP_X_REQUEST_START` for APM agents.
    pub set_request_start: bool,
}

impl LifecycleConfig {
    pub fn from_args(
        a: &LifecycleArgs,
        scaling: &crate::cli::ScalingArgs,
        apm: &crate::cli::ApmArgs,
        workers: usize,
    ) -> Result<LifecycleConfig, ConfigError> {
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
            scaling: ScalingConfig::from_args(scaling, workers)?,
            set_request_start: apm.set_request_start,
        })
    }
}

/// `--min-workers`/`--max-workers` and the scaler's thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingConfig {
    pub min: usize,
    pub max: usize,
    /// p90 wait above which a worker is added.
    pub up_wait: Duration,
    /// Utilization the remaining workers must stay under for a worker to retire.
    pub down_utilization: f64,
    pub cooldown: Duration,
}

impl ScalingConfig {
    /// `None` without `--min-workers`/`--max-workers`; `workers` is the starting
    /// `--workers`, which must lie within the bounds.
    pub fn from_args(
        a: &crate::cli::ScalingArgs,
        workers: usize,
    ) -> Result<Option<ScalingConfig>, ConfigError> {
        let (min, max) = match (a.min_workers, a.max_workers) {
            (None, None) => return Ok(None),
            (Some(min), Some(max)) => (min, max),
            _ => {
                return Err(ConfigError(
                    "--min-workers and --max-workers go together: give both to let rwsgi scale its workers".into(),
                ))
            }
        };
        if min == 0 || max < min || max > 1024 {
            return Err(ConfigError(format!(
                "--min-workers {min} --max-workers {max}: need 1 <= min <= max <= 1024"
            )));
        }
        if !(min..=max).contains(&workers) {
            return Err(ConfigError(format!(
                "--workers {workers} must lie within --min-workers {min} and --max-workers {max} (it is where scaling starts)"
            )));
        }
        if !(a.scale_down_utilization > 0.0 && a.scale_down_utilization < 1.0) {
            return Err(ConfigError(format!(
                "--scale-down-utilization {}: must be between 0 and 1",
                a.scale_down_utilization
            )));
        }
        Ok(Some(ScalingConfig {
            min,
            max,
            up_wait: secs("--scale-up-wait", a.scale_up_wait, false)?,
            down_utilization: a.scale_down_utilization,
            cooldown: secs("--scale-cooldown", a.scale_cooldown, true)?,
        }))
    }
}
