//! Building the SDK client: HTTP connector (CA, proxy, skip-verify), timeouts, credentials.

use super::{ATTEMPTS, CONNECT_TIMEOUT, S3Error};
use crate::consts::DEFAULT_S3_ENDPOINT;
use crate::storage::config::{Proxy, S3Config, S3ConfigError};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_smithy_http_client::Connector;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

fn connect_timeout(timeout: Duration) -> Duration {
    timeout.min(CONNECT_TIMEOUT)
}

/// The configured timeout for the whole operation, retries included.
pub(super) fn operation_timeouts(timeout: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(connect_timeout(timeout))
        .operation_timeout(timeout)
        .operation_attempt_timeout(timeout)
        .build()
}

/// The configured timeout for each attempt.
pub(super) fn per_attempt_timeouts(timeout: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(connect_timeout(timeout))
        .operation_attempt_timeout(timeout)
        .disable_operation_timeout()
        .build()
}

pub(super) async fn build(cfg: &S3Config) -> Result<Client, S3Error> {
    let http = http_client(cfg)?;
    let region = Region::new(cfg.region.clone());
    let mut builder = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(region.clone())
        .force_path_style(cfg.use_path_style())
        .http_client(http)
        .timeout_config(operation_timeouts(cfg.timeout))
        .retry_config(RetryConfig::standard().with_max_attempts(ATTEMPTS))
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    // The default AWS endpoint is left to the SDK, which picks the region's endpoint.
    if cfg.insecure || cfg.endpoint != DEFAULT_S3_ENDPOINT {
        builder = builder.endpoint_url(cfg.endpoint_url());
    }
    builder = match (&cfg.access_key, &cfg.secret_key) {
        (Some(access), Some(secret)) => builder.credentials_provider(Credentials::new(
            access,
            secret,
            cfg.session_token.clone(),
            None,
            "etcd-snapshot",
        )),
        _ => builder.credentials_provider(
            aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                .region(region)
                .build()
                .await,
        ),
    };
    Ok(Client::from_conf(builder.build()))
}

fn invalid(field: &'static str, value: &str, expected: &str) -> S3Error {
    S3Error::Config(S3ConfigError::Invalid {
        field,
        value: value.to_string(),
        expected: expected.to_string(),
    })
}

/// The proxy URL with any user info hidden, for messages.
fn shown(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://<redacted>@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

fn proxy_config(proxy: &Proxy) -> Result<ProxyConfig, S3Error> {
    match proxy {
        Proxy::Environment => Ok(ProxyConfig::from_env()),
        Proxy::None => Ok(ProxyConfig::disabled()),
        Proxy::Url(url) => ProxyConfig::all(url.as_str()).map_err(|_| {
            invalid(
                "S3 proxy",
                &shown(url),
                "is not supported: use an http:// or https:// proxy URL",
            )
        }),
    }
}

/// Check the CA bundle as the SDK will read it (it panics on a bad one).
fn check_ca(pem: &str) -> Result<(), S3Error> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |reason| {
        S3Error::Config(S3ConfigError::BadCertificate {
            field: "S3 endpoint CA",
            reason,
        })
    };
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad("a certificate block is not valid PEM"))?;
    if certs.is_empty() {
        return Err(S3Error::Config(S3ConfigError::NoCertificate {
            field: "S3 endpoint CA",
        }));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|_| bad("a certificate cannot be used as a trust anchor"))?;
    }
    Ok(())
}

pub(super) fn http_client(cfg: &S3Config) -> Result<SharedHttpClient, S3Error> {
    if cfg.skip_ssl_verify && !cfg.insecure {
        return super::no_verify::http_client(cfg);
    }
    let mut trust = TrustStore::default();
    if let Some(pem) = &cfg.endpoint_ca {
        check_ca(pem)?;
        trust = trust.with_pem_certificate(pem.as_bytes());
    }
    let tls_context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| invalid("S3 endpoint CA", "", &e.to_string()))?;
    let proxy = proxy_config(&cfg.proxy)?;
    Ok(SharedHttpClient::new(CachingClient::new(
        move |settings, components| {
            let mut builder = Connector::builder()
                .connector_settings(settings.clone())
                .proxy_config(proxy.clone());
            builder.set_sleep_impl(components.sleep_impl());
            SharedHttpConnector::new(
                builder
                    .tls_provider(tls::Provider::Rustls(
                        tls::rustls_provider::CryptoMode::AwsLc,
                    ))
                    .tls_context(tls_context.clone())
                    .build(),
            )
        },
    )))
}

type MakeConnector =
    dyn Fn(&HttpConnectorSettings, &RuntimeComponents) -> SharedHttpConnector + Send + Sync;

/// Connect and read timeouts: what tells the connectors apart.
type TimeoutKey = (Option<Duration>, Option<Duration>);

/// One connector (one connection pool) per distinct connect/read timeout.
struct CachingClient {
    make: Box<MakeConnector>,
    cache: Mutex<Vec<(TimeoutKey, SharedHttpConnector)>>,
}

impl CachingClient {
    fn new(
        make: impl Fn(&HttpConnectorSettings, &RuntimeComponents) -> SharedHttpConnector
        + Send
        + Sync
        + 'static,
    ) -> CachingClient {
        CachingClient {
            make: Box::new(make),
            cache: Mutex::new(Vec::new()),
        }
    }
}

impl fmt::Debug for CachingClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingClient").finish_non_exhaustive()
    }
}

impl HttpClient for CachingClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let key = (settings.connect_timeout(), settings.read_timeout());
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, connector)) = cache.iter().find(|(k, _)| *k == key) {
            return connector.clone();
        }
        let connector = (self.make)(settings, components);
        cache.push((key, connector.clone()));
        connector
    }
}
