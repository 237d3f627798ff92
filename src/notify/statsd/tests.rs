//! Tests of the `statsd` sink against a real UDP socket opened by the test.

use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::cli::LogFormat;
use crate::notify::testing::{args, metric, sample_report};
use crate::notify::{Notifier, NotifyConfig};

/// One parsed statsd line: `name:value|type[|@rate][|#tags]`.
#[derive(Debug)]
struct Line {
    name: String,
    value: f64,
    kind: String,
    rate: f64,
    tags: Option<String>,
}

fn parse_line(l: &str) -> Line {
    let (name, rest) = l.split_once(':').unwrap_or_else(|| panic!("no ':' in {l}"));
    let mut parts = rest.split('|');
    let value = parts
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad value in {l}"));
    let kind = parts
        .next()
        .unwrap_or_else(|| panic!("no type in {l}"))
        .to_owned();
    let (mut rate, mut tags) = (1.0, None);
    for part in parts {
        if let Some(r) = part.strip_prefix('@') {
            rate = r.parse().unwrap_or_else(|_| panic!("bad rate in {l}"));
        } else if let Some(t) = part.strip_prefix('#') {
            tags = Some(t.to_owned());
        } else {
            panic!("unexpected field {part:?} in {l}");
        }
    }
    Line {
        name: name.to_owned(),
        value,
        kind,
        rate,
        tags,
    }
}

/// Runs a notifier with only the statsd sink pointed at a fresh UDP socket, publishes
/// `report`, shuts down (which flushes it) and returns every datagram received.
async fn roundtrip(extra: &[&str], report: Report) -> Vec<String> {
    let receiver = receiver();
    let host = receiver.local_addr().expect("addr").to_string();
    let mut argv = vec!["--notify", "statsd", "--statsd-host", &host];
    argv.extend_from_slice(extra);
    let config = NotifyConfig::from_args(&args(&argv), false, LogFormat::Human).expect("valid");
    let notifier = Notifier::start(config).await.expect("starts");
    notifier.publish(report);
    notifier.shutdown(Duration::from_secs(5)).await;
    drain(&receiver)
}

/// A non-blocking std socket: loopback UDP is in its receive buffer as soon as `send`
/// returns, and a plain `recv` syscall sees it without waiting on tokio's reactor.
fn receiver() -> std::net::UdpSocket {
    receiver_on("127.0.0.1:0".parse().expect("addr"))
}

fn receiver_on(addr: SocketAddr) -> std::net::UdpSocket {
    let socket = std::net::UdpSocket::bind(addr).expect("bind");
    socket.set_nonblocking(true).expect("nonblocking");
    socket
}

/// Every datagram already received.
fn drain(socket: &std::net::UdpSocket) -> Vec<String> {
    let mut datagrams = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = socket.recv(&mut buf) {
        datagrams.push(String::from_utf8(buf[..n].to_vec()).expect("utf-8"));
    }
    datagrams
}

fn all_lines(datagrams: &[String]) -> Vec<Line> {
    assert!(!datagrams.is_empty(), "nothing received");
    for d in datagrams {
        assert!(d.len() <= MAX_DATAGRAM, "datagram of {} bytes", d.len());
    }
    datagrams
        .iter()
        .flat_map(|d| d.split('\n'))
        .map(parse_line)
        .collect()
}

/// Samples of a timer/distribution, the sample rate undone; and their sum in ms.
fn timer_totals(lines: &[Line], name: &str) -> (f64, f64) {
    lines
        .iter()
        .filter(|l| l.name == name)
        .fold((0.0, 0.0), |(n, sum), l| {
            (n + 1.0 / l.rate, sum + l.value / l.rate)
        })
}

#[tokio::test]
async fn dogstatsd_packets_carry_every_metric_with_tags() {
    let report = sample_report(3);
    let datagrams = roundtrip(
        &[
            "--statsd-prefix",
            "app",
            "--statsd-tag",
            "env:prod",
            "--statsd-tag",
            "service:web",
        ],
        report.clone(),
    )
    .await;
    let lines = all_lines(&datagrams);
    assert!(
        lines
            .iter()
            .all(|l| l.tags.as_deref() == Some("env:prod,service:web")),
        "{lines:?}"
    );
    assert!(
        lines.iter().all(|l| l.name.starts_with("app.")),
        "{lines:?}"
    );

    for (name, m) in [
        ("app.queue_time", &report.queue_time),
        ("app.server_wait", &report.server_wait),
        ("app.app_time", &report.app_time),
    ] {
        let mine: Vec<&Line> = lines.iter().filter(|l| l.name == name).collect();
        assert_eq!(
            mine.len(),
            m.distribution.len(),
            "{name}: one line per distinct value"
        );
        assert!(
            mine.iter().all(|l| l.kind == "d"),
            "{name}: distributions with tags"
        );
        let (count, sum_ms) = timer_totals(&lines, name);
        assert!(
            (count - m.count as f64).abs() < 1e-6,
            "{name}: count {count} != {}",
            m.count
        );
        assert!(
            (sum_ms - m.sum * 1e3).abs() < 1e-6,
            "{name}: sum {sum_ms} ms"
        );
    }

    let single: HashMap<&str, &Line> = lines.iter().map(|l| (l.name.as_str(), l)).collect();
    let check = |name: &str, kind: &str, value: f64| {
        let l = single.get(name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!((l.kind.as_str(), l.value), (kind, value), "{name}");
    };
    check("app.utilization", "g", 0.42);
    check("app.workers", "g", 2.0);
    check("app.requests.1xx", "c", 0.0);
    check("app.requests.2xx", "c", 6.0);
    check("app.requests.5xx", "c", 2.0);
    check("app.queue_stamps.ok", "c", 4.0);
    check("app.queue_stamps.missing", "c", 2.0);
    check("app.queue_stamps.invalid", "c", 1.0);
    check("app.queue_stamps.future", "c", 0.0);
    check("app.queue_stamps.untrusted", "c", 1.0);
    check("app.shed", "c", 3.0);
}

#[tokio::test]
async fn plain_statsd_gets_timers_in_milliseconds_without_tags() {
    let report = sample_report(1);
    let lines = all_lines(&roundtrip(&[], report.clone()).await);
    assert!(lines.iter().all(|l| l.tags.is_none()), "{lines:?}");
    let queue: Vec<&Line> = lines
        .iter()
        .filter(|l| l.name == "rwsgi.queue_time")
        .collect();
    assert!(queue.iter().all(|l| l.kind == "ms"), "{queue:?}");
    // 0.02 s twice: one line of 20 ms at rate 1/2; 1.2 s once: no rate.
    assert!(
        queue.iter().any(|l| l.value == 20.0 && l.rate == 0.5),
        "{queue:?}"
    );
    assert!(
        queue.iter().any(|l| l.value == 1200.0 && l.rate == 1.0),
        "{queue:?}"
    );
    assert_eq!(timer_totals(&lines, "rwsgi.app_time").0, 7.0);
}

#[tokio::test]
async fn a_full_distribution_is_split_into_datagrams_that_fit() {
    let mut report = sample_report(1);
    let dist: Vec<(f64, u64)> = (1..=150).map(|i| (i as f64 * 0.0123, i)).collect();
    report.queue_time = metric(&dist, 0.5, 1.5, 1.8);
    report.server_wait = metric(&dist, 0.5, 1.5, 1.8);
    report.app_time = metric(&dist, 0.5, 1.5, 1.8);
    let datagrams = roundtrip(&["--statsd-tag", "env:prod"], report.clone()).await;
    assert!(datagrams.len() > 10, "{} datagrams", datagrams.len());
    let lines = all_lines(&datagrams);
    let expected = lines_of(&report, &["env:prod"]);
    assert_eq!(lines.len(), expected.len(), "no line lost");
    let (count, _) = timer_totals(&lines, "rwsgi.queue_time");
    assert!(
        (count - report.queue_time.count as f64).abs() < 1e-6,
        "count {count}"
    );
}

fn lines_of(report: &Report, tags: &[&str]) -> Vec<String> {
    let config = StatsdConfig {
        host: "127.0.0.1:8125".into(),
        prefix: "rwsgi".into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        gunicorn_prefix: String::new(),
    };
    lines(report, &config)
}

#[test]
fn packing_keeps_every_line_in_order() {
    let lines: Vec<String> = (0..500)
        .map(|i| format!("rwsgi.metric_{i}:{i}|c"))
        .collect();
    let packed = pack(&lines, MAX_DATAGRAM);
    assert!(packed.iter().all(|d| d.len() <= MAX_DATAGRAM));
    // Each datagram is full: the next line would not have fit.
    for pair in packed.windows(2) {
        let next_line = pair[1].split('\n').next().expect("line");
        assert!(pair[0].len() + 1 + next_line.len() > MAX_DATAGRAM);
    }
    let rejoined: Vec<&str> = packed.iter().flat_map(|d| d.split('\n')).collect();
    assert_eq!(rejoined, lines);
    let huge = vec!["x".repeat(2000), "y:1|c".to_owned()];
    assert_eq!(
        pack(&huge, MAX_DATAGRAM),
        huge,
        "an oversized line goes alone"
    );
}

#[tokio::test]
async fn a_retry_resumes_after_the_last_datagram_sent() {
    // A port with nothing behind it: the ICMP "port unreachable" for one datagram
    // fails a later send on the connected socket.
    let gone = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = gone.local_addr().expect("addr");
    drop(gone);
    let config = StatsdConfig {
        host: addr.to_string(),
        prefix: "rwsgi".into(),
        tags: vec![],
        gunicorn_prefix: String::new(),
    };
    let mut report = sample_report(1);
    let dist: Vec<(f64, u64)> = (1..=150).map(|i| (i as f64 * 0.001, 1)).collect();
    report.queue_time = metric(&dist, 0.07, 0.13, 0.15);
    let mut sink = config.build();
    let mut err = None;
    for _ in 0..20 {
        if let Err(e) = sink.send(&report).await {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("a refused send");
    assert!(err.retryable);
    assert!(
        err.message
            .starts_with(&format!("sending to --statsd-host {addr}: ")),
        "{}",
        err.message
    );
    let pending = sink.pending.as_ref().expect("report still pending");
    let (sent, total) = (pending.next, pending.datagrams.len());
    assert!(sent < total);

    // The statsd server comes back on the same port; the retry sends only the rest.
    let receiver = receiver_on(addr);
    let rest = pending.datagrams[sent..].to_vec();
    sink.send(&report).await.expect("retry succeeds");
    assert!(sink.pending.is_none());
    assert_eq!(
        drain(&receiver),
        rest,
        "{sent} of {total} were sent before the error"
    );
}

#[test]
fn gunicorns_own_metrics_under_gunicorns_names() {
    let report = sample_report(1);
    let lines = lines_of(&report, &[]);
    let find =
        |prefix: &str| -> Vec<&String> { lines.iter().filter(|l| l.starts_with(prefix)).collect() };
    assert_eq!(
        find("gunicorn.requests:"),
        [&format!("gunicorn.requests:{}|c", report.requests())]
    );
    assert_eq!(
        find("gunicorn.workers:"),
        [&"gunicorn.workers:2|g".to_string()]
    );
    let codes: Vec<&String> = find("gunicorn.request.status.");
    assert_eq!(
        codes,
        [
            "gunicorn.request.status.200:5|c",
            "gunicorn.request.status.201:1|c",
            "gunicorn.request.status.500:1|c",
            "gunicorn.request.status.503:1|c"
        ]
        .iter()
        .collect::<Vec<_>>()
    );
    // The log-line counters: only the levels that had lines (3 warnings here).
    assert_eq!(
        find("gunicorn.log."),
        [&"gunicorn.log.warning:3|c".to_string()]
    );
    // The duration timer is the app_time distribution, always `ms` as gunicorn sends.
    let parsed: Vec<Line> = lines.iter().map(|l| parse_line(l)).collect();
    let (count, _) = timer_totals(&parsed, "gunicorn.request.duration");
    assert!((count - report.app_time.count as f64).abs() < 1e-6);
    // A prefix the user chose applies to gunicorn's names too, as in gunicorn.
    let notify = args(&[
        "--statsd-host",
        "127.0.0.1:8125",
        "--statsd-prefix",
        "shop",
        "--statsd-tag",
        "env:x",
    ]);
    let config = StatsdConfig::from_args(&notify).expect("config");
    let tagged = super::lines(&report, &config);
    assert!(
        tagged.contains(&"shop.gunicorn.workers:2|g|#env:x".to_string()),
        "{tagged:?}"
    );
    assert!(tagged
        .iter()
        .any(|l| l.starts_with("shop.gunicorn.request.duration:") && l.contains("|ms")));
}
