//! Tests of the `prometheus` sink: a real listener on port 0, real reports through
//! the notifier, a raw HTTP/1.1 client, and a strict reading of the text format.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::cli::LogFormat;
use crate::notify::testing::{args, metric, sample_report, wait_until};
use crate::notify::{Notifier, NotifyConfig};

/// One sample line: `name{k="v",…} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses the exposition text strictly; panics on any line it does not understand,
/// and checks that every sample belongs to a family announced by HELP and TYPE.
fn parse(text: &str) -> Vec<Sample> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped: Vec<String> = Vec::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has text");
            assert!(valid_name(name) && !help.is_empty(), "{line}");
            helped.push(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                helped.last().is_some_and(|h| h == name),
                "TYPE after its HELP: {line}"
            );
            types.insert(name.to_owned(), kind.to_owned());
        } else {
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let value = match value {
                "+Inf" => f64::INFINITY,
                "NaN" => f64::NAN,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series, Vec::new()),
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').expect("labels closed");
                    let labels = inner
                        .split(',')
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').expect("label k=v");
                            let v = v
                                .strip_prefix('"')
                                .and_then(|v| v.strip_suffix('"'))
                                .expect("quoted");
                            assert!(valid_name(k), "{line}");
                            (k.to_owned(), v.to_owned())
                        })
                        .collect();
                    (name, labels)
                }
            };
            assert!(valid_name(name), "{line}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or(name);
            assert!(types.contains_key(family), "sample without TYPE: {line}");
            samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
    }
    samples
}

fn value(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> f64 {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && label.is_none_or(|(k, v)| s.labels.iter().any(|l| l.0 == k && l.1 == v))
        })
        .unwrap_or_else(|| panic!("no sample {name} {label:?}"))
        .value
}

/// Checks one histogram's invariants and returns its `le → count` pairs.
fn histogram(samples: &[Sample], name: &str) -> Vec<(String, f64)> {
    let buckets: Vec<(String, f64)> = samples
        .iter()
        .filter(|s| s.name == format!("{name}_bucket"))
        .map(|s| (s.labels[0].1.clone(), s.value))
        .collect();
    assert_eq!(buckets.len(), PROMETHEUS_BUCKETS.len() + 1, "{name}");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "{name} buckets not monotonic: {buckets:?}"
    );
    let last = buckets.last().expect("buckets");
    assert_eq!(last.0, "+Inf");
    assert_eq!(
        last.1,
        value(samples, &format!("{name}_count"), None),
        "{name}: +Inf == _count"
    );
    buckets
}

/// GET (or another method) over a fresh connection; returns (status line, headers, body).
async fn http(addr: SocketAddr, method: &str, path: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (
        status.to_owned(),
        headers.to_ascii_lowercase(),
        body.to_owned(),
    )
}

async fn start() -> Notifier {
    let a = args(&["--notify", "prometheus", "--metrics-bind", "127.0.0.1:0"]);
    let config = NotifyConfig::from_args(&a, false, LogFormat::Human).expect("valid");
    Notifier::start(config).await.expect("starts")
}

#[tokio::test]
async fn metrics_are_cumulative_and_well_formed() {
    let notifier = start().await;
    let addr = notifier.metrics_addr().expect("prometheus runs");
    notifier.publish(sample_report(1));
    notifier.publish(sample_report(2));
    wait_until("two reports", Duration::from_secs(5), || {
        notifier.stats()[0].delivered == 2
    })
    .await;

    let (status, headers, body) = http(addr, "GET", "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{headers}"
    );
    let samples = parse(&body);

    // Two reports of queue times [0.02, 0.02, 0.15, 1.2].
    let q = histogram(&samples, "rwsgi_queue_time_seconds");
    let le =
        |b: &[(String, f64)], bound: &str| b.iter().find(|(l, _)| l == bound).expect("bound").1;
    assert_eq!(le(&q, "0.01"), 0.0);
    assert_eq!(le(&q, "0.025"), 4.0);
    assert_eq!(le(&q, "0.25"), 6.0);
    assert_eq!(le(&q, "1"), 6.0);
    assert_eq!(le(&q, "2.5"), 8.0);
    assert_eq!(value(&samples, "rwsgi_queue_time_seconds_count", None), 8.0);
    assert!((value(&samples, "rwsgi_queue_time_seconds_sum", None) - 2.78).abs() < 1e-9);

    let w = histogram(&samples, "rwsgi_server_wait_seconds");
    assert_eq!(le(&w, "0.001"), 10.0);
    assert_eq!(le(&w, "0.005"), 12.0);
    let a = histogram(&samples, "rwsgi_app_time_seconds");
    assert_eq!(le(&a, "0.01"), 12.0);
    assert_eq!(le(&a, "+Inf"), 14.0);

    assert_eq!(
        value(
            &samples,
            "rwsgi_requests_total",
            Some(("status_class", "2xx"))
        ),
        12.0
    );
    assert_eq!(
        value(
            &samples,
            "rwsgi_requests_total",
            Some(("status_class", "5xx"))
        ),
        4.0
    );
    assert_eq!(
        value(
            &samples,
            "rwsgi_requests_total",
            Some(("status_class", "1xx"))
        ),
        0.0
    );
    assert_eq!(
        value(&samples, "rwsgi_queue_stamps_total", Some(("result", "ok"))),
        8.0
    );
    assert_eq!(
        value(
            &samples,
            "rwsgi_queue_stamps_total",
            Some(("result", "missing"))
        ),
        4.0
    );
    assert_eq!(
        value(
            &samples,
            "rwsgi_queue_stamps_total",
            Some(("result", "untrusted"))
        ),
        2.0
    );
    assert_eq!(
        value(
            &samples,
            "rwsgi_queue_stamps_total",
            Some(("result", "future"))
        ),
        0.0
    );
    assert_eq!(value(&samples, "rwsgi_shed_total", None), 3.0);
    assert_eq!(value(&samples, "rwsgi_workers", None), 2.0);
    assert_eq!(value(&samples, "rwsgi_utilization_ratio", None), 0.42);

    notifier.shutdown(Duration::from_secs(1)).await;
    // The abort of the server task lands on its next poll, so allow it a moment.
    let end = tokio::time::Instant::now() + Duration::from_secs(2);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < end,
            "the listener closes with the notifier"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn before_any_report_everything_is_zero_and_parses() {
    let notifier = start().await;
    let (_, _, body) = http(notifier.metrics_addr().expect("addr"), "GET", "/metrics").await;
    let samples = parse(&body);
    assert!(samples.len() > 50, "{body}");
    assert!(samples.iter().all(|s| s.value == 0.0), "{body}");
}

#[tokio::test]
async fn other_paths_and_methods_are_refused() {
    let notifier = start().await;
    let addr = notifier.metrics_addr().expect("addr");
    assert_eq!(http(addr, "GET", "/").await.0, "HTTP/1.1 404 Not Found");
    assert_eq!(
        http(addr, "GET", "/metrics/x").await.0,
        "HTTP/1.1 404 Not Found"
    );
    let (status, headers, _) = http(addr, "POST", "/metrics").await;
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(headers.contains("allow: get, head"), "{headers}");
    assert_eq!(http(addr, "GET", "/metrics?x=1").await.0, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn a_busy_address_fails_at_start_naming_the_option() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let a = args(&["--notify", "prometheus", "--metrics-bind", &addr]);
    let config = NotifyConfig::from_args(&a, false, LogFormat::Human).expect("valid");
    let err = Notifier::start(config)
        .await
        .err()
        .expect("address in use")
        .0;
    assert!(
        err.starts_with(&format!("--metrics-bind {addr}: cannot listen: ")),
        "{err}"
    );
}

#[test]
fn a_report_missing_a_bound_still_gives_monotonic_counts() {
    let mut m = metric(&[(0.02, 2), (0.15, 1), (1.2, 1)], 0.02, 0.15, 1.2);
    m.buckets.retain(|(le, _)| *le != 0.25);
    let mut h = Histogram::default();
    h.add(&m);
    assert!(
        h.buckets.windows(2).all(|w| w[0] <= w[1]),
        "{:?}",
        h.buckets
    );
    let at = |bound: f64| {
        h.buckets[PROMETHEUS_BUCKETS
            .iter()
            .position(|b| *b == bound)
            .expect("bound")]
    };
    assert_eq!(at(0.1), 2);
    assert_eq!(at(0.25), 2, "falls back to the nearest lower bound");
    assert_eq!(at(0.5), 3);
    assert!(h.buckets.iter().all(|n| *n <= h.count));
}

#[test]
fn floats_use_the_exposition_spelling() {
    assert_eq!(float(f64::INFINITY), "+Inf");
    assert_eq!(float(f64::NEG_INFINITY), "-Inf");
    assert_eq!(float(f64::NAN), "NaN");
    assert_eq!(float(0.0025), "0.0025");
    assert_eq!(float(1.0), "1");
}

/// The `rwsgi_interval_*` gauges and `/queue-time.json` show the latest report only
/// (not totals), with the same numbers in both.
#[tokio::test]
async fn interval_gauges_and_json_show_the_last_report() {
    let notifier = start().await;
    let addr = notifier.metrics_addr().expect("prometheus runs");
    let mut second = sample_report(2);
    second.queue_time = metric(&[(0.2, 9), (0.8, 1)], 0.2, 0.21, 0.79);
    second.utilization = 0.75;
    notifier.publish(sample_report(1));
    notifier.publish(second.clone());
    wait_until("two reports", Duration::from_secs(5), || {
        notifier.stats()[0].delivered == 2
    })
    .await;

    let (_, _, body) = http(addr, "GET", "/metrics").await;
    let samples = parse(&body);
    let q = "rwsgi_interval_queue_time_seconds";
    let stat = |name: &str, s: &str| value(&samples, name, Some(("stat", s)));
    assert!((stat(q, "avg") - 0.26).abs() < 1e-9, "mean of 9×0.2 + 0.8");
    assert_eq!(stat(q, "p50"), 0.2);
    assert_eq!(stat(q, "p90"), 0.21);
    assert_eq!(stat(q, "p99"), 0.79);
    assert_eq!(stat(q, "max"), 0.8);
    assert_eq!(stat("rwsgi_interval_server_wait_seconds", "max"), 0.003);
    assert_eq!(
        value(&samples, "rwsgi_interval_queue_time_samples", None),
        10.0
    );
    assert_eq!(value(&samples, "rwsgi_interval_requests", None), 8.0);
    assert_eq!(
        value(&samples, "rwsgi_interval_utilization_ratio", None),
        0.75
    );
    assert_eq!(value(&samples, "rwsgi_interval_length_seconds", None), 10.0);
    assert_eq!(
        value(&samples, "rwsgi_interval_end_timestamp_seconds", None),
        1_700_000_020.0
    );

    let (status, headers, body) = http(addr, "GET", "/queue-time.json").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("content-type: application/json"),
        "{headers}"
    );
    let j: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
    assert_eq!(j["reports"], 2);
    assert_eq!(j["interval_seconds"], 10.0);
    assert_eq!(j["queue_time_seconds"]["p90"], 0.21);
    assert_eq!(j["queue_time_seconds"]["count"], 10);
    assert_eq!(j["server_wait_seconds"]["max"], 0.003);
    assert_eq!(j["utilization_ratio"], 0.75);
    assert_eq!(j["workers"], 2);
    assert_eq!(j["hostname"], "web-1");
    assert_eq!(j["shed"], 2);
}

#[tokio::test]
async fn queue_time_json_before_any_report_says_so() {
    let notifier = start().await;
    let addr = notifier.metrics_addr().expect("addr");
    let (status, _, body) = http(addr, "GET", "/queue-time.json").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let j: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
    assert_eq!(j["reports"], 0);
    assert_eq!(j["queue_time_seconds"]["p90"], 0.0);
    assert_eq!(
        http(addr, "POST", "/queue-time.json").await.0,
        "HTTP/1.1 405 Method Not Allowed"
    );
}
