//! The `skip-ssl-verify` connector: hyper-util's client over hyper-rustls with a verifier that
//! accepts any server certificate. Only for HTTPS endpoints; an HTTP proxy is reached with
//! CONNECT.

use super::{CONNECT_TIMEOUT, S3Error};
use crate::storage::config::{Proxy, S3Config, S3ConfigError};
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, SharedHttpClient, SharedHttpConnector, http_client_fn,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_types::body::SdkBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connect, HttpConnector as TcpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Accepts any certificate; handshake signatures are still verified with the provider.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn config_error(expected: &str) -> S3Error {
    S3Error::Config(S3ConfigError::Invalid {
        field: "S3 proxy",
        value: String::new(),
        expected: expected.to_string(),
    })
}

pub(super) fn http_client(cfg: &S3Config) -> Result<SharedHttpClient, S3Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(&format!("TLS setup failed: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    let mut tcp = TcpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(cfg.timeout.min(CONNECT_TIMEOUT)));
    let endpoint: http::Uri = cfg
        .endpoint_url()
        .parse()
        .map_err(|_| config_error("the endpoint is not a valid URL"))?;
    let matcher = match &cfg.proxy {
        Proxy::None => None,
        Proxy::Environment => Some(Matcher::from_env()),
        Proxy::Url(url) => Some(Matcher::builder().all(url.as_str()).build()),
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1();
    let connector = match matcher.and_then(|m| m.intercept(&endpoint)) {
        None => adapter(https.wrap_connector(tcp)),
        Some(intercept) => {
            if intercept.uri().scheme_str() != Some("http") {
                return Err(config_error(
                    "with skip-ssl-verify, only an http:// proxy is supported",
                ));
            }
            let mut tunnel = Tunnel::new(intercept.uri().clone(), tcp);
            if let Some(auth) = intercept.basic_auth() {
                tunnel = tunnel.with_auth(auth.clone());
            }
            adapter(https.wrap_connector(tunnel))
        }
    };
    Ok(http_client_fn(move |_, _| connector.clone()))
}

fn adapter<C: Connect + Clone + Send + Sync + 'static>(connector: C) -> SharedHttpConnector {
    let client = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector);
    SharedHttpConnector::new(Adapter { client })
}

struct Adapter<C> {
    client: Client<C, SdkBody>,
}

impl<C> fmt::Debug for Adapter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NoVerifyConnector")
    }
}

impl<C: Connect + Clone + Send + Sync + 'static> HttpConnector for Adapter<C> {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match request.try_into_http1x() {
            Ok(r) => r,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        let client = self.client.clone();
        HttpConnectorFuture::new(async move {
            let response = client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    ConnectorError::io(e.into())
                } else {
                    ConnectorError::other(e.into(), None)
                }
            })?;
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}
