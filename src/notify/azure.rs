//! `--notify azure`: Azure Monitor custom metrics, one POST per metric per interval.
//!
//! This file owns the options ([`AzureConfig`]: resource id, region, endpoint), the
//! POSTs and the mapping of answers to [`SinkError`]. The bodies are built in
//! [`body`], the bearer tokens come from [`token`] (which credential is chosen, and
//! in which order, is documented there).
//!
//! The token is attached by hand with reqwest: `azure_core`'s bearer-token policy
//! refuses plain-http URLs, and tests post to a loopback ingestion endpoint.
//!
//! Role: the identity needs **Monitoring Metrics Publisher** on the resource.

use std::fmt;
use std::time::{Duration, SystemTime};

use reqwest::{StatusCode, Url};

mod body;
mod managed_identity;
#[cfg(test)]
mod tests;
mod token;

use super::redact::{redact_url, scrub, truncate};
use super::{dimensions, SinkError};
use crate::cli::NotifyArgs;
use crate::error::ConfigError;
use crate::tracker::report::Report;
use token::{Credential, IdentityEnv, TokenCache};

/// Azure custom metrics take at most 10 dimensions per metric.
const DIMENSION_LIMITS: dimensions::Limits = dimensions::Limits {
    max_count: 10,
    max_name: 256,
    max_value: 1024,
};

/// Longest error text passed on; Azure error bodies can be long.
const MAX_MESSAGE: usize = 300;

/// The role whose absence a 401/403 almost always means; named in the error so
/// the operator knows what to grant.
const ROLE: &str = "Monitoring Metrics Publisher";

// ---------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------

/// Validated `--azure-*` options. Holds no secret: credentials stay in the
/// environment and are read by [`AzureConfig::build`].
#[derive(Debug, Clone, PartialEq)]
pub struct AzureConfig {
    /// `/subscriptions/…/resourceGroups/…/providers/…/…/…`: metrics attach to it.
    pub resource_id: String,
    /// Region of the resource; the ingestion host is regional.
    pub region: String,
    /// Base URL replacing `https://{region}.monitoring.azure.com` (tests).
    pub endpoint: Option<String>,
    /// Custom-metric namespace.
    pub namespace: String,
    /// Dimensions added to every metric.
    pub dimensions: Vec<(String, String)>,
}

impl AzureConfig {
    /// Checks every `--azure-*` option; errors name the options at fault.
    pub fn from_args(args: &NotifyArgs) -> Result<AzureConfig, ConfigError> {
        let region = non_empty(&args.azure_region)
            .ok_or("--notify azure needs --azure-region (e.g. westeurope)")?;
        // "West Europe" is how the portal shows it; the host wants "westeurope".
        let region: String = region
            .split_whitespace()
            .collect::<String>()
            .to_ascii_lowercase();
        if !region.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ConfigError(format!(
                "--azure-region '{region}' is not a region name"
            )));
        }
        let endpoint = match non_empty(&args.azure_endpoint) {
            Some(e) if e.starts_with("http://") || e.starts_with("https://") => {
                Some(e.trim_end_matches('/').to_string())
            }
            Some(e) => {
                return Err(ConfigError(format!(
                    "--azure-endpoint must be an http:// or https:// URL (got '{e}')"
                )))
            }
            None => None,
        };
        let namespace = args.azure_namespace.trim();
        if namespace.is_empty() {
            return Err("--azure-namespace must not be empty".into());
        }
        Ok(AzureConfig {
            resource_id: resource_id(args)?,
            region,
            endpoint,
            namespace: namespace.to_string(),
            dimensions: dimensions::parse(
                "--azure-dimension",
                &args.azure_dimensions,
                DIMENSION_LIMITS,
            )?,
        })
    }

    /// Chooses the credential from the environment and makes the HTTP clients. No
    /// request is sent here; the first token is fetched by the first report.
    pub async fn build(&self) -> Result<AzureSink, ConfigError> {
        self.build_with(&IdentityEnv::from_process())
    }

    /// [`AzureConfig::build`] with an explicit environment, so tests never mutate
    /// the process environment.
    pub(crate) fn build_with(&self, env: &IdentityEnv) -> Result<AzureSink, ConfigError> {
        let credential = Credential::from_env(env)?;
        let tokens = TokenCache::new(credential)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(4))
            .build()
            .map_err(|e| format!("--notify azure: HTTP client: {e}"))?;
        let base = match &self.endpoint {
            Some(e) => e.clone(),
            None => format!("https://{}.monitoring.azure.com", self.region),
        };
        let url = Url::parse(&format!("{base}{}/metrics", self.resource_id)).map_err(|e| {
            format!("--notify azure: ingestion URL from --azure-endpoint/--azure-resource-id: {e}")
        })?;
        tracing::info!(
            sink = "azure",
            credential = tokens.kind(),
            url = %redact_url(url.as_str()),
            "azure monitor sink ready"
        );
        Ok(AzureSink {
            http,
            url,
            tokens,
            namespace: self.namespace.clone(),
            dimensions: self.dimensions.clone(),
            resource_id: self.resource_id.clone(),
            delivered: None,
        })
    }
}

/// `azure (resource=…, …)` for `--print-config`; nothing here is secret.
impl fmt::Display for AzureConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "azure (resource={}, region={}",
            self.resource_id, self.region
        )?;
        if let Some(e) = &self.endpoint {
            write!(f, ", endpoint={}", redact_url(e))?;
        }
        write!(f, ", namespace={}", self.namespace)?;
        for (n, v) in &self.dimensions {
            write!(f, ", dimension {n}={v}")?;
        }
        f.write_str(")")
    }
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The resource id: given whole, or built from its five parts as
/// request-time-tracker took them. One form or the other, never a mix.
pub(crate) fn resource_id(args: &NotifyArgs) -> Result<String, ConfigError> {
    let parts = [
        (
            "--azure-subscription-id",
            non_empty(&args.azure_subscription_id),
        ),
        (
            "--azure-resource-group",
            non_empty(&args.azure_resource_group),
        ),
        ("--azure-provider", non_empty(&args.azure_provider)),
        (
            "--azure-resource-type",
            non_empty(&args.azure_resource_type),
        ),
        (
            "--azure-resource-name",
            non_empty(&args.azure_resource_name),
        ),
    ];
    let given: Vec<&str> = parts
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(n, _)| *n)
        .collect();
    if let Some(id) = non_empty(&args.azure_resource_id) {
        if !given.is_empty() {
            return Err(ConfigError(format!(
                "--notify azure: give either --azure-resource-id or its parts, not both (also got {})",
                given.join(", ")
            )));
        }
        return validate_resource_id(id.trim_end_matches('/'));
    }
    let missing: Vec<&str> = parts
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| *n)
        .collect();
    if given.is_empty() {
        return Err(ConfigError(format!(
            "--notify azure needs --azure-resource-id, or all of {}",
            missing.join(", ")
        )));
    }
    if !missing.is_empty() {
        return Err(ConfigError(format!(
            "--notify azure: the resource id is incomplete, missing {}",
            missing.join(", ")
        )));
    }
    let v: Vec<&str> = parts.iter().filter_map(|(_, v)| *v).collect();
    for (name, value) in parts.iter().filter_map(|(n, v)| v.map(|v| (n, v))) {
        if value.contains(['/', '?', '#']) || value.contains(char::is_whitespace) {
            return Err(ConfigError(format!(
                "{name} '{value}' must be a single path segment"
            )));
        }
    }
    validate_resource_id(&format!(
        "/subscriptions/{}/resourceGroups/{}/providers/{}/{}/{}",
        v[0], v[1], v[2], v[3], v[4]
    ))
}

/// Shape check only (Azure itself says whether the resource exists): starts with
/// `/subscriptions/`, has `resourceGroups` and `providers` segments, an even number
/// of type/name segments after the provider, and nothing a URL would reinterpret.
fn validate_resource_id(id: &str) -> Result<String, ConfigError> {
    let bad = |why: &str| Err(ConfigError(format!("--azure-resource-id '{id}' {why}")));
    if id.contains(['?', '#', '\\']) || id.contains(char::is_whitespace) {
        return bad("contains characters a resource id cannot have");
    }
    let segments: Vec<&str> = id.split('/').collect();
    // "", "subscriptions", sub, "resourceGroups", rg, "providers", ns, type, name, ...
    if segments.len() < 9
        || !segments[0].is_empty()
        || segments.iter().skip(1).any(|s| s.is_empty())
    {
        return bad("is not /subscriptions/SUB/resourceGroups/RG/providers/NAMESPACE/TYPE/NAME");
    }
    let eq = |i: usize, word: &str| segments[i].eq_ignore_ascii_case(word);
    if !(eq(1, "subscriptions") && eq(3, "resourceGroups") && eq(5, "providers")) {
        return bad("is not /subscriptions/SUB/resourceGroups/RG/providers/NAMESPACE/TYPE/NAME");
    }
    if (segments.len() - 7) % 2 != 0 {
        return bad("has a resource type without a name");
    }
    Ok(id.to_string())
}

// ---------------------------------------------------------------------------------
// Sink
// ---------------------------------------------------------------------------------

/// A ready Azure Monitor client.
pub struct AzureSink {
    /// Ingestion client (honours HTTPS_PROXY, unlike the identity client).
    http: reqwest::Client,
    /// `{base}{resource_id}/metrics`.
    url: Url,
    /// Credential and cached token.
    tokens: TokenCache,
    /// `--azure-namespace`.
    namespace: String,
    /// `--azure-dimension` pairs, in order.
    dimensions: Vec<(String, String)>,
    /// For error messages that tell which resource the role is missing on.
    resource_id: String,
    /// Metrics of the report with this timestamp that Azure already accepted.
    /// Azure sums what it receives, so a retry must not post them again.
    delivered: Option<(SystemTime, Vec<&'static str>)>,
}

impl AzureSink {
    /// Builds the sink from its config (same as [`AzureConfig::build`]).
    pub async fn build(config: AzureConfig) -> Result<AzureSink, ConfigError> {
        config.build().await
    }

    /// The `--notify` name, used as the `sink` field of log lines.
    pub fn name(&self) -> &'static str {
        "azure"
    }

    /// Posts each metric of `report` that Azure has not accepted yet. Stops at the
    /// first failure; the framework's retry resumes from there.
    pub async fn send(&mut self, report: &Report) -> Result<(), SinkError> {
        if !matches!(&self.delivered, Some((t, _)) if *t == report.timestamp) {
            self.delivered = Some((report.timestamp, Vec::new()));
        }
        for (metric, body) in body::bodies(report, &self.namespace, &self.dimensions) {
            if matches!(&self.delivered, Some((_, done)) if done.contains(&metric)) {
                continue;
            }
            self.post(metric, &body).await?;
            if let Some((_, done)) = &mut self.delivered {
                done.push(metric);
            }
        }
        Ok(())
    }

    async fn post(&mut self, metric: &str, body: &serde_json::Value) -> Result<(), SinkError> {
        let token = self.tokens.token().await?.to_string();
        let response = self
            .http
            .post(self.url.clone())
            .bearer_auth(&token)
            .json(body)
            .send()
            .await
            .map_err(|e| SinkError {
                retryable: true,
                message: format!("azure: POST {metric} failed: {}", e.without_url()),
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let detail = scrub(&azure_error(&text), &[&token]);
        if status == StatusCode::UNAUTHORIZED {
            // Next interval starts from a fresh token, in case this one was revoked.
            self.tokens.invalidate();
        }
        Err(answer_error(
            status.as_u16(),
            metric,
            &detail,
            self.tokens.kind(),
            &self.resource_id,
        ))
    }
}

/// The error for a non-2xx answer of the ingestion endpoint.
///
/// Only the service's `detail` is cut short: on a 401/403 the part an operator acts
/// on (which role, for which identity, on which resource) comes first and whole, so
/// that a long Azure message can never truncate the resource id away.
pub(crate) fn answer_error(
    status: u16,
    metric: &str,
    detail: &str,
    credential: &str,
    resource: &str,
) -> SinkError {
    let detail = truncate(detail.to_string(), MAX_MESSAGE);
    let (retryable, message) = match status {
        401 | 403 => (
            false,
            format!(
                "azure: HTTP {status} for {metric}: the {credential} needs the '{ROLE}' \
                 role on {resource} ({detail})"
            ),
        ),
        408 | 429 => (
            true,
            format!("azure: HTTP {status} for {metric} (throttled): {detail}"),
        ),
        s if s >= 500 => (true, format!("azure: HTTP {status} for {metric}: {detail}")),
        _ => (
            false,
            format!("azure: HTTP {status} for {metric} rejected: {detail}"),
        ),
    };
    SinkError { retryable, message }
}

/// `code: message` out of Azure's `{"error": {"code", "message"}}` (either case of
/// `error`), else the raw text.
fn azure_error(text: &str) -> String {
    let json: Option<serde_json::Value> = serde_json::from_str(text).ok();
    let err = json
        .as_ref()
        .and_then(|j| j.get("error").or_else(|| j.get("Error")));
    match err {
        Some(e) => {
            let field = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("");
            format!("{}: {}", field("code"), field("message"))
        }
        None => text.trim().to_string(),
    }
}
