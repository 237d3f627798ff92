//! Tests of the CloudWatch sink: options, error mapping through the real SDK against
//! canned RPC-v2-CBOR answers, and (opt-in) end to end through the CBOR adapter into
//! moto.

use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::cli::Cli;
use crate::notify::testing::{
    assert_send, dead_port, decile_report, python, start_moto, PythonFake,
};

/// Never a real key; asserted absent from every error message.
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzSECRETKEY";

fn args(extra: &[&str]) -> NotifyArgs {
    let mut argv = vec!["rwsgi", "--notify", "cloudwatch"];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv)
        .expect("valid command line")
        .notify
}

fn credentials() -> Credentials {
    Credentials::new("AKIDTESTTESTTEST", SECRET_KEY, None, None, "rwsgi-test")
}

async fn sink_for(endpoint: &str, extra: &[&str]) -> CloudWatchSink {
    let mut argv = vec![
        "--cloudwatch-namespace",
        "Rwsgi/Test",
        "--cloudwatch-region",
        "us-east-1",
    ];
    argv.extend_from_slice(&["--cloudwatch-endpoint", endpoint]);
    argv.extend_from_slice(extra);
    let config = CloudWatchConfig::from_args(&args(&argv)).expect("config");
    config.build_with(Some(credentials())).await.expect("build")
}

// ---------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------

#[test]
fn config_from_args() {
    let c = CloudWatchConfig::from_args(&args(&[
        "--cloudwatch-namespace",
        "MyApp/Web",
        "--cloudwatch-region",
        "eu-west-1",
        "--cloudwatch-dimension",
        "Env=prod",
        "--cloudwatch-unit",
        "milliseconds",
        "--notify-interval",
        "60",
    ]))
    .unwrap();
    assert_eq!(c.namespace, "MyApp/Web");
    assert_eq!(c.region.as_deref(), Some("eu-west-1"));
    assert_eq!(c.endpoint, None);
    assert_eq!(c.dimensions, vec![("Env".to_string(), "prod".to_string())]);
    assert_eq!(c.unit, TimeUnit::Milliseconds);
    assert_eq!(datums::storage_resolution(c.interval), 60);
    assert_eq!(
        c.to_string(),
        "cloudwatch (namespace=MyApp/Web, region=eu-west-1, dimension Env=prod, unit=milliseconds)"
    );
}

#[test]
fn config_errors_name_the_option() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "--notify cloudwatch needs --cloudwatch-namespace"),
        (&["--cloudwatch-namespace", " "], "--cloudwatch-namespace"),
        (&["--cloudwatch-namespace", "AWS/EC2"], "reserved"),
        (
            &["--cloudwatch-namespace", "n", "--cloudwatch-unit", "hours"],
            "--cloudwatch-unit",
        ),
        (
            &["--cloudwatch-namespace", "n", "--cloudwatch-dimension", "x"],
            "--cloudwatch-dimension",
        ),
        (
            &[
                "--cloudwatch-namespace",
                "n",
                "--cloudwatch-endpoint",
                "localhost:4566",
            ],
            "--cloudwatch-endpoint",
        ),
        (
            &[
                "--cloudwatch-namespace",
                "n",
                "--cloudwatch-region",
                "eu west",
            ],
            "--cloudwatch-region",
        ),
        (
            &["--cloudwatch-namespace", "n", "--notify-interval", "0"],
            "--notify-interval",
        ),
    ];
    for (argv, expected) in cases {
        let err = CloudWatchConfig::from_args(&args(argv)).unwrap_err().0;
        assert!(err.contains(expected), "{argv:?}: {err}");
    }
}

#[test]
fn retryable_statuses_and_codes() {
    assert!(is_retryable(Some(400), Some("Throttling")));
    assert!(is_retryable(Some(429), None));
    assert!(is_retryable(Some(500), Some("InternalServiceError")));
    assert!(is_retryable(Some(503), None));
    assert!(is_retryable(None, None));
    assert!(!is_retryable(Some(400), Some("InvalidParameterValue")));
    assert!(!is_retryable(Some(403), Some("AccessDenied")));
}

// ---------------------------------------------------------------------------------
// The real SDK against canned RPC-v2-CBOR answers
// ---------------------------------------------------------------------------------

/// CBOR for a map of text to text: all an RPC-v2-CBOR error body needs.
fn cbor_text_map(pairs: &[(&str, &str)]) -> Vec<u8> {
    fn head(major: u8, len: usize, out: &mut Vec<u8>) {
        match len {
            0..=23 => out.push(major << 5 | len as u8),
            24..=255 => out.extend([major << 5 | 24, len as u8]),
            _ => {
                out.push(major << 5 | 25);
                out.extend((len as u16).to_be_bytes());
            }
        }
    }
    let mut out = Vec::new();
    head(5, pairs.len(), &mut out);
    for (k, v) in pairs {
        for s in [k, v] {
            head(3, s.len(), &mut out);
            out.extend(s.as_bytes());
        }
    }
    out
}

/// Serves one canned answer to every request and hands back the request heads.
async fn canned(
    status: u16,
    headers: &'static str,
    body: Vec<u8>,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read the head and as much body as Content-Length says.
            loop {
                let n = stream.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        let _ = tx.send(text[..end].to_string());
                        break;
                    }
                }
            }
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/cbor\r\nsmithy-protocol: rpc-v2-cbor\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body).await;
        }
    });
    (url, rx)
}

#[tokio::test]
async fn success_sends_rpc_v2_cbor_to_the_documented_route() {
    let (url, mut heads) = canned(200, "", vec![0xa0]).await;
    let mut sink = sink_for(&url, &[]).await;
    let report = decile_report();
    assert_send(sink.send(&report));
    sink.send(&report).await.expect("accepted");
    let head = heads.recv().await.unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with("post /service/graniteserviceversion20100801/operation/putmetricdata "),
        "{head}"
    );
    assert!(head.contains("smithy-protocol: rpc-v2-cbor"), "{head}");
    assert!(head.contains("content-type: application/cbor"), "{head}");
}

#[tokio::test]
async fn validation_errors_are_permanent_and_throttling_is_retried() {
    let cases: [(u16, &'static str, &str, bool, &str); 3] = [
        (
            400,
            "x-amzn-query-error: InvalidParameterValue;Sender\r\n",
            "com.amazonaws.cloudwatch#InvalidParameterValueException",
            false,
            "InvalidParameterValue",
        ),
        (
            400,
            "x-amzn-query-error: Throttling;Sender\r\n",
            "com.amazonaws.cloudwatch#ThrottlingException",
            true,
            "Throttling",
        ),
        (503, "", "ServiceUnavailable", true, "HTTP 503"),
    ];
    for (status, header, type_, retryable, expected) in cases {
        let body = cbor_text_map(&[("__type", type_), ("message", "nope")]);
        let (url, _heads) = canned(status, header, body).await;
        let mut sink = sink_for(&url, &[]).await;
        let err = sink.send(&decile_report()).await.unwrap_err();
        assert_eq!(err.retryable, retryable, "{err:?}");
        assert!(err.message.contains(expected), "{err:?}");
        assert!(!err.message.contains(SECRET_KEY), "{err:?}");
    }
}

#[tokio::test]
async fn dead_endpoint_fails_fast_and_retryable() {
    let mut sink = sink_for(&format!("http://127.0.0.1:{}", dead_port()), &[]).await;
    let started = Instant::now();
    let err = sink.send(&decile_report()).await.unwrap_err();
    assert!(err.retryable, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(!err.message.contains(SECRET_KEY), "{err:?}");
}

// ---------------------------------------------------------------------------------
// End to end: SDK -> cbor_moto_adapter.py -> moto_server
// ---------------------------------------------------------------------------------

/// GetMetricStatistics straight from moto (JSON 1.0): (SampleCount, Sum) of `metric`.
async fn moto_statistics(moto_port: u16, metric: &str) -> (f64, f64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let body = serde_json::json!({
        "Namespace": "Rwsgi/Test", "MetricName": metric,
        "StartTime": now - 600.0, "EndTime": now + 600.0, "Period": 3600,
        "Statistics": ["SampleCount", "Sum"],
        "Dimensions": [{"Name": "Env", "Value": "e2e"}],
    });
    let response: serde_json::Value = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{moto_port}/"))
        .header("Content-Type", "application/x-amz-json-1.0")
        .header("X-Amz-Target", "GraniteServiceVersion20100801.GetMetricStatistics")
        .header("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDTESTTESTTEST/20260101/us-east-1/monitoring/aws4_request, SignedHeaders=host, Signature=0")
        .body(body.to_string())
        .send()
        .await
        .expect("moto answers")
        .json()
        .await
        .expect("JSON");
    let points = response["Datapoints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(points.len(), 1, "{metric}: {response}");
    (
        points[0]["SampleCount"].as_f64().unwrap(),
        points[0]["Sum"].as_f64().unwrap(),
    )
}

#[tokio::test]
async fn end_to_end_through_the_cbor_adapter_into_moto() {
    // RWSGI_TEST_MOTO_PORT: use a moto_server started by hand, to inspect it after.
    let external = std::env::var("RWSGI_TEST_MOTO_PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok());
    let (_moto, moto_port) = match external {
        Some(port) => (None, port),
        None => {
            let (process, port) = start_moto();
            (Some(process), port)
        }
    };
    let adapter = PythonFake::start(
        "cbor_moto_adapter.py",
        &["--moto", &format!("http://127.0.0.1:{moto_port}")],
    );
    let mut sink = sink_for(&adapter.base(), &["--cloudwatch-dimension", "Env=e2e"]).await;
    let report = decile_report();
    sink.send(&report)
        .await
        .unwrap_or_else(|e| panic!("PutMetricData via {} failed: {e:?}", python()));

    // Values/Counts are made exact: CloudWatch's SampleCount and Sum are what the
    // tracker measured.
    let (count, sum) = moto_statistics(moto_port, "TimeInQueue").await;
    assert_eq!(count, report.queue_time.count as f64);
    let sent = report.queue_time.sum;
    assert!((sum - sent).abs() < 1e-9, "{sum} vs {sent}");
    // Without a distribution, StatisticValues are stored as sent.
    let (count, sum) = moto_statistics(moto_port, "ServerWait").await;
    assert_eq!((count, sum), (12.0, report.server_wait.sum));
    let (_, requests) = moto_statistics(moto_port, "RequestCount").await;
    assert_eq!(requests, report.requests() as f64);

    // A busy interval: 150 distinct values on each of the three time metrics.
    let mut big = report.clone();
    big.timestamp += Duration::from_secs(1);
    let dist: Vec<(f64, u64)> = (1..=150).map(|i| (i as f64 / 1000.0, 2)).collect();
    for m in [&mut big.queue_time, &mut big.server_wait, &mut big.app_time] {
        m.count = 300;
        m.sum = dist.iter().map(|(v, c)| v * *c as f64).sum();
        m.min = 0.001;
        m.max = 0.15;
        m.distribution = dist.clone();
    }
    sink.send(&big)
        .await
        .expect("a full PutMetricData is accepted");
    let seen: serde_json::Value = reqwest::get(format!("{}/_requests", adapter.base()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let last = &seen.as_array().unwrap().last().unwrap()["params"]["MetricData"];
    assert_eq!(last[0]["Values"].as_array().unwrap().len(), 150);
    assert!(
        last[0].get("StatisticValues").is_none(),
        "StatisticValues and Values are mutually exclusive in CloudWatch"
    );
    let (count, sum) = moto_statistics(moto_port, "TimeInQueue").await;
    assert_eq!(count, 310.0, "both reports fall in one hour-long period");
    let sent = report.queue_time.sum + big.queue_time.sum;
    assert!((sum - sent).abs() < 1e-9, "moto's Sum {sum} vs sent {sent}");
}
