//! gunicorn's TLS settings (`--certfile`, `--keyfile`, `--ca-certs`, `--cert-reqs`,
//! `--ssl-version`) turned into one rustls server configuration at start, so a
//! missing or unreadable file, a key that does not match its certificate or a CA
//! bundle without a certificate fails before anything listens, with a message naming
//! the setting. The server (`server/tls.rs`) only wraps accepted streams with it.
//!
//! rustls (through tokio-rustls) rather than OpenSSL: it is memory-safe, needs no
//! system library in the wheel, is what hyper's own TLS stack uses, and the crate
//! (with the aws-lc-rs provider) is already in the build for the HTTP clients of the
//! sinks.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::gunicorn::Tls;
use super::ConfigError;

/// A validated rustls configuration; equal only to itself (a config compares its
/// settings, not key material).
#[derive(Clone)]
pub struct ServerTls(pub Arc<rustls::ServerConfig>);

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for ServerTls {}

fn err(setting: &str, path: &Path, what: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{setting} {}: {what}", path.display()))
}

fn certs(setting: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| err(setting, path, pem_error(e)))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(setting, path, pem_error(e)))?;
    if certs.is_empty() {
        return Err(err(
            setting,
            path,
            "no PEM certificate (BEGIN CERTIFICATE) in it",
        ));
    }
    Ok(certs)
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => format!("cannot read it: {io}"),
        other => format!("not a valid PEM file ({other:?})"),
    }
}

static TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// gunicorn's `--ssl-version` (Python's `ssl.PROTOCOL_*` names or numbers): the TLS
/// versions rustls may negotiate.
fn versions(
    v: Option<&str>,
) -> Result<&'static [&'static rustls::SupportedProtocolVersion], ConfigError> {
    let Some(v) = v else {
        return Ok(rustls::ALL_VERSIONS);
    };
    let name = v
        .trim()
        .trim_start_matches("PROTOCOL_")
        .trim_start_matches("_SSLMethod.PROTOCOL_");
    match name.to_ascii_uppercase().as_str() {
        // PROTOCOL_TLS (2, alias SSLv23) and PROTOCOL_TLS_SERVER (17): negotiate the
        // best both sides speak.
        "TLS" | "SSLV23" | "TLS_SERVER" | "2" | "17" => Ok(rustls::ALL_VERSIONS),
        "TLSV1_2" | "5" => Ok(TLS12_ONLY),
        "TLSV1_3" => Ok(TLS13_ONLY),
        "TLSV1" | "TLSV1_1" | "SSLV3" | "SSLV2" | "3" | "4" | "1" | "0" => {
            Err(ConfigError(format!(
                "--ssl-version {v}: TLS 1.0/1.1 and SSL are insecure and rustls does not speak \
             them; leave --ssl-version unset (TLS 1.2 and 1.3) or use TLSv1_2"
            )))
        }
        _ => Err(ConfigError(format!(
            "--ssl-version {v}: expected TLS, TLS_SERVER, SSLv23 or TLSv1_2 (gunicorn's \
             ssl.PROTOCOL_* names)"
        ))),
    }
}

/// The rustls configuration `tls` asks for, or `None` when TLS is off (neither
/// `--certfile` nor `--keyfile`, as gunicorn's `is_ssl`).
pub fn load(tls: &Tls) -> Result<Option<ServerTls>, ConfigError> {
    let (cert, key) = match (&tls.certfile, &tls.keyfile) {
        (None, None) => {
            for (given, name) in [
                (tls.ca_certs.is_some(), "--ca-certs"),
                (tls.cert_reqs != 0, "--cert-reqs"),
            ] {
                if given {
                    return Err(ConfigError(format!(
                        "{name} needs TLS: give --certfile and --keyfile too"
                    )));
                }
            }
            return Ok(None);
        }
        (Some(_), None) => {
            return Err(ConfigError(
                "--certfile without --keyfile: give the private key's PEM file too".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError(
                "--keyfile without --certfile: give the certificate's PEM file too".into(),
            ))
        }
        (Some(c), Some(k)) => (c, k),
    };
    let chain = certs("--certfile", cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => err(
            "--keyfile",
            key,
            "no PEM private key (BEGIN PRIVATE KEY) in it",
        ),
        other => err("--keyfile", key, pem_error(other)),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(tls.ssl_version.as_deref())?)
        .map_err(|e| ConfigError(format!("--ssl-version: {e}")))?;
    // Read even when unused (--cert-reqs 0), as gunicorn loads it: a wrong path is
    // found at start, not when someone turns verification on.
    let roots = match &tls.ca_certs {
        None => None,
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs("--ca-certs", ca)? {
                roots.add(c).map_err(|e| {
                    err(
                        "--ca-certs",
                        ca,
                        format!("not a usable CA certificate: {e}"),
                    )
                })?;
            }
            Some((ca, roots))
        }
    };
    let builder = match (roots, tls.cert_reqs) {
        (_, 0) => builder.with_no_client_auth(),
        (None, n) => {
            return Err(ConfigError(format!(
                "--cert-reqs {n}: verifying client certificates needs --ca-certs (the CA \
                 bundle they must chain to)"
            )))
        }
        (Some((ca, roots)), n) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            // gunicorn's CERT_OPTIONAL (1): a client may send none, but one it sends
            // must verify; CERT_REQUIRED (2): a client without one is refused.
            let verifier = if n == 1 {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|e| err("--ca-certs", ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        ConfigError(format!(
            "--certfile {} / --keyfile {}: {e} (does the key belong to the certificate?)",
            cert.display(),
            tls.keyfile.as_deref().unwrap_or(Path::new("")).display()
        ))
    })?;
    // rwsgi speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(ServerTls(Arc::new(config))))
}
