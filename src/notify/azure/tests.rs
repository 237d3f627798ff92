//! Tests of the Azure sink: options and resource ids, error mapping, and the real
//! sink against `python-tests/fakes/azure_fakes.py` (stdlib Python only), which
//! checks every POST as strictly as Azure documents it.

use std::time::Duration;

use clap::Parser;
use serde_json::{json, Value};

use super::token::IdentityEnv;
use super::*;
use crate::cli::Cli;
use crate::notify::testing::{assert_send, decile_report, PythonFake};

const RESOURCE: &str =
    "/subscriptions/0000-1111/resourceGroups/rg-web/providers/Microsoft.Web/sites/shop";
const IDENTITY_HEADER: &str = "identity-header-secret-value";

fn args(extra: &[&str]) -> NotifyArgs {
    let mut argv = vec!["rwsgi", "--notify", "azure"];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv)
        .expect("valid command line")
        .notify
}

// ---------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------

#[test]
fn resource_id_whole_or_in_parts() {
    let whole = AzureConfig::from_args(&args(&[
        "--azure-region",
        "West Europe",
        "--azure-resource-id",
        RESOURCE,
    ]))
    .unwrap();
    assert_eq!(whole.resource_id, RESOURCE);
    assert_eq!(whole.region, "westeurope");
    assert_eq!(whole.namespace, "rwsgi");
    let parts = AzureConfig::from_args(&args(&[
        "--azure-region",
        "westeurope",
        "--azure-subscription-id",
        "0000-1111",
        "--azure-resource-group",
        "rg-web",
        "--azure-provider",
        "Microsoft.Web",
        "--azure-resource-type",
        "sites",
        "--azure-resource-name",
        "shop",
        "--azure-dimension",
        "Env=prod",
    ]))
    .unwrap();
    assert_eq!(parts.resource_id, RESOURCE);
    assert_eq!(
        parts.to_string(),
        format!(
            "azure (resource={RESOURCE}, region=westeurope, namespace=rwsgi, dimension Env=prod)"
        )
    );
}

#[test]
fn config_errors_name_the_options() {
    let region = ["--azure-region", "westeurope"];
    let with_region = |extra: &[&'static str]| -> Vec<&'static str> {
        region
            .iter()
            .copied()
            .chain(extra.iter().copied())
            .collect()
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--azure-resource-id", RESOURCE], "--notify azure needs --azure-region"),
        (with_region(&[]), "needs --azure-resource-id, or all of --azure-subscription-id, --azure-resource-group, --azure-provider, --azure-resource-type, --azure-resource-name"),
        (with_region(&["--azure-subscription-id", "s", "--azure-provider", "Microsoft.Web"]), "missing --azure-resource-group, --azure-resource-type, --azure-resource-name"),
        (with_region(&["--azure-resource-id", RESOURCE, "--azure-resource-group", "rg"]), "not both (also got --azure-resource-group)"),
        (with_region(&["--azure-resource-id", "/subscriptions/s/resourceGroups/rg"]), "--azure-resource-id"),
        (with_region(&["--azure-resource-id", "/subscriptions/s/resourceGroups/rg/providers/P/type"]), "--azure-resource-id"),
        (with_region(&["--azure-resource-id", "/subscriptions/s/resourceGroups/rg/providers/P/t/n?x=1"]), "--azure-resource-id"),
        (with_region(&["--azure-subscription-id", "s", "--azure-resource-group", "a/b", "--azure-provider", "p", "--azure-resource-type", "t", "--azure-resource-name", "n"]), "--azure-resource-group"),
        (with_region(&["--azure-resource-id", RESOURCE, "--azure-endpoint", "localhost:1"]), "--azure-endpoint"),
        (with_region(&["--azure-resource-id", RESOURCE, "--azure-dimension", "novalue"]), "--azure-dimension"),
        (vec!["--azure-region", "west-europe!", "--azure-resource-id", RESOURCE], "--azure-region"),
    ];
    for (argv, expected) in cases {
        let err = AzureConfig::from_args(&args(&argv)).unwrap_err().0;
        assert!(err.contains(expected), "{argv:?}: {err}");
    }
}

#[test]
fn answers_map_to_retryable_or_not() {
    let e = answer_error(
        403,
        "TimeInQueue",
        "AuthorizationFailed: no",
        "managed identity (IMDS)",
        RESOURCE,
    );
    assert!(!e.retryable);
    assert!(
        e.message
            .contains("'Monitoring Metrics Publisher' role on /subscriptions/"),
        "{e:?}"
    );
    // A long service message never cuts the resource id (what to fix) away.
    let long = "AuthorizationFailed: ".to_string() + &"x".repeat(2000);
    let e = answer_error(403, "TimeInQueue", &long, "client secret", RESOURCE);
    assert!(
        e.message.contains(&format!(
            "'Monitoring Metrics Publisher' role on {RESOURCE}"
        )),
        "{e:?}"
    );
    assert!(e.message.len() < 700, "{}", e.message.len());
    assert!(!answer_error(401, "m", "", "client secret", RESOURCE).retryable);
    assert!(answer_error(429, "m", "", "c", RESOURCE).retryable);
    assert!(answer_error(503, "m", "", "c", RESOURCE).retryable);
    assert!(!answer_error(400, "m", "InvalidPayload: x", "c", RESOURCE).retryable);
}

#[test]
fn azure_error_bodies_are_summarised() {
    assert_eq!(
        azure_error(r#"{"error":{"code":"InvalidPayload","message":"bad time"}}"#),
        "InvalidPayload: bad time"
    );
    assert_eq!(
        azure_error(r#"{"Error":{"code":"TokenExpired","message":"old"}}"#),
        "TokenExpired: old"
    );
    assert_eq!(azure_error(" plain text "), "plain text");
}

// ---------------------------------------------------------------------------------
// Against the loopback identity and ingestion endpoints
// ---------------------------------------------------------------------------------

struct Fakes {
    server: PythonFake,
    http: reqwest::Client,
}

impl Fakes {
    fn start(extra: &[&str]) -> Fakes {
        let mut argv = vec!["--identity-header", IDENTITY_HEADER];
        argv.extend_from_slice(extra);
        Fakes {
            server: PythonFake::start("azure_fakes.py", &argv),
            http: reqwest::Client::new(),
        }
    }

    fn sink(&self, header: &str) -> AzureSink {
        let base = self.server.base();
        let config = AzureConfig::from_args(&args(&[
            "--azure-region",
            "westeurope",
            "--azure-resource-id",
            RESOURCE,
            "--azure-endpoint",
            &base,
            "--azure-dimension",
            "Env=test",
        ]))
        .unwrap();
        let env = IdentityEnv {
            identity_endpoint: Some(format!("{base}/msi/token")),
            identity_header: Some(header.to_string()),
            ..Default::default()
        };
        config.build_with(&env).expect("build")
    }

    async fn get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.server.base());
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn configure(&self, conf: Value) {
        let url = format!("{}/_config", self.server.base());
        self.http.post(url).json(&conf).send().await.unwrap();
    }
}

#[tokio::test]
async fn every_metric_is_accepted_field_by_field() {
    let fakes = Fakes::start(&[]);
    let mut sink = fakes.sink(IDENTITY_HEADER);
    let report = decile_report();
    assert_send(sink.send(&report));
    sink.send(&report).await.expect("accepted");
    assert_eq!(fakes.get("/_rejected").await, json!([]));
    let received = fakes.get("/_received").await;
    let posts = received.as_array().unwrap();
    let metrics: Vec<&str> = posts
        .iter()
        .map(|p| p["body"]["data"]["baseData"]["metric"].as_str().unwrap())
        .collect();
    assert_eq!(
        metrics,
        [
            "TimeInQueue",
            "ServerWait",
            "RequestCount",
            "ShedCount",
            "Utilization"
        ]
    );
    assert!(posts
        .iter()
        .all(|p| p["path"] == format!("{RESOURCE}/metrics")));
    let q = &posts[0]["body"]["data"]["baseData"];
    assert_eq!(q["namespace"], "rwsgi");
    assert_eq!(q["dimNames"], json!(["Env"]));
    assert_eq!(
        q["series"],
        json!([{"dimValues": ["test"], "min": 0.0, "max": 0.9, "sum": 4.5, "count": 10}])
    );
    assert_eq!(
        fakes.get("/_state").await["tokens_issued"],
        1,
        "one token for five posts"
    );

    // The same report again (a framework retry) posts nothing twice: Azure would sum it.
    sink.send(&report).await.expect("no-op");
    assert_eq!(fakes.get("/_received").await.as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn forbidden_names_the_role_and_never_the_token() {
    let fakes = Fakes::start(&["--ingest-status", "403"]);
    let mut sink = fakes.sink(IDENTITY_HEADER);
    let err = sink.send(&decile_report()).await.unwrap_err();
    assert!(!err.retryable, "{err:?}");
    assert!(
        err.message.contains("Monitoring Metrics Publisher"),
        "{err:?}"
    );
    assert!(
        err.message.contains("managed identity (App Service)"),
        "{err:?}"
    );
    assert!(!err.message.contains("fake-token"), "{err:?}");
}

#[tokio::test]
async fn throttling_and_outages_are_retryable_and_resume() {
    let fakes = Fakes::start(&["--ingest-status", "503"]);
    let mut sink = fakes.sink(IDENTITY_HEADER);
    let report = decile_report();
    assert!(sink.send(&report).await.unwrap_err().retryable);
    fakes.configure(json!({"ingest_status": null})).await;
    sink.send(&report).await.expect("recovered");
    assert_eq!(fakes.get("/_received").await.as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn wrong_identity_header_fails_without_showing_it() {
    let fakes = Fakes::start(&[]);
    let mut sink = fakes.sink("wrong-header-value");
    let err = sink.send(&decile_report()).await.unwrap_err();
    assert!(!err.retryable, "{err:?}");
    assert!(err.message.contains("HTTP 401"), "{err:?}");
    assert!(!err.message.contains("wrong-header-value"), "{err:?}");
}

#[tokio::test]
async fn tokens_are_cached_then_refreshed_before_they_expire() {
    // A 4 s token is refreshed half-way (2 s), so no post ever carries an expired
    // token, which the fake would answer with 401.
    let fakes = Fakes::start(&["--token-lifetime", "4"]);
    let mut sink = fakes.sink(IDENTITY_HEADER);
    let mut report = decile_report();
    sink.send(&report).await.expect("first");
    report.timestamp += Duration::from_secs(1);
    sink.send(&report).await.expect("second, same token");
    assert_eq!(fakes.get("/_state").await["tokens_issued"], 1);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    report.timestamp += Duration::from_secs(1);
    sink.send(&report).await.expect("third, fresh token");
    assert_eq!(fakes.get("/_state").await["tokens_issued"], 2);
    let received = fakes.get("/_received").await;
    let token_numbers: Vec<u64> = received
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["token_n"].as_u64().unwrap())
        .collect();
    assert_eq!(token_numbers, [vec![1; 10], vec![2; 5]].concat());
    assert_eq!(fakes.get("/_rejected").await, json!([]));
}
