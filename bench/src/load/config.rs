//! Turns the raw [`LoadShape`] flags into a validated [`LoadConfig`].

use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hyper::header::HeaderName;

use super::request::{RequestTemplate, StampSpec, Target};
use super::{LoadConfig, Model, Stop};
use crate::cli::LoadShape;
use crate::schedule::Schedule;

/// Seconds as a [`Duration`], refusing negative or non-finite values.
pub fn secs(name: &str, v: f64) -> Result<Duration> {
    if !v.is_finite() || v < 0.0 {
        bail!("--{name} must be a non-negative number of seconds, not {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

impl LoadShape {
    /// Validates the flags for a run against `url`.
    pub fn to_config(&self, url: &str) -> Result<LoadConfig> {
        let target = Target::parse(url)?;
        if self.connections == 0 {
            bail!("--connections must be at least 1");
        }
        if self.threads == 0 {
            bail!("--threads must be at least 1");
        }
        let duration = secs("duration", self.duration)?;
        let warmup = secs("warmup", self.warmup)?;
        let timeout = secs("timeout", self.timeout)?;
        if timeout.is_zero() {
            bail!("--timeout must be more than 0");
        }
        let model = match (self.rate, self.requests) {
            (Some(rate), _) => {
                if !rate.is_finite() || rate <= 0.0 {
                    bail!("--rate must be a positive number of requests per second");
                }
                Model::Open {
                    schedule: Schedule::constant(rate, warmup + duration),
                }
            }
            (None, Some(n)) => Model::Closed {
                stop: Stop::Requests(n),
            },
            (None, None) => Model::Closed {
                stop: Stop::Duration(duration),
            },
        };
        let stamp = match &self.stamp_header {
            Some(name) => Some(StampSpec {
                header: name
                    .parse::<HeaderName>()
                    .with_context(|| format!("invalid --stamp-header {name:?}"))?,
                at: self.stamp_at,
            }),
            None => None,
        };
        let body = Bytes::from(vec![b'x'; self.body_size]);
        let template = RequestTemplate::new(
            &target,
            &self.method,
            &self.headers,
            body,
            !self.no_keep_alive,
            stamp,
        )?;
        Ok(LoadConfig {
            addr: target.addr,
            template,
            model,
            connections: self.connections,
            threads: self.threads,
            warmup,
            timeout,
            keep_alive: !self.no_keep_alive,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        shape: LoadShape,
    }

    fn shape(args: &[&str]) -> LoadShape {
        T::parse_from(std::iter::once("t").chain(args.iter().copied())).shape
    }

    #[test]
    fn rate_selects_the_open_model_over_warmup_plus_duration() {
        let cfg = shape(&["--rate", "100", "-d", "2", "--warmup", "1"])
            .to_config("http://127.0.0.1:1/")
            .unwrap();
        match cfg.model {
            Model::Open { schedule } => {
                assert_eq!(schedule.total_duration(), Duration::from_secs(3));
                assert_eq!(schedule.total_requests(), 300);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requests_select_a_counted_closed_loop() {
        let cfg = shape(&["-n", "10"])
            .to_config("http://127.0.0.1:1/")
            .unwrap();
        assert!(matches!(
            cfg.model,
            Model::Closed {
                stop: Stop::Requests(10)
            }
        ));
    }

    #[test]
    fn refuses_nonsense() {
        let bad = |a: &[&str]| shape(a).to_config("http://127.0.0.1:1/").is_err();
        assert!(bad(&["-c", "0"]));
        assert!(bad(&["--rate", "0"]));
        assert!(bad(&["--duration=-1"]));
        assert!(bad(&["--timeout", "0"]));
        assert!(bad(&["--stamp-header", "bad header"]));
    }
}
