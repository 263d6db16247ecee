//! Shared helpers of the integration tests: Kubernetes clients for the real test API server.
#![allow(dead_code)]

use eso_testenv::ApiServer;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::path::Path;
use std::time::Duration;

/// A client authenticated with the given kubeconfig.
pub async fn client_from(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig to config");
    Client::try_from(config).expect("client")
}

/// The administrator's client.
pub async fn admin_client(api: &ApiServer) -> Client {
    client_from(api.admin_kubeconfig()).await
}

/// Server-side apply the generated CRDs (as `crds/` holds them) and wait until both are
/// Established.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let yaml = etcd_snapshot::api::crds_yaml().expect("render CRDs");
    let mut names = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&yaml) {
        let crd: CustomResourceDefinition =
            serde::Deserialize::deserialize(doc).expect("CRD document");
        let name = crd.metadata.name.clone().expect("CRD name");
        crds.patch(
            &name,
            &PatchParams::apply("eso-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply CRD");
        names.push(name);
    }
    for name in names {
        let established = kube::runtime::wait::await_condition(
            crds.clone(),
            &name,
            kube::runtime::wait::conditions::is_crd_established(),
        );
        tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .expect("CRD established in time")
            .expect("watch CRD");
    }
}

/// The `etcd-snapshot` binary under test.
pub fn cli() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_etcd-snapshot"))
}

/// Run a command; return (success, stdout, stderr).
pub fn run(cmd: &mut std::process::Command) -> (bool, String, String) {
    let out = cmd.output().expect("run command");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `--etcd-endpoint` and TLS flags for a test cluster (member 0).
pub fn etcd_flags(etcd: &eso_testenv::EtcdCluster) -> Vec<String> {
    let mut flags = vec![format!("--etcd-endpoint={}", etcd.endpoint(0))];
    if let Some(tls) = etcd.tls() {
        flags.push(format!("--etcd-cacert={}", tls.ca.display()));
        flags.push(format!("--etcd-cert={}", tls.client_cert.display()));
        flags.push(format!("--etcd-key={}", tls.client_key.display()));
    }
    flags
}

/// `--s3 …` flags for a SeaweedFS server and bucket, plain HTTP, path style.
pub fn s3_flags(s3: &eso_testenv::S3Server, bucket: &str, folder: &str) -> Vec<String> {
    vec![
        "--s3".into(),
        format!("--s3-endpoint={}", s3.host_port()),
        "--s3-insecure".into(),
        "--s3-bucket-lookup-type=path".into(),
        format!("--s3-bucket={bucket}"),
        format!("--s3-folder={folder}"),
        format!("--s3-access-key={}", s3.access_key),
        format!("--s3-secret-key={}", s3.secret_key),
    ]
}

/// The bytes and user metadata of an S3 object (panics when it is missing).
pub async fn s3_object(
    s3: &eso_testenv::S3Server,
    bucket: &str,
    key: &str,
) -> (Vec<u8>, std::collections::HashMap<String, String>) {
    let got = s3_client(s3)
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("get object");
    let meta = got.metadata().cloned().unwrap_or_default();
    let body = got
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes()
        .to_vec();
    (body, meta)
}

/// An aws-sdk-s3 client for a SeaweedFS server (plain HTTP).
pub fn s3_client(s3: &eso_testenv::S3Server) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(s3.endpoint())
        .region(Region::new("us-east-1"))
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            &s3.access_key,
            &s3.secret_key,
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Create a bucket.
pub async fn create_bucket(s3: &eso_testenv::S3Server, bucket: &str) {
    s3_client(s3)
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("create bucket");
}

/// Put `n` keys `prefix0..prefixN` into etcd with etcdctl.
pub fn put_keys(etcd: &eso_testenv::EtcdCluster, prefix: &str, n: usize) {
    for i in 0..n {
        let mut cmd = etcd.etcdctl().expect("etcdctl");
        let (ok, _, err) = run(cmd.arg(format!("--endpoints={}", etcd.endpoint(0))).args([
            "put",
            &format!("{prefix}{i}"),
            &format!("value-{i}"),
        ]));
        assert!(ok, "etcdctl put: {err}");
    }
}

/// The plain etcd snapshot bytes of a stored file (decompressing `.zst`).
pub fn plain_bytes(path: &Path) -> Vec<u8> {
    let data = std::fs::read(path).expect("read snapshot");
    if path.to_string_lossy().ends_with(".zst") {
        zstd::decode_all(&data[..]).expect("zstd decode")
    } else {
        data
    }
}

/// `etcdutl snapshot status -w json` of a plain snapshot file: (revision, total keys).
pub fn snapshot_status(plain: &Path) -> (i64, i64) {
    let etcdutl = eso_testenv::EtcdVersion::V3_5.etcdutl().expect("etcdutl");
    let (ok, out, err) = run(std::process::Command::new(etcdutl)
        .args(["snapshot", "status", "-w", "json"])
        .arg(plain));
    assert!(
        ok,
        "etcdutl snapshot status refused {}: {err}",
        plain.display()
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    (
        v["revision"].as_i64().expect("revision"),
        v["totalKey"].as_i64().expect("totalKey"),
    )
}

/// Every key in `bucket` under `folder/`, sorted, except the `.metadata/` side objects.
pub async fn s3_keys(s3: &eso_testenv::S3Server, bucket: &str, folder: &str) -> Vec<String> {
    let metadata = format!("/{}/", etcd_snapshot::consts::METADATA_DIR);
    let listed = s3_client(s3)
        .list_objects_v2()
        .bucket(bucket)
        .prefix(format!("{folder}/"))
        .send()
        .await
        .expect("list S3 objects");
    let mut keys: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .filter(|k| !k.contains(&metadata))
        .collect();
    keys.sort();
    keys
}

/// Put `mib` MiB of incompressible values (1 MiB each, keys `PREFIX0000`...) through `client`, so
/// that a snapshot of that etcd takes a while and is as large as that.
pub async fn put_incompressible(client: &mut etcd_client::Client, prefix: &str, mib: usize) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..mib {
        let mut value = Vec::with_capacity(1 << 20);
        while value.len() < (1 << 20) {
            // xorshift64: cheap bytes that do not compress.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            value.extend_from_slice(&x.to_le_bytes());
        }
        client
            .put(format!("{prefix}{i:04}"), value, None)
            .await
            .expect("etcd put");
    }
}

/// Every entry under a directory (hidden ones too), recursively, as sorted relative paths.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap_or(&p).display().to_string());
        }
    }
    out.sort();
    out
}
