//! S3 settings and the encryption key, read from Secrets at every use (rotation needs no restart).

use super::{OperatorError, kube_err};
use crate::api::{ETCDSnapshotFile, S3Location, S3Storage, SecretKeyRef};
use crate::snapshot::crypt::EncryptionKey;
use crate::storage::config::{S3Config, ca_configmap_name, check_secret_type};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::Api;
use std::collections::BTreeMap;

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
