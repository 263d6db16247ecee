//! The custom resources of group `etcdsnapshot.io/v1`, both cluster-scoped.

mod common;
pub mod conditions;
mod file;
mod schedule;
pub mod time;

pub use common::{
    BucketLookup, Compression, EncryptionSpec, EncryptionStatus, Retention, S3Location,
    SecretKeyRef, Storage,
};
pub use file::{
    ETCDSnapshotFile, ETCDSnapshotFileSpec, ETCDSnapshotFileStatus, Phase, SnapshotError,
};
pub use schedule::{
    CompressionKind, CompressionSpec, ETCDSnapshotSchedule, ETCDSnapshotScheduleSpec,
    ETCDSnapshotScheduleStatus, LocalStorage, Members, RetentionScope, S3Storage, SecretRef,
    StorageBackupStatus, VerifySpec,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

/// Both CRDs, as `crds/` holds them: the schemas generated from the Rust types, without
/// `nullable`.
///
/// schemars marks every `Option` field `nullable: true`. Kubernetes before 1.27 publishes CRD
/// schemas only as OpenAPI v2, and its v2 conversion drops the type and every property of a
/// nullable field, so `kubectl explain` showed `etcdsnapshotfile.status` or
/// `etcdsnapshotschedule.spec.s3` without a single field on 1.20. Nothing is lost without it: our
/// types never serialize a `None` (every `Option` has `skip_serializing_if`), and the API server
/// (1.20 and later) drops a `null` sent for a field that is not nullable instead of refusing it,
/// which reads back as the same `None`.
pub fn crds() -> [CustomResourceDefinition; 2] {
    let mut crds = [ETCDSnapshotFile::crd(), ETCDSnapshotSchedule::crd()];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                drop_nullable(schema);
            }
        }
    }
    crds
}

/// Remove `nullable` from `schema` and every schema inside it.
fn drop_nullable(schema: &mut JSONSchemaProps) {
    schema.nullable = None;
    let nested = schema
        .properties
        .iter_mut()
        .flat_map(|p| p.values_mut())
        .chain(
            schema
                .pattern_properties
                .iter_mut()
                .flat_map(|p| p.values_mut()),
        )
        .chain(schema.definitions.iter_mut().flat_map(|p| p.values_mut()))
        .chain(schema.all_of.iter_mut().flatten())
        .chain(schema.any_of.iter_mut().flatten())
        .chain(schema.one_of.iter_mut().flatten())
        .chain(schema.not.as_deref_mut());
    for child in nested {
        drop_nullable(child);
    }
    for or_bool in [
        &mut schema.additional_properties,
        &mut schema.additional_items,
    ] {
        if let Some(JSONSchemaPropsOrBool::Schema(child)) = or_bool {
            drop_nullable(child);
        }
    }
    match &mut schema.items {
        Some(JSONSchemaPropsOrArray::Schema(child)) => drop_nullable(child),
        Some(JSONSchemaPropsOrArray::Schemas(children)) => {
            children.iter_mut().for_each(drop_nullable)
        }
        None => {}
    }
}

/// The CRDs as one multi-document YAML stream, exactly what `etcd-snapshot crd` prints and
/// `crds/` holds.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_schema_is_nullable_so_openapi_v2_keeps_every_field() {
        let yaml = crds_yaml().expect("render");
        assert!(!yaml.contains("nullable"), "{yaml}");
        // The fields that vanished from `kubectl explain` on 1.20 are still described.
        for field in [
            "bucketLookup:",
            "readyToUse:",
            "etcdRevision:",
            "configSecretRef:",
        ] {
            assert!(yaml.contains(field), "{field} missing");
        }
    }

    #[test]
    fn none_is_never_serialized_as_null() {
        let file: ETCDSnapshotFile = serde_json::from_value(serde_json::json!({
            "apiVersion": "etcdsnapshot.io/v1",
            "kind": "ETCDSnapshotFile",
            "metadata": {"name": "x"},
            "spec": {"snapshotName": "a", "nodeName": "n", "location": "file:///a", "s3": null},
            "status": {"error": null, "size": null},
        }))
        .expect("nulls read as None");
        assert_eq!(file.spec.s3, None);
        let json = serde_json::to_string(&file).expect("serialize");
        assert!(!json.contains("null"), "{json}");
        let schedule: ETCDSnapshotSchedule = serde_json::from_value(serde_json::json!({
            "apiVersion": "etcdsnapshot.io/v1",
            "kind": "ETCDSnapshotSchedule",
            "metadata": {"name": "x"},
            "spec": {},
            "status": {},
        }))
        .expect("defaults");
        let json = serde_json::to_string(&schedule).expect("serialize");
        assert!(!json.contains("null"), "{json}");
    }
}
