//! Platform detection: Heroku, Render, Fly.io, Cloud Run, ECS and Railway, told apart
//! by the environment variables each platform sets in every container.
//!
//! On these platforms the router is not on localhost, so with the defaults every stamp
//! is `untrusted` and every `X-Forwarded-*` ignored, and the metric stays empty.
//! Detection fills the options nobody set (on the command line, in `RWSGI_*` or in the
//! config file): the stamp header where the router sends one, and the peers trusted
//! for stamps and forwarded headers. An explicit option always wins. The stamp's unit
//! needs no option: the tracker tells seconds, ms, µs and ns apart by magnitude.

use std::collections::HashMap;

use super::sources::{Source, Sources};
use crate::cli::Cli;

/// Private IPv4 ranges: where an AWS load balancer in the task's VPC connects from.
const VPC_RANGES: &str = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16";

/// One platform's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Platform {
    pub name: &'static str,
    /// The variable whose presence identified it.
    pub marker: &'static str,
    /// The router's queue stamp and its unit, if it sends one.
    pub stamp: Option<(&'static str, &'static str)>,
    /// Peers to trust for stamps and `X-Forwarded-*`, and why.
    pub trusted: &'static str,
    pub trusted_why: &'static str,
}

/// In detection order: the first whose marker is set wins.
const PLATFORMS: &[Platform] = &[
    Platform {
        name: "Heroku",
        marker: "DYNO",
        stamp: Some(("X-Request-Start", "milliseconds")),
        trusted: "*",
        trusted_why: "a dyno is reached only through the router",
    },
    Platform {
        name: "Render",
        marker: "RENDER_SERVICE_ID",
        stamp: Some(("X-Request-Start", "nanoseconds")),
        trusted: "*",
        trusted_why: "a service is reached only through Render's proxy",
    },
    Platform {
        name: "Fly.io",
        marker: "FLY_APP_NAME",
        stamp: None,
        trusted: "*",
        trusted_why: "a machine's public traffic comes through Fly's proxy",
    },
    Platform {
        name: "Cloud Run",
        marker: "K_SERVICE",
        stamp: None,
        trusted: "*",
        trusted_why: "a container is reached only through Google's front end",
    },
    Platform {
        name: "ECS",
        marker: "ECS_CONTAINER_METADATA_URI_V4",
        stamp: None,
        trusted: VPC_RANGES,
        trusted_why: "the load balancer connects from the VPC's private ranges",
    },
    Platform {
        name: "Railway",
        marker: "RAILWAY_ENVIRONMENT_NAME",
        stamp: None,
        trusted: "*",
        trusted_why: "a service is reached only through Railway's proxy",
    },
];

/// The platform the environment names, if any.
pub fn detect(env: &HashMap<String, String>) -> Option<&'static Platform> {
    PLATFORMS
        .iter()
        .find(|p| env.get(p.marker).is_some_and(|v| !v.is_empty()))
}

fn explicit(sources: &Sources, option: &str) -> Option<String> {
    sources
        .get(option)
        .filter(|o| o.source != Source::Default)
        .map(|_| format!("--{option} {}", sources.describe(option)))
}

/// This process's environment variables that are valid UTF-8, for [`apply`].
pub fn process_env() -> HashMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Fills the options nobody set from the detected platform, and returns the start-up
/// line that says what was detected and what was applied (`None`: no platform).
pub fn apply(cli: &mut Cli, sources: &Sources, env: &HashMap<String, String>) -> Option<String> {
    let p = detect(env)?;
    let mut applied = Vec::new();
    let mut kept = Vec::new();
    match (p.stamp, explicit(sources, "queue-header")) {
        (_, Some(given)) => kept.push(given),
        (Some((header, unit)), None) => {
            cli.tracker.queue_header = Some(header.to_owned());
            applied.push(format!("queue stamp {header} ({unit})"));
        }
        (None, None) => applied
            .push("no router stamp: server_wait (the wait inside rwsgi) is the signal".to_owned()),
    }
    let who = if p.trusted == "*" {
        "any peer"
    } else {
        p.trusted
    };
    for (option, what) in [
        ("queue-header-trusted-from", "stamps"),
        ("forwarded-allow-ips", "X-Forwarded-*"),
    ] {
        if let Some(given) = explicit(sources, option) {
            kept.push(given);
            continue;
        }
        if option == "forwarded-allow-ips" {
            cli.server.forwarded_allow_ips = Some(p.trusted.to_owned());
        } else {
            cli.tracker.queue_header_trusted_from = Some(p.trusted.to_owned());
        }
        applied.push(format!("{what} trusted from {who}"));
    }
    let mut line = format!(
        "Platform: {} ({} is set): {} ({})",
        p.name,
        p.marker,
        applied.join(", "),
        p.trusted_why
    );
    if !kept.is_empty() {
        line.push_str(&format!("; explicit options kept: {}", kept.join(", ")));
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parsed(args: &[&str], vars: &[(&str, &str)]) -> (Cli, Sources) {
        let mut argv: Vec<std::ffi::OsString> = vec!["rwsgi".into()];
        argv.extend(args.iter().map(|a| a.into()));
        argv.push("app:application".into());
        let vars = vars.iter().map(|(k, v)| (k.into(), v.into())).collect();
        crate::config::sources::parse_layered(argv, &vars).expect("parses")
    }

    #[test]
    fn each_platform_is_told_by_its_marker() {
        let cases = [
            ("DYNO", "Heroku"),
            ("RENDER_SERVICE_ID", "Render"),
            ("FLY_APP_NAME", "Fly.io"),
            ("K_SERVICE", "Cloud Run"),
            ("ECS_CONTAINER_METADATA_URI_V4", "ECS"),
            ("RAILWAY_ENVIRONMENT_NAME", "Railway"),
        ];
        for (marker, name) in cases {
            assert_eq!(detect(&env(&[(marker, "x")])).map(|p| p.name), Some(name));
        }
        assert_eq!(detect(&env(&[("HOME", "/root")])), None);
        assert_eq!(detect(&env(&[("DYNO", "")])), None, "empty is unset");
    }

    #[test]
    fn heroku_fills_header_and_trust_and_says_so() {
        let (mut cli, sources) = parsed(&[], &[]);
        let line = apply(&mut cli, &sources, &env(&[("DYNO", "web.1")])).expect("detected");
        assert_eq!(cli.tracker.queue_header.as_deref(), Some("X-Request-Start"));
        assert_eq!(cli.tracker.queue_header_trusted_from.as_deref(), Some("*"));
        assert_eq!(cli.server.forwarded_allow_ips.as_deref(), Some("*"));
        assert!(line.starts_with("Platform: Heroku (DYNO is set)"), "{line}");
        assert!(line.contains("X-Request-Start (milliseconds)"), "{line}");
    }

    #[test]
    fn explicit_options_win_from_any_source() {
        let (mut cli, sources) = parsed(
            &["--queue-header", "X-RequestTime"],
            &[("RWSGI_FORWARDED_ALLOW_IPS", "10.1.0.0/16")],
        );
        let line = apply(&mut cli, &sources, &env(&[("DYNO", "web.1")])).expect("detected");
        assert_eq!(cli.tracker.queue_header.as_deref(), Some("X-RequestTime"));
        assert_eq!(
            cli.server.forwarded_allow_ips.as_deref(),
            Some("10.1.0.0/16")
        );
        assert_eq!(cli.tracker.queue_header_trusted_from.as_deref(), Some("*"));
        assert!(
            line.contains("explicit options kept: --queue-header from the command line"),
            "{line}"
        );
        assert!(
            line.contains("--forwarded-allow-ips from RWSGI_FORWARDED_ALLOW_IPS"),
            "{line}"
        );
    }

    #[test]
    fn platforms_without_a_stamp_leave_the_header_unset() {
        let (mut cli, sources) = parsed(&[], &[]);
        let line = apply(
            &mut cli,
            &sources,
            &env(&[("ECS_CONTAINER_METADATA_URI_V4", "x")]),
        )
        .expect("detected");
        assert_eq!(cli.tracker.queue_header, None);
        assert_eq!(cli.server.forwarded_allow_ips.as_deref(), Some(VPC_RANGES));
        assert!(line.contains("server_wait"), "{line}");
    }
}
