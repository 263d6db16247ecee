//! Connecting to the local etcd member and opening its snapshot stream.

use super::SnapshotError;
use crate::net_error::{Cause, one_line};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How to reach etcd. The snapshot stream itself has no overall timeout (a large database takes
/// as long as it takes); a dead connection is noticed through gRPC keep-alives instead.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Client URLs (`http://` or `https://`).
    pub endpoints: Vec<String>,
    /// CA certificate to verify the server.
    pub cacert: Option<PathBuf>,
    /// Client certificate.
    pub cert: Option<PathBuf>,
    /// Client key.
    pub key: Option<PathBuf>,
    /// Timeout for connecting and for each small request (status, member list).
    pub connect_timeout: Duration,
}

impl EtcdConfig {
    /// Plain settings for `endpoints` with the default timeout.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            cacert: None,
            cert: None,
            key: None,
            connect_timeout: Duration::from_secs(10),
        }
    }

    fn endpoint_list(&self) -> String {
        self.endpoints.join(",")
    }

    /// Check the endpoints and read the TLS files, before any network I/O.
    fn options(&self) -> Result<ConnectOptions, SnapshotError> {
        if self.endpoints.is_empty() {
            return Err(SnapshotError::BadEndpoint {
                endpoint: String::new(),
                reason: "no etcd endpoint given".into(),
            });
        }
        let mut tls = false;
        for e in &self.endpoints {
            let rest = if let Some(rest) = e.strip_prefix("https://") {
                tls = true;
                rest
            } else if let Some(rest) = e.strip_prefix("http://") {
                rest
            } else {
                return Err(SnapshotError::BadEndpoint {
                    endpoint: e.clone(),
                    reason: "must start with http:// or https://".into(),
                });
            };
            let host_port = rest.trim_end_matches('/');
            if host_port.is_empty() || host_port.contains('/') {
                return Err(SnapshotError::BadEndpoint {
                    endpoint: e.clone(),
                    reason: "must be scheme://host:port".into(),
                });
            }
            // A port out of range would otherwise be dropped silently (the URL's default used).
            if let Some((_, port)) = host_port.rsplit_once(':')
                && !port.ends_with(']')
                && !matches!(port.parse::<u16>(), Ok(1..))
            {
                return Err(SnapshotError::BadEndpoint {
                    endpoint: e.clone(),
                    reason: "must have a port from 1 to 65535".into(),
                });
            }
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(20))
            .with_keep_alive_while_idle(true);
        if tls {
            let mut t = TlsOptions::new();
            match &self.cacert {
                Some(ca) => t = t.ca_certificate(Certificate::from_pem(read_pem(ca, "CA")?)),
                None => {
                    return Err(SnapshotError::Tls(
                        "an https etcd endpoint needs --etcd-cacert (the CA that signed etcd's certificate)"
                            .into(),
                    ));
                }
            }
            match (&self.cert, &self.key) {
                (Some(cert), Some(key)) => {
                    t = t.identity(Identity::from_pem(
                        read_pem(cert, "client certificate")?,
                        read_pem(key, "client key")?,
                    ));
                }
                (None, None) => {}
                _ => {
                    return Err(SnapshotError::Tls(
                        "--etcd-cert and --etcd-key must be given together".into(),
                    ));
                }
            }
            options = options.with_tls(t);
        }
        Ok(options)
    }

    /// Connect and check that the member answers.
    pub async fn connect(&self) -> Result<EtcdConn, SnapshotError> {
        let options = self.options()?;
        let connect = Client::connect(self.endpoints.clone(), Some(options));
        let client = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| SnapshotError::Unreachable {
                endpoints: self.endpoint_list(),
                reason: no_answer(self.connect_timeout),
            })?
            .map_err(|e| failed(&self.endpoint_list(), "connect", &e))?;
        Ok(EtcdConn {
            client,
            endpoints: self.endpoint_list(),
            timeout: self.connect_timeout,
        })
    }
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, SnapshotError> {
    let data = std::fs::read(path).map_err(|e| {
        SnapshotError::Tls(format!("cannot read etcd {what} {}: {e}", path.display()))
    })?;
    if !String::from_utf8_lossy(&data).contains("-----BEGIN ") {
        return Err(SnapshotError::Tls(format!(
            "etcd {what} {} is not a PEM file",
            path.display()
        )));
    }
    Ok(data)
}

/// What the member says about itself before the snapshot starts.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    /// Cluster ID, 16 hex digits.
    pub cluster_id: String,
    /// Member ID, 16 hex digits.
    pub member_id: String,
    /// Member name.
    pub member_name: String,
    /// Server version.
    pub version: String,
    /// Current revision.
    pub revision: i64,
}

/// A connected etcd client.
pub struct EtcdConn {
    client: Client,
    endpoints: String,
    timeout: Duration,
}

impl EtcdConn {
    /// Cluster ID, member and version of the member we talk to.
    pub async fn member_info(&mut self) -> Result<MemberInfo, SnapshotError> {
        let unreachable = |reason: String| SnapshotError::Unreachable {
            endpoints: self.endpoints.clone(),
            reason,
        };
        let status = tokio::time::timeout(self.timeout, self.client.status())
            .await
            .map_err(|_| unreachable(no_answer(self.timeout)))?
            .map_err(|e| failed(&self.endpoints, "status", &e))?;
        let header = status
            .header()
            .ok_or_else(|| unreachable("status: response without header".into()))?;
        let member_id = header.member_id();
        let cluster_id = header.cluster_id();
        let revision = header.revision();
        let version = status.version().to_string();
        let members = tokio::time::timeout(self.timeout, self.client.member_list())
            .await
            .map_err(|_| unreachable(no_answer(self.timeout)))?
            .map_err(|e| failed(&self.endpoints, "member list", &e))?;
        let member_name = members
            .members()
            .iter()
            .find(|m| m.id() == member_id)
            .map(|m| m.name().to_string())
            .unwrap_or_default();
        Ok(MemberInfo {
            cluster_id: format!("{cluster_id:016x}"),
            member_id: format!("{member_id:016x}"),
            member_name,
            version,
            revision,
        })
    }

    /// Open the Maintenance.Snapshot stream.
    pub async fn snapshot_stream(
        &mut self,
    ) -> Result<etcd_client::SnapshotStreaming, SnapshotError> {
        let endpoints = self.endpoints.clone();
        tokio::time::timeout(self.timeout, self.client.snapshot())
            .await
            .map_err(|_| SnapshotError::Unreachable {
                endpoints: endpoints.clone(),
                reason: no_answer(self.timeout),
            })?
            .map_err(|e| failed(&endpoints, "snapshot", &e))
    }
}

/// "no answer within 10s: ...": what a timeout of ours means and what to check.
fn no_answer(after: Duration) -> String {
    format!(
        "no answer within {}s: check the address in --etcd-endpoint and any firewall in between",
        after.as_secs()
    )
}

/// A failed etcd request as one line; the library's whole error goes to the debug log.
pub(crate) fn failed(endpoints: &str, request: &str, e: &etcd_client::Error) -> SnapshotError {
    tracing::debug!(endpoints, request, error = ?e, "etcd request failed");
    let mut reason = describe(e);
    // A TLS server hangs up on a plain HTTP/2 client.
    if reason == hint(&Cause::Closed) && !endpoints.contains("https://") {
        reason
            .push_str(": if it serves TLS, use https:// in --etcd-endpoint and give --etcd-cacert");
    }
    SnapshotError::Unreachable {
        endpoints: endpoints.to_string(),
        reason,
    }
}

/// What went wrong with an etcd request, in a person's words, with what to do.
pub(crate) fn describe(e: &etcd_client::Error) -> String {
    let (status, source): (
        Option<(String, String)>,
        Option<&(dyn std::error::Error + 'static)>,
    ) = match e {
        etcd_client::Error::GRpcStatus(s) => (
            Some((format!("{:?}", s.code()), s.message().to_string())),
            s.source(),
        ),
        etcd_client::Error::TransportError(t) => (None, Some(t)),
        etcd_client::Error::IoError(io) => (None, Some(io)),
        other => return one_line(&other.to_string()),
    };
    match (source.map(Cause::of), status) {
        (Some(cause), _) => hint(&cause),
        (None, Some((code, message))) => format!("etcd answered {code}: {}", one_line(&message)),
        (None, None) => one_line(&e.to_string()),
    }
}

/// The cause of a failed connection to etcd, and what to check.
fn hint(cause: &Cause) -> String {
    match cause {
        Cause::Refused => {
            "connection refused: is etcd running and listening there? (check --etcd-endpoint)"
                .into()
        }
        Cause::TimedOut => {
            "the connection timed out: check the address in --etcd-endpoint and any firewall in between"
                .into()
        }
        Cause::Dns => "the host name does not resolve: check --etcd-endpoint".into(),
        Cause::Untrusted(why) => format!(
            "etcd's TLS certificate is not trusted ({why}): give the CA that signed it with --etcd-cacert"
        ),
        Cause::TlsRefused(alert) => format!(
            "etcd refused the TLS connection ({alert}): give a client certificate and key it trusts with --etcd-cert and --etcd-key"
        ),
        Cause::NotTls => "etcd does not speak TLS there: use http:// in --etcd-endpoint".into(),
        Cause::HandshakeClosed => "etcd closed the connection during the TLS handshake: if it serves plain HTTP, use http:// in --etcd-endpoint; if it wants a client certificate, give --etcd-cert and --etcd-key".into(),
        Cause::Closed => "etcd closed the connection".into(),
        Cause::Other(text) => text.clone(),
    }
}
