//! Tests of the Redis sink: URL redaction, key/TTL/trim math, options, and the real
//! sink against a real `redis-server` (stopped and restarted to test outages).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::Parser;
use redis::Commands;

use super::*;
use crate::cli::Cli;
use crate::notify::testing::{assert_send, dead_port, decile_report, RedisServer};

const PASSWORD: &str = "s3cret-Passw0rd";

fn args(extra: &[&str]) -> NotifyArgs {
    let mut argv = vec!["rwsgi", "--notify", "redis"];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv)
        .expect("valid command line")
        .notify
}

// ---------------------------------------------------------------------------------
// Pure parts
// ---------------------------------------------------------------------------------

#[test]
fn keys_ttl_and_history_length() {
    assert_eq!(
        keys("queue-time", "web-1"),
        ("queue-time:web-1".into(), "queue-time:web-1:history".into())
    );
    assert_eq!(ttl(Duration::from_secs(10)), Duration::from_secs(30));
    assert_eq!(ttl(Duration::ZERO), Duration::from_millis(1));
    let s = Duration::from_secs;
    assert_eq!(history_len(s(120), s(10)), 12);
    assert_eq!(
        history_len(s(120), s(7)),
        18,
        "rounded up: the history spans at least 120 s"
    );
    assert_eq!(history_len(s(5), s(10)), 1, "at least one entry");
    assert_eq!(
        history_len(Duration::from_secs_f64(1.5), Duration::from_millis(500)),
        3
    );
}

#[test]
fn hash_fields_and_history_entry() {
    let report = decile_report();
    let fields: HashMap<_, _> = hash_fields(&report).into_iter().collect();
    assert_eq!(fields["count"], "10");
    assert_eq!(fields["avg"], "0.45");
    assert_eq!(fields["p50"], "0.4");
    assert_eq!(fields["p90"], "0.8");
    assert_eq!(fields["p99"], "0.9");
    assert_eq!(fields["max"], "0.9");
    assert_eq!(fields["utilization"], "0.375");
    assert_eq!(fields["requests"], "12");
    assert_eq!(fields["shed"], "2");
    assert!(fields["timestamp"].parse::<f64>().unwrap() > 1.7e9);
    let entry: serde_json::Value = serde_json::from_str(&history_entry(&report)).unwrap();
    assert_eq!(
        (
            entry["n"].clone(),
            entry["p90"].clone(),
            entry["req"].clone()
        ),
        (10.into(), 0.8.into(), 12.into())
    );
}

#[test]
fn config_checks_and_never_prints_the_password() {
    let url = format!("redis://:{PASSWORD}@127.0.0.1:6379/0");
    let c =
        RedisConfig::from_args(&args(&["--redis-url", &url, "--notify-interval", "5"])).unwrap();
    assert_eq!(
        (c.key_prefix.as_str(), c.history, c.interval),
        (
            "queue-time",
            Duration::from_secs(120),
            Duration::from_secs(5)
        )
    );
    for shown in [c.to_string(), format!("{c:?}")] {
        assert!(
            !shown.contains(PASSWORD) && shown.contains("redis://:***@127.0.0.1:6379/0"),
            "{shown}"
        );
    }
    let cases: &[(&[&str], &str)] = &[
        (&[], "--notify redis needs --redis-url"),
        (&["--redis-url", "http://:pw123456@h"], "--redis-url"),
        (
            &["--redis-url", "redis://h", "--redis-key-prefix", " "],
            "--redis-key-prefix",
        ),
        (
            &["--redis-url", "redis://h", "--redis-history", "0"],
            "--redis-history",
        ),
        (
            &["--redis-url", "redis://h", "--notify-interval=-1"],
            "--notify-interval",
        ),
    ];
    for (argv, expected) in cases {
        let err = RedisConfig::from_args(&args(argv)).unwrap_err().0;
        assert!(
            err.contains(expected) && !err.contains("pw123456"),
            "{argv:?}: {err}"
        );
    }
}

// ---------------------------------------------------------------------------------
// Against a real redis-server
// ---------------------------------------------------------------------------------

async fn sink(url: &str, extra: &[&str]) -> RedisSink {
    let mut argv = vec!["--redis-url", url];
    argv.extend_from_slice(extra);
    RedisConfig::from_args(&args(&argv))
        .unwrap()
        .build()
        .await
        .expect("build never connects")
}

#[tokio::test]
async fn writes_hash_and_capped_history_with_ttl() {
    let server = RedisServer::start(Some(PASSWORD));
    // 1 s interval, 3 s of history: 3 entries, keys live 3 s.
    let mut sink = sink(
        &server.url(),
        &[
            "--notify-interval",
            "1",
            "--redis-history",
            "3",
            "--redis-key-prefix",
            "qt",
        ],
    )
    .await;
    let mut report = decile_report();
    for i in 0..5u64 {
        report.queue_time.count = 10 + i;
        sink.send(&report).await.expect("written");
    }
    let mut c = server.client();
    let hash: HashMap<String, String> = c.hgetall("qt:web-1").unwrap();
    assert_eq!(hash["count"], "14", "the latest report wins");
    assert_eq!(hash["p90"], "0.8");
    assert_eq!(hash["interval"], "10", "the length this report covers");
    let hash_ttl: i64 = c.pttl("qt:web-1").unwrap();
    let history_ttl: i64 = c.pttl("qt:web-1:history").unwrap();
    for t in [hash_ttl, history_ttl] {
        assert!(
            (2000..=3000).contains(&t),
            "TTL {t} ms, expected 3 × interval"
        );
    }
    let history: Vec<String> = c.lrange("qt:web-1:history", 0, -1).unwrap();
    assert_eq!(history.len(), 3, "capped at ceil(3 s / 1 s)");
    let newest: serde_json::Value = serde_json::from_str(&history[0]).unwrap();
    assert_eq!(newest["n"], 14, "newest first");
}

#[tokio::test]
async fn outage_fails_fast_without_the_password_then_resumes() {
    let mut server = RedisServer::start(Some(PASSWORD));
    let mut sink = sink(&server.url(), &[]).await;
    let report = decile_report();
    sink.send(&report).await.expect("up");

    server.stop();
    for _ in 0..2 {
        let started = Instant::now();
        let err = sink.send(&report).await.unwrap_err();
        assert!(err.retryable, "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
        assert!(!err.message.contains(PASSWORD), "{err:?}");
    }

    server.restart();
    sink.send(&report)
        .await
        .expect("the first report after Redis returns is written");
    let count: String = server.client().hget("queue-time:web-1", "count").unwrap();
    assert_eq!(count, "10");
}

#[tokio::test]
async fn redis_down_at_start_is_not_fatal() {
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/0", dead_port());
    let mut sink = sink(&url, &[]).await;
    let report = decile_report();
    assert_send(sink.send(&report));
    let err = sink.send(&decile_report()).await.unwrap_err();
    assert!(err.retryable && !err.message.contains(PASSWORD), "{err:?}");
}

#[tokio::test]
async fn wrong_password_is_reported_without_it() {
    let server = RedisServer::start(Some(PASSWORD));
    let url = format!("redis://:wrong-{PASSWORD}@127.0.0.1:{}/0", server.port);
    let mut sink = sink(&url, &[]).await;
    let err = sink.send(&decile_report()).await.unwrap_err();
    assert!(!err.message.contains(PASSWORD), "{err:?}");
    // Retrying a refused password only repeats the refusal.
    assert!(!err.retryable, "{err:?}");
}
