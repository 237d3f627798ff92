//! Bearer tokens for Azure Monitor: which credential this host has, and a cache.
//!
//! # Which credential
//!
//! Chosen once at start from the environment, first match wins (the same order as
//! the other Azure SDKs' `DefaultAzureCredential`):
//!
//! 1. **Client secret**: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`.
//! 2. **Workload identity** (AKS): `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
//!    `AZURE_FEDERATED_TOKEN_FILE`.
//! 3. **Managed identity, App Service / Container Apps / Functions**:
//!    `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`.
//! 4. **Managed identity, IMDS** (VMs, scale sets, AKS nodes): otherwise.
//!
//! For managed identity, `AZURE_CLIENT_ID` selects a user-assigned identity.
//!
//! Flows 1 and 2 use `azure_identity`. Flows 3 and 4 are two GETs that
//! [`managed_identity`] sends itself, exactly as Azure documents them, because
//! `azure_identity` reads `IDENTITY_*` straight from the process environment (so
//! tests would have to mutate it) and retries IMDS for up to 72 s, far past one
//! reporting interval.
//!
//! # Cache
//!
//! A token is reused until 5 minutes before it expires (half its lifetime for
//! tokens shorter than 10 minutes), so a report costs no identity round trip.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, RetryOptions};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use reqwest::Url;

use super::managed_identity;
use crate::error::ConfigError;
use crate::notify::redact::{scrub, truncate};
use crate::notify::SinkError;

/// The audience of Azure Monitor's ingestion API, as a resource (managed identity)...
pub(crate) const RESOURCE: &str = "https://monitoring.azure.com/";
/// ...and as a scope (Entra ID v2 token endpoint).
pub(crate) const SCOPE: &str = "https://monitoring.azure.com/.default";

/// Longest error text passed on; identity endpoints may answer with whole pages.
const MAX_MESSAGE: usize = 300;

/// Refresh this long before `expires_on`, so a token never expires in flight.
pub(crate) const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// The environment variables that choose the credential, read once.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct IdentityEnv {
    /// `AZURE_TENANT_ID`: the Entra directory (flows 1 and 2).
    pub tenant_id: Option<String>,
    /// `AZURE_CLIENT_ID`: the app registration, or a user-assigned identity.
    pub client_id: Option<String>,
    /// `AZURE_CLIENT_SECRET`. Secret: never printed.
    pub client_secret: Option<String>,
    /// `AZURE_FEDERATED_TOKEN_FILE`: the Kubernetes service-account token.
    pub federated_token_file: Option<String>,
    /// `IDENTITY_ENDPOINT`: the App Service token endpoint.
    pub identity_endpoint: Option<String>,
    /// `IDENTITY_HEADER`: proves the caller runs inside the app. Secret: never printed.
    pub identity_header: Option<String>,
}

impl IdentityEnv {
    /// Reads the real process environment (empty values count as unset).
    pub fn from_process() -> IdentityEnv {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        IdentityEnv {
            tenant_id: var("AZURE_TENANT_ID"),
            client_id: var("AZURE_CLIENT_ID"),
            client_secret: var("AZURE_CLIENT_SECRET"),
            federated_token_file: var("AZURE_FEDERATED_TOKEN_FILE"),
            identity_endpoint: var("IDENTITY_ENDPOINT"),
            identity_header: var("IDENTITY_HEADER"),
        }
    }
}

impl fmt::Debug for IdentityEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |v: &Option<String>| if v.is_some() { "set" } else { "unset" };
        f.debug_struct("IdentityEnv")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &set(&self.client_secret))
            .field("federated_token_file", &self.federated_token_file)
            .field("identity_endpoint", &self.identity_endpoint)
            .field("identity_header", &set(&self.identity_header))
            .finish()
    }
}

/// One of the four flows of the module docs.
pub(crate) enum Credential {
    /// `azure_identity`'s client-secret flow; `secret` is kept only to scrub it from
    /// error text, should the library ever echo it.
    ClientSecret {
        credential: Arc<ClientSecretCredential>,
        secret: String,
    },
    /// `azure_identity`'s federated-token flow (AKS workload identity).
    Workload(Arc<WorkloadIdentityCredential>),
    /// `IDENTITY_ENDPOINT`, `IDENTITY_HEADER` (secret), optional user-assigned id.
    AppService {
        endpoint: Url,
        header: String,
        client_id: Option<String>,
    },
    /// Optional user-assigned client id.
    Imds { client_id: Option<String> },
}

impl Credential {
    /// Picks the flow; builds nothing that talks to the network yet.
    pub fn from_env(env: &IdentityEnv) -> Result<Credential, ConfigError> {
        // The framework retries whole sends; the library's own retries would stack.
        let client_options = || ClientOptions {
            retry: RetryOptions::none(),
            ..Default::default()
        };
        if let (Some(tenant), Some(client), Some(secret)) =
            (&env.tenant_id, &env.client_id, &env.client_secret)
        {
            let options = ClientSecretCredentialOptions {
                client_options: client_options(),
            };
            return ClientSecretCredential::new(
                tenant,
                client.clone(),
                Secret::new(secret.clone()),
                Some(options),
            )
            .map(|credential| Credential::ClientSecret {
                credential,
                secret: secret.clone(),
            })
            .map_err(|e| {
                ConfigError(format!(
                    "--notify azure: client secret credential: {}",
                    scrub(&e.to_string(), &[secret])
                ))
            });
        }
        if let (Some(tenant), Some(client), Some(file)) =
            (&env.tenant_id, &env.client_id, &env.federated_token_file)
        {
            let options = WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: client_options(),
                },
                client_id: Some(client.clone()),
                tenant_id: Some(tenant.clone()),
                token_file_path: Some(file.into()),
                ..Default::default()
            };
            return WorkloadIdentityCredential::new(Some(options))
                .map(Credential::Workload)
                .map_err(|e| {
                    ConfigError(format!("--notify azure: workload identity credential: {e}"))
                });
        }
        if let (Some(endpoint), Some(header)) = (&env.identity_endpoint, &env.identity_header) {
            let endpoint = Url::parse(endpoint)
                .map_err(|_| "--notify azure: IDENTITY_ENDPOINT is not a URL".to_string())?;
            return Ok(Credential::AppService {
                endpoint,
                header: header.clone(),
                client_id: env.client_id.clone(),
            });
        }
        Ok(Credential::Imds {
            client_id: env.client_id.clone(),
        })
    }

    /// Which flow, for log lines and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::ClientSecret { .. } => "client secret",
            Credential::Workload(_) => "workload identity",
            Credential::AppService { .. } => "managed identity (App Service)",
            Credential::Imds { .. } => "managed identity (IMDS)",
        }
    }

    /// Asks the identity provider for a fresh token.
    async fn fetch(&self, http: &reqwest::Client) -> Result<AccessToken, SinkError> {
        match self {
            Credential::ClientSecret { credential, secret } => {
                library_token(credential.as_ref(), self.kind(), secret).await
            }
            Credential::Workload(c) => library_token(c.as_ref(), self.kind(), "").await,
            Credential::AppService {
                endpoint,
                header,
                client_id,
            } => managed_identity::app_service(http, endpoint, header, client_id).await,
            Credential::Imds { client_id } => managed_identity::imds(http, client_id).await,
        }
    }
}

/// A bearer token and when to stop using it. `Debug` never shows the token.
#[derive(Clone)]
pub(crate) struct AccessToken {
    /// The bearer token itself: never logged.
    pub(super) secret: String,
    /// `expires_on` as the identity provider said.
    pub expires_at: SystemTime,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// When a token fetched at `fetched_at` should be replaced: [`REFRESH_MARGIN`] before
/// it expires, or half-way through a lifetime shorter than twice that margin (so a
/// short-lived token is still reused rather than fetched for every request).
pub(crate) fn refresh_at(fetched_at: SystemTime, expires_at: SystemTime) -> SystemTime {
    let lifetime = expires_at
        .duration_since(fetched_at)
        .unwrap_or(Duration::ZERO);
    let margin = REFRESH_MARGIN.min(lifetime / 2);
    expires_at.checked_sub(margin).unwrap_or(fetched_at)
}

/// The credential plus the token it last produced.
pub(crate) struct TokenCache {
    credential: Credential,
    /// Identity endpoints are link-local or loopback: never through a proxy.
    http: reqwest::Client,
    current: Option<(AccessToken, SystemTime)>,
}

impl TokenCache {
    pub fn new(credential: Credential) -> Result<TokenCache, ConfigError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| format!("--notify azure: HTTP client: {e}"))?;
        Ok(TokenCache {
            credential,
            http,
            current: None,
        })
    }

    /// Which flow, for messages.
    pub fn kind(&self) -> &'static str {
        self.credential.kind()
    }

    /// A token valid for a while yet, fetched only when the cached one is due.
    pub async fn token(&mut self) -> Result<&str, SinkError> {
        let now = SystemTime::now();
        let fresh = matches!(&self.current, Some((_, refresh)) if now < *refresh);
        if !fresh {
            let token = self.credential.fetch(&self.http).await?;
            let refresh = refresh_at(now, token.expires_at);
            self.current = Some((token, refresh));
        }
        match &self.current {
            Some((token, _)) => Ok(&token.secret),
            None => Err(permanent("no token".into())),
        }
    }

    /// Drops the cached token, e.g. after the ingestion endpoint answered 401.
    pub fn invalidate(&mut self) {
        self.current = None;
    }
}

async fn library_token(
    credential: &dyn TokenCredential,
    kind: &str,
    secret: &str,
) -> Result<AccessToken, SinkError> {
    match credential.get_token(&[SCOPE], None).await {
        Ok(token) => {
            let unix = token.expires_on.unix_timestamp().max(0) as u64;
            Ok(AccessToken {
                secret: token.token.secret().to_string(),
                expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(unix),
            })
        }
        Err(e) => {
            let status = http_status(&e);
            Err(SinkError {
                // A refused secret or assertion (400/401/403) repeats; anything else
                // (network, token file not yet mounted, 5xx) may pass next time.
                retryable: !matches!(status, Some(400 | 401 | 403)),
                message: truncate(scrub(&format!("{kind}: {e}"), &[secret]), MAX_MESSAGE),
            })
        }
    }
}

/// The HTTP status somewhere in an `azure_core` error chain; `azure_identity` wraps
/// the token endpoint's answer in a credential error.
fn http_status(err: &azure_core::Error) -> Option<u16> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(az) = e.downcast_ref::<azure_core::Error>() {
            if let azure_core::error::ErrorKind::HttpResponse { status, .. } = az.kind() {
                return Some(u16::from(*status));
            }
        }
        current = e.source();
    }
    None
}

pub(super) fn permanent(message: String) -> SinkError {
    SinkError {
        retryable: false,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> IdentityEnv {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        IdentityEnv {
            tenant_id: get("tenant"),
            client_id: get("client"),
            client_secret: get("secret"),
            federated_token_file: get("file"),
            identity_endpoint: get("endpoint"),
            identity_header: get("header"),
        }
    }

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    #[test]
    fn credential_order_follows_the_environment() {
        // azure_identity reads the federated token file when the credential is made.
        let file =
            std::env::temp_dir().join(format!("rwsgi-federated-token-{}", std::process::id()));
        std::fs::write(&file, "eyJhbGciOi.fake.assertion").unwrap();
        let file = file.to_string_lossy().to_string();
        let all = env(&[
            ("tenant", TENANT),
            ("client", "c"),
            ("secret", "s3cret"),
            ("file", &file),
            ("endpoint", "http://127.0.0.1:1/msi"),
            ("header", "h"),
        ]);
        assert_eq!(Credential::from_env(&all).unwrap().kind(), "client secret");
        let no_secret = IdentityEnv {
            client_secret: None,
            ..all.clone()
        };
        assert_eq!(
            Credential::from_env(&no_secret).unwrap().kind(),
            "workload identity"
        );
        let no_file = IdentityEnv {
            federated_token_file: None,
            ..no_secret
        };
        match Credential::from_env(&no_file).unwrap() {
            Credential::AppService { client_id, .. } => assert_eq!(client_id.as_deref(), Some("c")),
            other => panic!("{}", other.kind()),
        }
        let header_only = env(&[("header", "h")]);
        assert_eq!(
            Credential::from_env(&header_only).unwrap().kind(),
            "managed identity (IMDS)"
        );
        assert!(Credential::from_env(&env(&[("endpoint", "not a url"), ("header", "h")])).is_err());
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn debug_of_the_environment_hides_secrets() {
        let e = env(&[
            ("secret", "s3cret-value"),
            ("header", "hdr-value"),
            ("client", "c"),
        ]);
        let text = format!("{e:?}");
        assert!(
            !text.contains("s3cret-value") && !text.contains("hdr-value"),
            "{text}"
        );
    }

    #[test]
    fn refresh_five_minutes_early_or_half_way_for_short_tokens() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let hour = t0 + Duration::from_secs(3600);
        assert_eq!(refresh_at(t0, hour), hour - Duration::from_secs(300));
        let short = t0 + Duration::from_secs(60);
        assert_eq!(refresh_at(t0, short), t0 + Duration::from_secs(30));
        // Already expired (clock skew): refresh at once, never panic on underflow.
        assert!(refresh_at(t0, t0 - Duration::from_secs(5)) <= t0);
    }
}
