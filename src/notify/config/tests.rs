//! Tests of [`NotifyConfig::from_args`]: defaults, and every error message, each of
//! which must name the option to fix.

use super::*;
use crate::notify::testing::args;

fn config(argv: &[&str]) -> Result<NotifyConfig, ConfigError> {
    NotifyConfig::from_args(&args(argv), false, LogFormat::Human)
}

fn error(argv: &[&str]) -> String {
    config(argv).expect_err("invalid options").0
}

fn kinds(c: &NotifyConfig) -> Vec<SinkKind> {
    c.sinks().iter().map(SinkConfig::kind).collect()
}

#[test]
fn log_is_the_default_only_with_a_queue_header() {
    let with = NotifyConfig::from_args(&args(&[]), true, LogFormat::Json).expect("valid");
    assert_eq!(
        with.sinks(),
        [SinkConfig::Log(log::LogConfig::new(LogFormat::Json))]
    );
    assert!(config(&[]).expect("valid").sinks().is_empty());
    let named = NotifyConfig::from_args(
        &args(&["--notify", "statsd", "--statsd-host", "localhost:8125"]),
        true,
        LogFormat::Human,
    )
    .expect("valid");
    assert_eq!(
        kinds(&named),
        [SinkKind::Statsd],
        "a named sink replaces the default"
    );
}

#[test]
fn interval_defaults_to_ten_seconds_and_accepts_fractions() {
    assert_eq!(
        config(&[]).expect("valid").interval(),
        Duration::from_secs(10)
    );
    assert_eq!(
        config(&["--notify-interval", "0.25"])
            .expect("valid")
            .interval(),
        Duration::from_millis(250)
    );
}

#[test]
fn interval_must_be_positive_and_finite() {
    assert_eq!(
        error(&["--notify-interval", "0"]),
        "--notify-interval must be > 0 (got 0)"
    );
    assert_eq!(
        error(&["--notify-interval=-1"]),
        "--notify-interval must be > 0 (got -1)"
    );
    assert_eq!(
        error(&["--notify-interval", "NaN"]),
        "--notify-interval must be > 0 (got NaN)"
    );
    assert_eq!(
        error(&["--notify-interval", "1e300"]),
        "--notify-interval must be at most 86400 (got 1e300)"
    );
    assert_eq!(
        error(&["--notify-interval", "inf"]),
        "--notify-interval must be at most 86400 (got inf)"
    );
    assert_eq!(
        error(&["--notify-interval", "86400.5"]),
        "--notify-interval must be at most 86400 (got 86400.5)"
    );
    assert!(config(&["--notify-interval", "86400"]).is_ok());
}

#[test]
fn sink_names_are_checked_and_may_be_comma_separated() {
    assert_eq!(
        error(&["--notify", "foo"]),
        "unknown sink 'foo' in --notify (expected log, prometheus, statsd, cloudwatch, azure, redis)"
    );
    assert_eq!(
        error(&["--notify", "log,"]),
        "unknown sink '' in --notify (expected log, prometheus, statsd, cloudwatch, azure, redis)"
    );
    assert_eq!(
        error(&["--notify", "log", "--notify", "LOG"]),
        "--notify log is given twice"
    );
    let c = config(&["--notify", "Log, statsd", "--statsd-host", "localhost:8125"]).expect("valid");
    assert_eq!(kinds(&c), [SinkKind::Log, SinkKind::Statsd]);
}

#[test]
fn cloud_sinks_name_their_missing_options() {
    assert!(error(&["--notify", "cloudwatch"]).contains("--cloudwatch-namespace"));
    assert!(error(&["--notify", "azure"]).contains("--azure-region"));
    assert!(error(&["--notify", "redis"]).contains("--redis-url"));
}

#[test]
fn prometheus_needs_a_valid_metrics_bind() {
    assert_eq!(
        error(&["--notify", "prometheus"]),
        "--notify prometheus needs --metrics-bind HOST:PORT"
    );
    assert_eq!(
        error(&["--notify", "prometheus", "--metrics-bind", "9090"]),
        "--metrics-bind must be HOST:PORT (got '9090')"
    );
    assert_eq!(
        error(&["--notify", "prometheus", "--metrics-bind", ":9090"]),
        "--metrics-bind must be HOST:PORT (got ':9090')"
    );
    assert_eq!(
        error(&["--notify", "prometheus", "--metrics-bind", "0.0.0.0:99999"]),
        "--metrics-bind must be HOST:PORT (got '0.0.0.0:99999')"
    );
    assert_eq!(
        error(&["--notify", "prometheus", "--metrics-bind", "::1:9090"]),
        "--metrics-bind: write an IPv6 address as [ADDR]:PORT (got '::1:9090')"
    );
    for ok in ["0.0.0.0:9090", "[::]:9090", "localhost:0"] {
        let c = config(&["--notify", "prometheus", "--metrics-bind", ok]).expect(ok);
        assert_eq!(
            c.sinks()[0].to_string(),
            format!("prometheus (metrics-bind {ok})")
        );
    }
}

fn statsd(extra: &[&str]) -> Result<NotifyConfig, ConfigError> {
    let mut argv = vec!["--notify", "statsd", "--statsd-host", "127.0.0.1:8125"];
    argv.extend_from_slice(extra);
    config(&argv)
}

#[test]
fn statsd_needs_a_host_and_clean_names() {
    assert_eq!(
        error(&["--notify", "statsd"]),
        "--notify statsd needs --statsd-host HOST:PORT"
    );
    assert_eq!(
        error(&["--notify", "statsd", "--statsd-host", "localhost:0"]),
        "--statsd-host needs a port other than 0 (got 'localhost:0')"
    );
    let tag_error = |tag: &str| {
        format!("--statsd-tag must be key:value without '|', ',', '#' or whitespace (got '{tag}')")
    };
    for tag in ["env", ":prod", "env:", "env:a|b", "env:a b"] {
        assert_eq!(
            statsd(&["--statsd-tag", tag]).expect_err(tag).0,
            tag_error(tag)
        );
    }
    // A comma separates tags (gunicorn's --dogstatsd-tags a:b,c:d): each is checked.
    assert_eq!(
        statsd(&["--statsd-tag", "env:a,b"]).expect_err("b").0,
        tag_error("b")
    );
    assert_eq!(
        statsd(&["--statsd-prefix", "my app"]).expect_err("space").0,
        "--statsd-prefix must not contain ':', '|', '@', '#', ',' or whitespace (got 'my app')"
    );
    let ok = statsd(&[
        "--statsd-prefix",
        "web.",
        "--statsd-tag",
        "env:prod",
        "--statsd-tag",
        "svc:a:b",
    ])
    .expect("valid");
    assert_eq!(
        ok.sinks()[0].to_string(),
        "statsd (host 127.0.0.1:8125, prefix 'web', tags env:prod,svc:a:b)"
    );
}
