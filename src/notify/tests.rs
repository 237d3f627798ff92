//! Tests of the notifier framework: isolation between sinks, the bounded backlog,
//! timeouts, retries and the shutdown flush, with scripted probe sinks and a real
//! statsd socket.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::testing::{args, sample_report, wait_until, ProbeSink};
use super::*;
use crate::cli::LogFormat;

/// Waits for the next report number a probe accepts.
async fn next(delivered: &mut mpsc::UnboundedReceiver<u64>) -> u64 {
    tokio::time::timeout(Duration::from_secs(5), delivered.recv())
        .await
        .expect("a delivery in time")
        .expect("probe alive")
}

fn stats_of(notifier: &Notifier, name: &str) -> SinkStats {
    *notifier
        .stats()
        .iter()
        .find(|s| s.name == name)
        .expect("sink")
}

#[tokio::test]
async fn a_hanging_sink_does_not_delay_another() {
    let receiver = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let host = receiver.local_addr().expect("addr").to_string();
    let statsd = NotifyConfig::from_args(
        &args(&["--notify", "statsd", "--statsd-host", &host]),
        false,
        LogFormat::Human,
    )
    .expect("valid")
    .sinks()[0]
        .build()
        .await
        .expect("builds");
    let (stuck, stuck_handle) = ProbeSink::hanging("stuck");
    // A long interval: the stuck sink's own timeout is then MAX_SEND_TIMEOUT (5 s).
    let notifier = Notifier::spawn(Duration::from_secs(60), vec![Sink::Probe(stuck), statsd]);

    let started = Instant::now();
    notifier.publish(sample_report(1));
    let mut buf = [0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(2), receiver.recv(&mut buf))
        .await
        .expect("statsd gets its datagram well before the stuck sink's 5 s timeout")
        .expect("recv");
    assert!(std::str::from_utf8(&buf[..n])
        .expect("utf-8")
        .contains("rwsgi.queue_time:"));
    assert!(started.elapsed() < MAX_SEND_TIMEOUT);
    assert_eq!(
        stuck_handle.attempts.load(Ordering::SeqCst),
        1,
        "the stuck sink is still in its first send"
    );
    assert_eq!(stats_of(&notifier, "stuck").delivered, 0);
}

#[tokio::test]
async fn a_stuck_sink_keeps_only_the_newest_reports_and_counts_the_rest() {
    let (stuck, mut stuck_handle) = ProbeSink::hanging("stuck");
    let (fast, mut fast_handle) = ProbeSink::new("fast");
    let notifier = Notifier::spawn(
        Duration::from_secs(60),
        vec![Sink::Probe(stuck), Sink::Probe(fast)],
    );

    notifier.publish(sample_report(1));
    let attempts = stuck_handle.attempts.clone();
    wait_until(
        "the stuck sink to take report 1",
        Duration::from_secs(5),
        || attempts.load(Ordering::SeqCst) == 1,
    )
    .await;
    let started = std::time::Instant::now();
    for n in 2..=10 {
        notifier.publish(sample_report(n));
        // Lets the fast sink keep up, as it would with reports an interval apart.
        tokio::task::yield_now().await;
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "publish never waits on a sink"
    );
    for n in 1..=10 {
        assert_eq!(
            next(&mut fast_handle.delivered).await,
            n,
            "the fast sink gets every report"
        );
    }

    stuck_handle.gate.add_permits(100);
    let mut got = Vec::new();
    for _ in 0..1 + BACKLOG {
        got.push(next(&mut stuck_handle.delivered).await);
    }
    assert_eq!(
        got,
        [1, 7, 8, 9, 10],
        "the report in flight, then the newest BACKLOG"
    );
    let stuck = stats_of(&notifier, "stuck");
    assert_eq!((stuck.delivered, stuck.failed, stuck.dropped), (5, 0, 5));
    assert_eq!(stats_of(&notifier, "fast").dropped, 0);
    notifier.shutdown(Duration::from_secs(1)).await;
    assert!(
        stuck_handle.delivered.recv().await.is_none(),
        "nothing more after the newest"
    );
}

#[tokio::test]
async fn a_send_that_hangs_times_out_as_a_failure() {
    let (stuck, handle) = ProbeSink::hanging("stuck");
    // Interval 200 ms: the per-send timeout and the whole retry budget are 200 ms.
    let notifier = Notifier::spawn(Duration::from_millis(200), vec![Sink::Probe(stuck)]);
    notifier.publish(sample_report(1));
    wait_until("the timeout", Duration::from_secs(5), || {
        stats_of(&notifier, "stuck").failed == 1
    })
    .await;
    assert_eq!(
        handle.attempts.load(Ordering::SeqCst),
        1,
        "no retry fits in the budget"
    );
    assert_eq!(stats_of(&notifier, "stuck").delivered, 0);
}

#[tokio::test]
async fn retryable_errors_are_retried_until_delivered() {
    let (probe, mut handle) = ProbeSink::new("flaky");
    let notifier = Notifier::spawn(
        Duration::from_secs(2),
        vec![Sink::Probe(probe.failing(2, true))],
    );
    notifier.publish(sample_report(1));
    assert_eq!(next(&mut handle.delivered).await, 1);
    assert_eq!(handle.attempts.load(Ordering::SeqCst), 3);
    let s = stats_of(&notifier, "flaky");
    assert_eq!((s.delivered, s.failed), (1, 0));
}

#[tokio::test]
async fn retries_are_bounded() {
    let (probe, handle) = ProbeSink::new("down");
    let notifier = Notifier::spawn(
        Duration::from_secs(10),
        vec![Sink::Probe(probe.failing(100, true))],
    );
    notifier.publish(sample_report(1));
    wait_until("giving up", Duration::from_secs(5), || {
        stats_of(&notifier, "down").failed == 1
    })
    .await;
    assert_eq!(handle.attempts.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let (probe, mut handle) = ProbeSink::new("denied");
    let notifier = Notifier::spawn(
        Duration::from_secs(10),
        vec![Sink::Probe(probe.failing(1, false))],
    );
    notifier.publish(sample_report(1));
    wait_until("the failure", Duration::from_secs(5), || {
        stats_of(&notifier, "denied").failed == 1
    })
    .await;
    assert_eq!(handle.attempts.load(Ordering::SeqCst), 1);
    // The sink still takes the next report.
    notifier.publish(sample_report(2));
    assert_eq!(next(&mut handle.delivered).await, 2);
}

#[tokio::test]
async fn shutdown_flushes_the_last_report() {
    let (probe, mut handle) = ProbeSink::new("probe");
    let notifier = Notifier::spawn(Duration::from_secs(10), vec![Sink::Probe(probe)]);
    notifier.publish(sample_report(1));
    notifier.publish(sample_report(2));
    notifier.shutdown(Duration::from_secs(2)).await;
    assert_eq!(handle.delivered.try_recv(), Ok(1));
    assert_eq!(
        handle.delivered.try_recv(),
        Ok(2),
        "the final partial interval is delivered"
    );
}

#[tokio::test]
async fn shutdown_gives_up_on_a_stuck_sink_at_the_deadline() {
    let (stuck, _stuck_handle) = ProbeSink::hanging("stuck");
    let (probe, mut handle) = ProbeSink::new("probe");
    let notifier = Notifier::spawn(
        Duration::from_secs(60),
        vec![Sink::Probe(stuck), Sink::Probe(probe)],
    );
    notifier.publish(sample_report(1));
    let started = Instant::now();
    notifier.shutdown(Duration::from_millis(300)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "waited for the stuck sink until the deadline: {took:?}"
    );
    assert!(
        took < MAX_SEND_TIMEOUT,
        "did not wait for the stuck sink's own timeout: {took:?}"
    );
    assert_eq!(
        handle.delivered.try_recv(),
        Ok(1),
        "the healthy sink flushed"
    );
}

#[tokio::test]
async fn without_sinks_publish_and_shutdown_are_no_ops() {
    let config = NotifyConfig::from_args(&args(&[]), false, LogFormat::Human).expect("valid");
    let notifier = Notifier::start(config).await.expect("starts");
    notifier.publish(sample_report(1));
    assert!(notifier.stats().is_empty());
    assert_eq!(notifier.metrics_addr(), None);
    notifier.shutdown(Duration::from_millis(100)).await;
}
