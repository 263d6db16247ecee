//! kube-rs and kubectl against the real kube-apiserver of the test environment: the generated
//! CRDs are served with their printer columns, status subresource and schema validation.

use crate::support;

use eso_testenv::{ApiServer, ApiServerOptions};
use etcd_snapshot::api::{
    Compression, ETCDSnapshotFile, ETCDSnapshotFileSpec, ETCDSnapshotFileStatus, Phase,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

const SNAPSHOT: &str = "on-demand-node-a-1730308816";
const LOCATION: &str = "file:///var/lib/etcd-snapshots/on-demand-node-a-1730308816";

#[tokio::test]
async fn crds_apply_and_kubectl_shows_snapshot_columns() {
    let api = ApiServer::start(ApiServerOptions::default()).expect("start kube-apiserver");
    let client = support::admin_client(&api).await;
    support::install_crds(&client).await;

    let files: Api<ETCDSnapshotFile> = Api::all(client.clone());
    let name = etcd_snapshot::naming::esf_name(
        etcd_snapshot::api::Storage::Local,
        SNAPSHOT,
        "node-a",
        LOCATION,
    );
    let esf = ETCDSnapshotFile::new(
        &name,
        ETCDSnapshotFileSpec {
            snapshot_name: SNAPSHOT.into(),
            node_name: "node-a".into(),
            location: LOCATION.into(),
            s3: None,
            metadata: None,
            compression: Compression::None,
            compression_level: None,
            schedule_name: None,
            s3_config_secret_name: None,
            encryption: None,
        },
    );
    files
        .create(&PostParams::default(), &esf)
        .await
        .expect("create ESF");

    // Status goes through the status subresource.
    let created = jiff::Timestamp::from_second(1_730_308_816).expect("valid time");
    let status = serde_json::json!({
        "status": ETCDSnapshotFileStatus {
            phase: Some(Phase::Ready),
            ready_to_use: Some(true),
            size: Some(Quantity("2891808".into())),
            creation_time: Some(Time(created)),
            ..Default::default()
        }
    });
    files
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("patch status");

    let back = files.get(&name).await.expect("read back");
    assert_eq!(back.spec.snapshot_name, SNAPSHOT);
    assert_eq!(
        back.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Ready)
    );

    let out = api
        .kubectl()
        .expect("kubectl")
        .args(["get", "etcdsnapshotfile"])
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "SNAPSHOTNAME",
            "NODE",
            "LOCATION",
            "SIZE",
            "CREATIONTIME",
            "PHASE"
        ]
    );
    let row: Vec<&str> = lines.next().expect("one row").split_whitespace().collect();
    assert_eq!(
        row,
        [
            name.as_str(),
            SNAPSHOT,
            "node-a",
            LOCATION,
            "2891808",
            "2024-10-30T17:20:16Z",
            "Ready"
        ]
    );

    // An events.k8s.io Event about the cluster-scoped ESF, through kube-runtime's Recorder (it
    // lands in `default`, which the patched 1.20 server accepts as current servers do), and
    // `kubectl describe` shows it.
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "etcd-snapshot-tests".into(),
            instance: None,
        },
    );
    recorder
        .publish(
            &Event {
                type_: EventType::Normal,
                reason: etcd_snapshot::consts::REASON_CREATED.into(),
                note: Some(format!("Snapshot {SNAPSHOT} saved on node-a")),
                action: "Save".into(),
                secondary: None,
            },
            &back.object_ref(&()),
        )
        .await
        .expect("publish event about a cluster-scoped object");
    let out = api
        .kubectl()
        .expect("kubectl")
        .args(["describe", "etcdsnapshotfile", &name])
        .output()
        .expect("run kubectl describe");
    let described = String::from_utf8_lossy(&out.stdout);
    assert!(
        described.contains("ETCDSnapshotCreated") && described.contains("saved on node-a"),
        "{described}"
    );

    // The short name works too.
    let out = api
        .kubectl()
        .expect("kubectl")
        .args(["get", "esf", "-o", "name"])
        .output()
        .expect("run kubectl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("etcdsnapshotfile.etcdsnapshot.io/{name}")
    );
}

#[tokio::test]
async fn schema_validation_rejects_a_wrongly_typed_field() {
    let api = ApiServer::start(ApiServerOptions::default()).expect("start kube-apiserver");
    let client = support::admin_client(&api).await;
    support::install_crds(&client).await;

    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("etcdsnapshot.io", "v1", "ETCDSnapshotFile"),
        "etcdsnapshotfiles",
    );
    let raw: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let bad: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "etcdsnapshot.io/v1",
        "kind": "ETCDSnapshotFile",
        "metadata": {"name": "bad-types"},
        "spec": {
            "snapshotName": "x-n-1",
            "nodeName": 123,
            "location": "file:///x",
            "compression": "gzip"
        }
    }))
    .expect("dynamic object");
    let err = raw
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("the server must reject a number where a string is required");
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}");
    };
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status.message.contains("spec.nodeName"),
        "{}",
        status.message
    );
    assert!(
        status.message.contains("spec.compression"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn rbac_denies_a_user_without_bindings() {
    let nobody = eso_testenv::ApiUser {
        name: "nobody".into(),
        groups: vec!["system:authenticated".into()],
    };
    let api = ApiServer::start(ApiServerOptions {
        users: vec![nobody],
    })
    .expect("start kube-apiserver");
    let admin = support::admin_client(&api).await;
    support::install_crds(&admin).await;
    let client = support::client_from(api.kubeconfig("nobody").expect("kubeconfig")).await;
    let files: Api<ETCDSnapshotFile> = Api::all(client);
    let err = files
        .list(&Default::default())
        .await
        .expect_err("an unbound user must not list snapshots");
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}");
    };
    assert_eq!(status.code, 403, "{status:?}");
}
