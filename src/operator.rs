//! What the controller and the agents share in the cluster: agent registration Leases, S3
//! settings from the config Secret, status writes and events (see [`crate::events`]).

pub use crate::events::Events;

use crate::api::{ETCDSnapshotFile, ETCDSnapshotFileStatus, S3Location, S3Storage, SecretKeyRef};
use crate::consts;
use crate::naming::label_value;
use crate::snapshot::crypt::{CryptError, EncryptionKey};
use crate::storage::config::{S3Config, S3ConfigError, ca_configmap_name, check_secret_type};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use std::collections::BTreeMap;

/// Errors reading operator settings from the cluster.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The S3 config Secret does not exist.
    #[error("S3 config Secret {namespace}/{name} not found")]
    SecretMissing {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The CA ConfigMap named by the Secret does not exist.
    #[error("endpoint CA ConfigMap {namespace}/{name} not found")]
    CaConfigMapMissing {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The Secret's values are invalid.
    #[error("S3 config Secret {name}: {source}")]
    BadSecret {
        /// Secret name.
        name: String,
        /// What is wrong (never a credential).
        source: S3ConfigError,
    },
    /// Inline S3 settings are invalid.
    #[error("S3 settings: {0}")]
    BadInline(S3ConfigError),
    /// The encryption key Secret does not exist, or lacks the key.
    #[error("encryption key Secret {namespace}/{name} not found or has no key {key:?}")]
    KeyMissing {
        /// Namespace.
        namespace: String,
        /// Secret name.
        name: String,
        /// Key in the Secret's data.
        key: String,
    },
    /// The encryption key in the Secret is unusable (never shows the key).
    #[error("encryption key Secret {name} key {key:?}: {source}")]
    BadKey {
        /// Secret name.
        name: String,
        /// Key in the Secret's data.
        key: String,
        /// What is wrong.
        source: CryptError,
    },
    /// An API request failed.
    #[error("{op}: {source}")]
    Kube {
        /// What was being done.
        op: String,
        /// The error.
        source: kube::Error,
    },
}

impl OperatorError {
    /// PascalCase reason, for events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            OperatorError::SecretMissing { .. } => consts::errors::SECRET_MISSING,
            OperatorError::CaConfigMapMissing { .. } => consts::errors::CA_CONFIG_MAP_MISSING,
            OperatorError::BadSecret { .. } => consts::errors::INVALID_SECRET,
            OperatorError::BadInline(_) => consts::errors::INVALID_S3_SETTINGS,
            OperatorError::KeyMissing { .. } => consts::errors::ENCRYPTION_KEY_MISSING,
            OperatorError::BadKey { .. } => consts::errors::INVALID_ENCRYPTION_KEY,
            OperatorError::Kube { .. } => consts::errors::KUBERNETES_API,
        }
    }

    /// True for errors a user must fix (no point retrying fast).
    pub fn is_config(&self) -> bool {
        !matches!(self, OperatorError::Kube { .. })
    }
}

fn kube_err(op: impl Into<String>) -> impl FnOnce(kube::Error) -> OperatorError {
    let op = op.into();
    move |source| OperatorError::Kube { op, source }
}

/// Read the S3 config Secret `name` in `namespace` (and its CA ConfigMap, if it names one).
/// Read at every operation, so rotated credentials apply without a restart.
pub async fn s3_config_from_secret(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<S3Config, OperatorError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(kube_err(format!("reading Secret {namespace}/{name}")))?
        .ok_or_else(|| OperatorError::SecretMissing {
            namespace: namespace.into(),
            name: name.into(),
        })?;
    let bad = |source| OperatorError::BadSecret {
        name: name.to_string(),
        source,
    };
    check_secret_type(secret.type_.as_deref().unwrap_or("Opaque")).map_err(bad)?;
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    let ca_map = match ca_configmap_name(&data) {
        Some(cm_name) => {
            let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            let cm = cms
                .get_opt(&cm_name)
                .await
                .map_err(kube_err(format!("reading ConfigMap {namespace}/{cm_name}")))?
                .ok_or_else(|| OperatorError::CaConfigMapMissing {
                    namespace: namespace.into(),
                    name: cm_name.clone(),
                })?;
            Some(cm.data.unwrap_or_default())
        }
        None => None,
    };
    S3Config::from_secret(&data, ca_map.as_ref()).map_err(bad)
}

/// Read the encryption key from `r` (a Secret in `namespace`, the operator's own). Read at every
/// use, so a rotated key applies to the next snapshot without a restart.
pub async fn encryption_key_from_secret(
    client: &Client,
    namespace: &str,
    r: &SecretKeyRef,
) -> Result<EncryptionKey, OperatorError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let missing = || OperatorError::KeyMissing {
        namespace: namespace.into(),
        name: r.name.clone(),
        key: r.key.clone(),
    };
    let secret = secrets
        .get_opt(&r.name)
        .await
        .map_err(kube_err(format!("reading Secret {namespace}/{}", r.name)))?
        .ok_or_else(missing)?;
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .ok_or_else(missing)?;
    EncryptionKey::parse(&value.0).map_err(|source| OperatorError::BadKey {
        name: r.name.clone(),
        key: r.key.clone(),
        source,
    })
}

/// S3 settings of an S3 copy: from its Secret when it names one, else from the non-secret
/// location in its spec (credentials then come from the process environment).
pub async fn s3_config_for_file(
    client: &Client,
    namespace: &str,
    esf: &ETCDSnapshotFile,
) -> Result<S3Config, OperatorError> {
    if let Some(secret) = esf.spec.s3_config_secret_name.as_deref() {
        return s3_config_from_secret(client, namespace, secret).await;
    }
    let location = esf.spec.s3.clone().unwrap_or_default();
    S3Config::from_schedule_inline(&inline_from_location(&location))
        .map_err(OperatorError::BadInline)
}

/// The inline schedule form of an ESF's S3 location.
pub fn inline_from_location(l: &S3Location) -> S3Storage {
    S3Storage {
        enabled: true,
        endpoint: l.endpoint.clone(),
        endpoint_ca: l.endpoint_ca.clone(),
        skip_ssl_verify: l.skip_ssl_verify,
        bucket: Some(l.bucket.clone()),
        bucket_lookup: l.bucket_lookup,
        region: l.region.clone(),
        folder: l.prefix.clone(),
        insecure: l.insecure,
        ..S3Storage::default()
    }
}

/// Merge-patch the status of an ETCDSnapshotFile.
pub async fn patch_file_status(
    api: &Api<ETCDSnapshotFile>,
    name: &str,
    status: &ETCDSnapshotFileStatus,
    manager: &str,
) -> Result<(), OperatorError> {
    let patch = serde_json::json!({ "status": status });
    api.patch_status(name, &PatchParams::apply(manager), &Patch::Merge(&patch))
        .await
        .map_err(kube_err(format!("updating status of {name}")))?;
    Ok(())
}

/// Deleting the stored copy of a record being deleted failed with `message`: write it into
/// `status.error` (the schedule's `BackupsHealthy` reads it), unless the record already says so
/// since its deletion (a retry writes nothing, so it triggers no watch event).
pub async fn record_delete_failure(
    api: &Api<ETCDSnapshotFile>,
    esf: &ETCDSnapshotFile,
    message: &str,
    manager: &str,
) -> Result<(), OperatorError> {
    let error = esf.status.as_ref().and_then(|s| s.error.as_ref());
    let deleting = esf.metadata.deletion_timestamp.as_ref();
    let recorded = match (deleting, error) {
        (Some(d), Some(e)) => {
            e.message.as_deref() == Some(message) && e.time.as_ref().is_some_and(|t| t.0 >= d.0)
        }
        _ => false,
    };
    if recorded {
        return Ok(());
    }
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    let patch = serde_json::json!({ "status": { "error": { "time": now, "message": message } } });
    let name = kube::ResourceExt::name_any(esf);
    api.patch_status(&name, &PatchParams::apply(manager), &Patch::Merge(&patch))
        .await
        .map_err(kube_err(format!("updating status of {name}")))?;
    Ok(())
}

/// What an agent's registration Lease says.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentInfo {
    /// Node name.
    pub node: String,
    /// The node's snapshot directory.
    pub snapshot_dir: String,
    /// Whether the local etcd member answered at the last renew.
    pub etcd_healthy: bool,
    /// Cluster ID of the local member, if known.
    pub cluster_id: Option<String>,
    /// Last renew time.
    pub renewed: Option<jiff::Timestamp>,
    /// How long a renew stays valid.
    pub lease_seconds: i32,
}

impl AgentInfo {
    /// Name of the registration Lease of `node`.
    pub fn lease_name(node: &str) -> String {
        format!(
            "{}{}",
            consts::AGENT_LEASE_PREFIX,
            label_value(node).to_lowercase()
        )
    }

    /// Read a registration Lease.
    pub fn from_lease(lease: &Lease) -> Option<AgentInfo> {
        let spec = lease.spec.as_ref()?;
        let annotations = lease.metadata.annotations.clone().unwrap_or_default();
        let health = annotations
            .get(consts::ANNOTATION_ETCD_HEALTH)
            .cloned()
            .unwrap_or_default();
        Some(AgentInfo {
            node: spec.holder_identity.clone()?,
            snapshot_dir: annotations
                .get(consts::ANNOTATION_SNAPSHOT_DIR)
                .cloned()
                .unwrap_or_default(),
            etcd_healthy: health == "true",
            cluster_id: annotations.get(consts::ANNOTATION_CLUSTER_ID).cloned(),
            renewed: spec.renew_time.as_ref().map(|t| t.0),
            lease_seconds: spec.lease_duration_seconds.unwrap_or(30),
        })
    }

    /// Whether the agent renewed within its lease duration before `now`.
    pub fn is_live(&self, now: jiff::Timestamp) -> bool {
        self.renewed
            .is_some_and(|t| now.as_second() - t.as_second() <= i64::from(self.lease_seconds))
    }
}

/// Lease API in the operator namespace.
pub fn leases(client: &Client, namespace: &str) -> Api<Lease> {
    Api::namespaced(client.clone(), namespace)
}
