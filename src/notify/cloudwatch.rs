//! `--notify cloudwatch`: one `PutMetricData` call per interval, through the AWS SDK.
//!
//! This file owns the options ([`CloudWatchConfig`]), the client and the mapping of
//! SDK errors to [`SinkError`]; the datums themselves are built in [`datums`].
//!
//! Credentials come only from the SDK's standard chain (environment, shared profile,
//! web identity / IRSA, ECS task role, EC2 instance role), never from a flag, so no
//! key can end up in a process list or a config dump. The region comes from
//! `--cloudwatch-region`, else from that chain; the endpoint from
//! `--cloudwatch-endpoint`, else `AWS_ENDPOINT_URL[_CLOUDWATCH]`, which the SDK reads.
//!
//! The SDK's own retries are switched off: the notifier framework owns retries and
//! backoff for every sink, and two retry loops stacked would overrun the interval.
//!
//! IAM: the identity needs `cloudwatch:PutMetricData` and nothing else.

use std::fmt;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_cloudwatch::config::http::HttpResponse;
use aws_sdk_cloudwatch::config::Credentials;
use aws_sdk_cloudwatch::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatch::types::Dimension;
use aws_sdk_cloudwatch::Client;

mod datums;
#[cfg(test)]
mod tests;

use super::redact::{redact_url, truncate};
use super::{dimensions, SinkError};
use crate::cli::NotifyArgs;
use crate::error::ConfigError;
use crate::tracker::report::Report;
use datums::Common;
pub use datums::TimeUnit;

/// A TCP connect slower than this is a dead endpoint, not a slow one; failing fast
/// keeps a dead endpoint at one log line per interval.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Bound of one HTTP attempt, under the framework's per-send timeout so that the SDK
/// reports a clean "timed out" instead of being cancelled mid-flight.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);

/// Longest error text passed on; SDK error chains can quote whole response bodies.
const MAX_MESSAGE: usize = 300;

/// What CloudWatch accepts per dimension, checked at start.
const DIMENSION_LIMITS: dimensions::Limits = dimensions::Limits {
    max_count: 30,
    max_name: 255,
    max_value: 1024,
};

// ---------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------

/// Validated `--cloudwatch-*` options. Holds no secret: credentials stay in the
/// AWS chain.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudWatchConfig {
    /// Metric namespace, e.g. `MyApp/Web`; required because CloudWatch has no default.
    pub namespace: String,
    /// Region override; `None` lets the AWS chain decide (env, profile, IMDS).
    pub region: Option<String>,
    /// Endpoint override for tests and VPC endpoints; `None` lets the SDK decide.
    pub endpoint: Option<String>,
    /// Dimensions added to every metric. None by default, so that all hosts of a
    /// service land in one metric and one alarm covers the whole fleet.
    pub dimensions: Vec<(String, String)>,
    /// Unit of TimeInQueue, ServerWait and AppTime.
    pub unit: TimeUnit,
    /// `--notify-interval`: decides the storage resolution.
    pub interval: Duration,
    /// Keys from request-time-tracker's Django settings, used instead of the AWS
    /// chain when present; never from an option.
    pub aws_keys: Option<crate::config::django::AwsKeys>,
}

impl CloudWatchConfig {
    /// Checks every `--cloudwatch-*` option; errors name the option at fault.
    pub fn from_args(args: &NotifyArgs) -> Result<CloudWatchConfig, ConfigError> {
        let namespace = args
            .cloudwatch_namespace
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .ok_or("--notify cloudwatch needs --cloudwatch-namespace")?
            .to_string();
        if namespace.chars().count() > 255 {
            return Err("--cloudwatch-namespace is longer than 255 characters".into());
        }
        if namespace.starts_with("AWS/") {
            return Err(ConfigError(format!(
                "--cloudwatch-namespace '{namespace}': namespaces starting with AWS/ are reserved"
            )));
        }
        let region = non_empty(args.cloudwatch_region.as_deref());
        if let Some(r) = &region {
            if !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(ConfigError(format!(
                    "--cloudwatch-region '{r}' is not a region name"
                )));
            }
        }
        let endpoint = non_empty(args.cloudwatch_endpoint.as_deref());
        if let Some(e) = &endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(ConfigError(format!(
                    "--cloudwatch-endpoint must be an http:// or https:// URL (got '{e}')"
                )));
            }
        }
        Ok(CloudWatchConfig {
            namespace,
            region,
            endpoint,
            dimensions: dimensions::parse(
                "--cloudwatch-dimension",
                &args.cloudwatch_dimensions,
                DIMENSION_LIMITS,
            )?,
            unit: TimeUnit::parse(&args.cloudwatch_unit)?,
            interval: interval(args.notify_interval)?,
            aws_keys: None,
        })
    }

    /// Loads the AWS configuration (region and credential chain) and makes the
    /// client. No request is sent here; credentials are resolved on first use.
    pub async fn build(&self) -> Result<CloudWatchSink, ConfigError> {
        let keys = self.aws_keys.as_ref().map(|k| {
            Credentials::new(
                k.access_key_id.clone(),
                k.secret_access_key.clone(),
                None,
                None,
                "django-settings",
            )
        });
        self.build_with(keys).await
    }

    /// [`CloudWatchConfig::build`] with fixed credentials instead of the chain, so
    /// tests never touch the process environment.
    pub(crate) async fn build_with(
        &self,
        credentials: Option<Credentials>,
    ) -> Result<CloudWatchSink, ConfigError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            );
        if let Some(credentials) = credentials {
            loader = loader.credentials_provider(credentials);
        }
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(
                "--notify cloudwatch needs a region: give --cloudwatch-region or set \
                        AWS_REGION (or a region in the AWS profile)"
                    .into(),
            );
        }
        let mut conf = aws_sdk_cloudwatch::config::Builder::from(&sdk);
        if let Some(endpoint) = &self.endpoint {
            conf = conf.endpoint_url(endpoint);
        }
        let endpoint = self.endpoint.as_deref().or(sdk.endpoint_url());
        tracing::info!(
            sink = "cloudwatch",
            namespace = %self.namespace,
            region = %sdk.region().map_or("", |r| r.as_ref()),
            endpoint = %endpoint.map_or("<AWS default>".to_string(), redact_url),
            "cloudwatch sink ready"
        );
        Ok(CloudWatchSink {
            client: Client::from_conf(conf.build()),
            namespace: self.namespace.clone(),
            dimensions: self
                .dimensions
                .iter()
                .map(|(n, v)| Dimension::builder().name(n).value(v).build())
                .collect(),
            unit: self.unit,
            storage_resolution: datums::storage_resolution(self.interval),
        })
    }
}

/// `cloudwatch (namespace=…, …)` for `--print-config`; nothing here is secret.
impl fmt::Display for CloudWatchConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cloudwatch (namespace={}", self.namespace)?;
        write!(
            f,
            ", region={}",
            self.region.as_deref().unwrap_or("<AWS chain>")
        )?;
        if let Some(e) = &self.endpoint {
            write!(f, ", endpoint={}", redact_url(e))?;
        }
        for (n, v) in &self.dimensions {
            write!(f, ", dimension {n}={v}")?;
        }
        write!(f, ", unit={})", self.unit.name())
    }
}

fn non_empty(v: Option<&str>) -> Option<String> {
    v.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `--notify-interval` as a `Duration`; the framework checks it too, but the storage
/// resolution must not be derived from garbage.
fn interval(secs: f64) -> Result<Duration, ConfigError> {
    if secs.is_finite() && secs > 0.0 {
        Duration::try_from_secs_f64(secs)
            .map_err(|_| ConfigError(format!("--notify-interval is too large (got {secs})")))
    } else {
        Err(ConfigError(format!(
            "--notify-interval must be > 0 (got {secs})"
        )))
    }
}

// ---------------------------------------------------------------------------------
// Sink
// ---------------------------------------------------------------------------------

/// A ready CloudWatch client plus everything each call repeats.
pub struct CloudWatchSink {
    /// Cheap to keep: it caches credentials and pools connections across intervals.
    client: Client,
    /// Target namespace.
    namespace: String,
    /// Built once, cloned into every datum.
    dimensions: Vec<Dimension>,
    /// Unit of the time metrics.
    unit: TimeUnit,
    /// 1 or 60, fixed for the life of the process so a series never mixes the two.
    storage_resolution: i32,
}

impl CloudWatchSink {
    /// Builds the sink from its config (same as [`CloudWatchConfig::build`]).
    pub async fn build(config: CloudWatchConfig) -> Result<CloudWatchSink, ConfigError> {
        config.build().await
    }

    /// The `--notify` name, used as the `sink` field of log lines.
    pub fn name(&self) -> &'static str {
        "cloudwatch"
    }

    /// Sends every metric of `report` in one `PutMetricData` call. The call is
    /// all-or-nothing on CloudWatch's side, so a retry never double-counts.
    pub async fn send(&mut self, report: &Report) -> Result<(), SinkError> {
        let common = Common {
            dimensions: &self.dimensions,
            unit: self.unit,
            storage_resolution: self.storage_resolution,
        };
        let data = datums::build(report, &common);
        self.client
            .put_metric_data()
            .namespace(&self.namespace)
            .set_metric_data(Some(data))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(&e))
    }
}

/// Maps an SDK error to a log-safe [`SinkError`]. The SDK never puts credentials in
/// its errors; bodies are truncated because they are the service's text, not ours.
fn classify<E>(err: &SdkError<E, HttpResponse>) -> SinkError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (retryable, message) = match err {
        SdkError::TimeoutError(_) => (true, "PutMetricData timed out".to_string()),
        // Includes "no credentials": the chain may find them on the next attempt
        // (IMDS and ECS endpoints have hiccups).
        SdkError::DispatchFailure(_) => (
            true,
            format!("PutMetricData not sent: {}", DisplayErrorContext(err)),
        ),
        SdkError::ConstructionFailure(_) => (
            false,
            format!("PutMetricData not built: {}", DisplayErrorContext(err)),
        ),
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = err.code().unwrap_or("unknown");
            (
                is_retryable(Some(status), Some(code)),
                format!(
                    "PutMetricData refused (HTTP {status}): {code}: {}",
                    err.message().unwrap_or("")
                ),
            )
        }
        SdkError::ResponseError(response) => (
            is_retryable(Some(response.raw().status().as_u16()), None),
            format!(
                "PutMetricData got an unreadable response: {}",
                DisplayErrorContext(err)
            ),
        ),
        _ => (
            true,
            format!("PutMetricData failed: {}", DisplayErrorContext(err)),
        ),
    };
    SinkError {
        retryable,
        message: truncate(message, MAX_MESSAGE),
    }
}

/// Throttling and server-side trouble pass; validation errors (4xx) repeat forever.
pub(crate) fn is_retryable(status: Option<u16>, code: Option<&str>) -> bool {
    const THROTTLING: &[&str] = &[
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "LimitExceededException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalServiceError",
        "RequestTimeout",
    ];
    if code.is_some_and(|c| THROTTLING.contains(&c)) {
        return true;
    }
    match status {
        Some(s) => s == 408 || s == 429 || s >= 500,
        None => true,
    }
}
