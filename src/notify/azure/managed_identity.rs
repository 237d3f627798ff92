//! The two managed-identity token protocols, sent by hand with reqwest exactly as
//! Azure documents them:
//!
//! - **IMDS** (VMs, scale sets, AKS nodes): `GET
//!   http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=…`
//!   with `Metadata: true`.
//! - **App Service / Container Apps / Functions**: `GET
//!   $IDENTITY_ENDPOINT?api-version=2019-08-01&resource=…` with
//!   `X-IDENTITY-HEADER: $IDENTITY_HEADER`.
//!
//! Both answer `{"access_token", "expires_on", …}` with `expires_on` in unix seconds.
//! Why by hand and not through `azure_identity`: see [`super::token`].

use std::time::{Duration, SystemTime};

use reqwest::Url;

use super::token::{permanent, AccessToken, RESOURCE};
use crate::notify::redact::{scrub, truncate};
use crate::notify::SinkError;

const IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
const IMDS_API_VERSION: &str = "2018-02-01";
const APP_SERVICE_API_VERSION: &str = "2019-08-01";

/// Longest error text passed on; identity endpoints may answer with whole pages.
const MAX_MESSAGE: usize = 300;

/// A token from the App Service style endpoint. `header` is a secret.
pub(super) async fn app_service(
    http: &reqwest::Client,
    endpoint: &Url,
    header: &str,
    client_id: &Option<String>,
) -> Result<AccessToken, SinkError> {
    let url = token_url(endpoint.clone(), APP_SERVICE_API_VERSION, client_id);
    let request = http.get(url).header("X-IDENTITY-HEADER", header);
    fetch(request, "managed identity (App Service)", &[header]).await
}

/// A token from the VM's Instance Metadata Service.
pub(super) async fn imds(
    http: &reqwest::Client,
    client_id: &Option<String>,
) -> Result<AccessToken, SinkError> {
    let endpoint = Url::parse(IMDS_ENDPOINT).map_err(|e| permanent(e.to_string()))?;
    let url = token_url(endpoint, IMDS_API_VERSION, client_id);
    fetch(
        http.get(url).header("Metadata", "true"),
        "managed identity (IMDS)",
        &[],
    )
    .await
}

fn token_url(mut url: Url, api_version: &str, client_id: &Option<String>) -> Url {
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("api-version", api_version)
            .append_pair("resource", RESOURCE);
        if let Some(id) = client_id {
            query.append_pair("client_id", id);
        }
    }
    url
}

/// Sends a managed-identity token request and reads `access_token` and
/// `expires_on` (unix seconds, as a string or a number; else `expires_in`).
async fn fetch(
    request: reqwest::RequestBuilder,
    kind: &str,
    secrets: &[&str],
) -> Result<AccessToken, SinkError> {
    let response = request.send().await.map_err(|e| SinkError {
        retryable: true,
        message: format!("{kind}: token endpoint unreachable: {}", e.without_url()),
    })?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    if !(200..300).contains(&status) {
        // IMDS asks for retries on 404 and 410 (identity not ready yet); 400 means
        // no identity is assigned, which no retry fixes.
        return Err(SinkError {
            retryable: matches!(status, 404 | 408 | 410 | 429) || status >= 500,
            message: truncate(
                scrub(
                    &format!("{kind}: token endpoint answered HTTP {status}: {body}"),
                    secrets,
                ),
                MAX_MESSAGE,
            ),
        });
    }
    parse_token_response(&body, SystemTime::now()).ok_or_else(|| {
        permanent(format!(
            "{kind}: token endpoint sent no usable access_token/expires_on"
        ))
    })
}

/// The token and expiry out of a managed-identity JSON answer.
pub(crate) fn parse_token_response(body: &str, now: SystemTime) -> Option<AccessToken> {
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    let secret = json
        .get("access_token")?
        .as_str()
        .filter(|t| !t.is_empty())?
        .to_string();
    let number = |key: &str| -> Option<u64> {
        match json.get(key)? {
            serde_json::Value::String(s) => s.trim().parse().ok(),
            v => v.as_u64(),
        }
    };
    let expires_at = match number("expires_on") {
        Some(unix) => SystemTime::UNIX_EPOCH + Duration::from_secs(unix),
        None => now + Duration::from_secs(number("expires_in")?),
    };
    Some(AccessToken { secret, expires_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_responses_of_imds_and_app_service() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let imds = r#"{"access_token":"eyJ0","expires_in":"3599","expires_on":"4600","resource":"https://monitoring.azure.com/","token_type":"Bearer"}"#;
        let t = parse_token_response(imds, now).unwrap();
        assert_eq!(
            t.expires_at,
            SystemTime::UNIX_EPOCH + Duration::from_secs(4600)
        );
        assert_eq!(t.secret, "eyJ0");
        let numeric = r#"{"access_token":"x","expires_on":4600}"#;
        assert!(parse_token_response(numeric, now).is_some());
        let only_in = r#"{"access_token":"x","expires_in":60}"#;
        assert_eq!(
            parse_token_response(only_in, now).unwrap().expires_at,
            now + Duration::from_secs(60)
        );
        assert!(
            format!("{t:?}").find("eyJ0").is_none(),
            "Debug shows no token"
        );
        for bad in [
            "",
            "{}",
            r#"{"access_token":""}"#,
            r#"{"access_token":"x"}"#,
            r#"{"access_token":"x","expires_on":"soon"}"#,
        ] {
            assert!(parse_token_response(bad, now).is_none(), "{bad}");
        }
    }

    #[test]
    fn managed_identity_urls_follow_the_documented_protocol() {
        let imds = token_url(Url::parse(IMDS_ENDPOINT).unwrap(), IMDS_API_VERSION, &None);
        assert_eq!(
            imds.as_str(),
            "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmonitoring.azure.com%2F"
        );
        let app = token_url(
            Url::parse("http://127.0.0.1:41741/msi/token").unwrap(),
            APP_SERVICE_API_VERSION,
            &Some("abc".into()),
        );
        assert!(app.as_str().ends_with(
            "?api-version=2019-08-01&resource=https%3A%2F%2Fmonitoring.azure.com%2F&client_id=abc"
        ));
    }
}
