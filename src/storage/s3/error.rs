//! [`S3Error`]: one line each, never a credential; how SDK and network failures become one.

use crate::naming::NameError;
use crate::storage::config::S3ConfigError;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use std::time::Duration;

/// S3 errors. One line each; never a credential.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The settings cannot be used to build a client.
    #[error(transparent)]
    Config(#[from] S3ConfigError),
    /// The snapshot name is not a safe key component.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The bucket does not exist.
    #[error(
        "S3 bucket {bucket:?} does not exist: create it, or check the bucket name (--s3-bucket, \
         etcd-s3-bucket in a Secret)"
    )]
    NoSuchBucket {
        /// Bucket.
        bucket: String,
    },
    /// The object does not exist.
    #[error("S3 object {key:?} does not exist")]
    NoSuchKey {
        /// Object key.
        key: String,
    },
    /// S3 refused the credentials or the request's permissions.
    #[error("{}", access_denied_text(op, code))]
    AccessDenied {
        /// Operation.
        op: &'static str,
        /// S3's error code (e.g. `SignatureDoesNotMatch`), or the HTTP status.
        code: String,
    },
    /// The endpoint's certificate is not trusted.
    #[error(
        "the TLS certificate of S3 endpoint {endpoint} is not trusted ({reason}); give its CA \
         with --s3-endpoint-ca (Secret key etcd-s3-endpoint-ca), or set skip-ssl-verify"
    )]
    Tls {
        /// `host[:port]`.
        endpoint: String,
        /// What the verifier said.
        reason: String,
    },
    /// An operation took longer than the configured timeout.
    #[error("S3 {op} timed out after {}", fmt_duration(*after))]
    Timeout {
        /// Operation.
        op: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// No connection to the endpoint (`reason` says why and what to check).
    #[error("cannot reach S3 endpoint {endpoint}: {reason}")]
    Unreachable {
        /// `host[:port]`.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// Any other failed request.
    #[error("S3 {op} {key:?}: {reason}")]
    Request {
        /// Operation.
        op: &'static str,
        /// Object key (or the bucket for bucket-level operations).
        key: String,
        /// S3's code and message, or the client's error.
        reason: String,
    },
    /// A `.metadata/<name>` object that is not a JSON object of strings.
    #[error("S3 metadata object {key:?} is not a JSON object of strings: {reason}")]
    BadMetadata {
        /// Object key.
        key: String,
        /// Parser message.
        reason: String,
    },
    /// Writing the downloaded file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Local path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

impl S3Error {
    /// PascalCase reason, for Event reasons and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            S3Error::Config(_) => "S3Config",
            S3Error::Name(_) => "BadName",
            S3Error::NoSuchBucket { .. } => "S3NoSuchBucket",
            S3Error::NoSuchKey { .. } => "S3NoSuchKey",
            S3Error::AccessDenied { .. } => "S3AccessDenied",
            S3Error::Tls { .. } => "S3TLS",
            S3Error::Timeout { .. } => "S3Timeout",
            S3Error::Unreachable { .. } => "S3Unreachable",
            S3Error::Request { .. } => "S3Request",
            S3Error::BadMetadata { .. } => "S3BadMetadata",
            S3Error::Io { .. } => "S3LocalIO",
        }
    }

    /// Whether trying again later may succeed without a change of settings.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            S3Error::Timeout { .. } | S3Error::Unreachable { .. } | S3Error::Request { .. }
        )
    }
}

/// Wrong credentials and a missing permission are told apart: S3 answers `AccessDenied` (or a
/// bare 403) when the credentials are valid but may not do `op`.
fn access_denied_text(op: &str, code: &str) -> String {
    if code == "AccessDenied" || code == "HTTP 403" {
        format!(
            "S3 refused {op} ({code}): the credentials are not allowed to do it; grant the \
             permission to their user or policy"
        )
    } else {
        format!(
            "S3 refused the credentials (check the access key and secret key): {op} answered {code}"
        )
    }
}

/// The cause of a failed connection to S3, and what to check.
pub(super) fn unreachable_hint(cause: &crate::net_error::Cause) -> String {
    use crate::net_error::Cause;
    match cause {
        Cause::Refused => "connection refused: is the S3 server running there? (check the \
                           endpoint: --s3-endpoint, etcd-s3-endpoint in a Secret)"
            .into(),
        Cause::TimedOut => "the connection timed out: check the endpoint and any firewall or \
                            proxy in between"
            .into(),
        Cause::Dns => "the host name does not resolve: check the endpoint (--s3-endpoint, \
                       etcd-s3-endpoint in a Secret)"
            .into(),
        Cause::NotTls | Cause::HandshakeClosed => "it does not speak TLS: if it serves plain \
                                                   HTTP, set --s3-insecure (etcd-s3-insecure: \
                                                   \"true\" in a Secret)"
            .into(),
        Cause::Untrusted(why) => format!("its TLS certificate is not trusted ({why})"),
        Cause::TlsRefused(alert) => format!("it refused the TLS connection ({alert})"),
        Cause::Closed => "the server closed the connection".into(),
        Cause::Other(text) => text.clone(),
    }
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

pub(super) fn is_not_found<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    match err {
        SdkError::ServiceError(s) => {
            s.raw().status().as_u16() == 404 && err.code() != Some("NoSuchBucket")
        }
        _ => false,
    }
}

/// What went wrong, on one line: the network cause with what to check when there is one, else
/// the chain's messages without repeats and without the `Debug` dumps some libraries put in
/// their messages. The whole chain goes to the debug log.
pub(super) fn error_chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let cause = crate::net_error::Cause::of(err);
    if !matches!(cause, crate::net_error::Cause::Other(_)) {
        return unreachable_hint(&cause);
    }
    let mut parts: Vec<String> = Vec::new();
    for e in crate::net_error::chain(err) {
        let text = crate::net_error::one_line(&e.to_string());
        if text.is_empty() || parts.last().is_some_and(|p| p.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

/// What rustls said, when the failure is an untrusted server certificate.
pub(super) fn untrusted_certificate(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    crate::net_error::chain(err).find_map(|e| match e.downcast_ref::<rustls::Error>() {
        Some(rustls::Error::InvalidCertificate(c)) => Some(format!("{c:?}")),
        _ => None,
    })
}
