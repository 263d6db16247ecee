//! Bad input to the operator (issue 7), against the real kube-apiserver, SeaweedFS, etcd and the
//! real controller and agent processes (see `support/operator.rs`):
//! - schedules the CRD schema refuses at admission, and schedules and S3 config Secrets the schema
//!   accepts but the controller refuses: each gets Stalled=True with a message saying
//!   what is wrong and exactly one Warning event, while a good schedule next to them keeps working;
//! - ETCDSnapshotFiles made by hand whose location is outside the agent's snapshot directory or
//!   the configured bucket and folder, or whose node label and `spec.nodeName` disagree: nothing
//!   is read, written or deleted, and deleting the record is never stuck;
//! - security: after each scenario every log line, ESF, schedule, Event, CLI error and S3 object
//!   metadata is searched for the credentials used, and none may appear.

use crate::operator_support;
use crate::support;

use etcd_snapshot::api::{
    BucketLookup, Compression, ETCDSnapshotFile, ETCDSnapshotFileSpec, ETCDSnapshotSchedule, Phase,
    S3Location,
};
use etcd_snapshot::consts::{self, secret_keys as k};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use operator_support::{
    BUCKET, FOLDER, NS, OperatorEnv, OperatorOptions, SECRET, Schedule, error_message, phase,
};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

/// Time for one on-demand run of a small database to finish.
const RUN: Duration = Duration::from_secs(30);
/// Time for the controller or an agent to react to a change.
const REACT: Duration = Duration::from_secs(30);
/// A secret key that appears only in the bad Secrets and a refused CLI call.
const DECOY_SECRET: &str = "decoy-SECRET-value-7f3a9c";
/// An access key that appears only in the bad Secrets.
const DECOY_ACCESS: &str = "DECOYACCESSKEY7F3A9C";

/// `kubectl apply --validate=false -f -` (so that only the API server judges): (ok, stderr).
fn kubectl_apply(env: &OperatorEnv, yaml: &str) -> (bool, String) {
    let mut child = env
        .kubectl()
        .args(["apply", "--validate=false", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write manifest");
    let out = child.wait_with_output().expect("kubectl apply");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Create an S3 config Secret with `data` (type `etcdsnapshot.io/s3-config-secret` unless
/// `type_` says otherwise).
async fn create_secret(env: &OperatorEnv, name: &str, type_: &str, data: &[(&str, &str)]) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            ..ObjectMeta::default()
        },
        type_: Some(type_.into()),
        data: Some(
            data.iter()
                .map(|(key, v)| (key.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(env.admin.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_or_else(|e| panic!("create Secret {name}: {e}"));
}

/// Events (all in `default`, where the Recorder puts events of cluster-scoped objects) about
/// the object `name`.
async fn events_about(env: &OperatorEnv, name: &str) -> Vec<Event> {
    Api::<Event>::all(env.admin.clone())
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// The Stalled condition's message (the schedule is invalid), when the condition is True.
async fn invalid_message(env: &OperatorEnv, name: &str) -> Option<String> {
    let s = Api::<ETCDSnapshotSchedule>::all(env.admin.clone())
        .get_opt(name)
        .await
        .ok()??;
    s.status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == consts::conditions::STALLED && c.status == "True")
        .map(|c| c.message)
}

/// Search everything the scenario produced for each of `secrets`: every process log, every ESF
/// and schedule (JSON), every Event in every namespace, `kubectl describe` of the schedules, the
/// given CLI output, and the user metadata of every S3 object in the bucket.
async fn assert_no_credentials(env: &OperatorEnv, secrets: &[&str], extra: &[String]) {
    let mut haystacks: Vec<(String, String)> = Vec::new();
    for key in env.process_names() {
        haystacks.push((format!("log of {key}"), env.log(&key)));
    }
    for f in env.files("").await {
        let json = serde_json::to_string(&f).expect("ESF JSON");
        haystacks.push((format!("ESF {}", f.name_any()), json));
    }
    for s in Api::<ETCDSnapshotSchedule>::all(env.admin.clone())
        .list(&ListParams::default())
        .await
        .expect("list schedules")
        .items
    {
        let json = serde_json::to_string(&s).expect("schedule JSON");
        haystacks.push((format!("schedule {}", s.name_any()), json));
    }
    for e in Api::<Event>::all(env.admin.clone())
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
    {
        let json = serde_json::to_string(&e).expect("event JSON");
        haystacks.push((format!("event {}", e.name_any()), json));
    }
    let (ok, out, err) = support::run(env.kubectl().args(["describe", "ess"]));
    assert!(ok, "kubectl describe ess: {err}");
    haystacks.push(("kubectl describe ess".into(), out));
    let s3 = support::s3_client(&env.s3);
    let listed = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .send()
        .await
        .expect("list objects");
    let mut objects = 0;
    for key in listed.contents().iter().filter_map(|o| o.key()) {
        let head = s3
            .head_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .expect("head object");
        haystacks.push((format!("S3 object {key}"), format!("{:?}", head.metadata())));
        objects += 1;
    }
    for (i, text) in extra.iter().enumerate() {
        haystacks.push((format!("CLI output {i}"), text.clone()));
    }
    assert!(
        haystacks.iter().any(|(_, t)| !t.is_empty()),
        "nothing to search"
    );
    for secret in secrets {
        for (what, text) in &haystacks {
            assert!(
                !text.contains(secret),
                "credential {secret:?} found in {what}"
            );
        }
    }
    eprintln!(
        "searched {} logs/objects/events ({} S3 objects) for {} credentials: none found",
        haystacks.len(),
        objects,
        secrets.len()
    );
}

/// A bad Secret: name, type, data, and what the Invalid message must contain.
type BadSecret = (
    &'static str,
    &'static str,
    Vec<(&'static str, String)>,
    &'static str,
);

/// Bad schedules, bad Secrets, and a good schedule beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_and_secrets_are_refused_each_with_one_event_and_a_good_schedule_keeps_working()
 {
    let env = OperatorEnv::start(OperatorOptions::default()).await;
    env.create_s3_secret(None).await;
    let endpoint = env.s3.host_port();
    let base = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, String)> {
        let mut data: BTreeMap<&'static str, String> = BTreeMap::from([
            (k::ENDPOINT, endpoint.clone()),
            (k::BUCKET, BUCKET.to_string()),
            (k::INSECURE, "true".into()),
            (k::BUCKET_LOOKUP_TYPE, "path".into()),
            (k::ACCESS_KEY, DECOY_ACCESS.into()),
            (k::SECRET_KEY, DECOY_SECRET.into()),
        ]);
        for (key, v) in extra {
            if v.is_empty() {
                data.remove(key);
            } else {
                data.insert(key, v.to_string());
            }
        }
        data.into_iter().collect()
    };
    let bad_secrets: Vec<BadSecret> = vec![
        (
            "no-bucket",
            consts::SECRET_TYPE,
            base(&[(k::BUCKET, "")]),
            "etcd-s3-bucket is missing",
        ),
        (
            "bad-bool",
            consts::SECRET_TYPE,
            base(&[(k::SKIP_SSL_VERIFY, "yes")]),
            "etcd-s3-skip-ssl-verify: \"yes\" is not a boolean",
        ),
        (
            "bad-insecure",
            consts::SECRET_TYPE,
            base(&[(k::INSECURE, "1")]),
            "etcd-s3-insecure: \"1\" is not a boolean",
        ),
        (
            "bad-timeout",
            consts::SECRET_TYPE,
            base(&[(k::TIMEOUT, "five minutes")]),
            "etcd-s3-timeout \"five minutes\"",
        ),
        (
            "zero-timeout",
            consts::SECRET_TYPE,
            base(&[(k::TIMEOUT, "0s")]),
            "etcd-s3-timeout \"0s\"",
        ),
        (
            "garbage-ca",
            consts::SECRET_TYPE,
            base(&[(
                k::ENDPOINT_CA,
                "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
            )]),
            "etcd-s3-endpoint-ca",
        ),
        (
            "text-ca",
            consts::SECRET_TYPE,
            base(&[(k::ENDPOINT_CA, "just some text")]),
            "etcd-s3-endpoint-ca does not contain a PEM certificate",
        ),
        (
            "endpoint-path",
            consts::SECRET_TYPE,
            base(&[(k::ENDPOINT, "minio.local:9000/snapshots")]),
            "without a path",
        ),
        (
            "endpoint-scheme-late",
            consts::SECRET_TYPE,
            base(&[(k::ENDPOINT, "minio.local:9000/https://")]),
            "etcd-s3-endpoint",
        ),
        (
            "endpoint-s3-scheme",
            consts::SECRET_TYPE,
            base(&[(k::ENDPOINT, "s3://minio.local")]),
            "schemes accepted are http:// and https://",
        ),
        (
            "endpoint-scheme-clash",
            consts::SECRET_TYPE,
            base(&[(k::ENDPOINT, "https://minio.local")]),
            "says https:// but etcd-s3-insecure is true",
        ),
        (
            "proxy-no-scheme",
            consts::SECRET_TYPE,
            base(&[(k::PROXY, "proxy.local:3128")]),
            "must be a URL with a scheme",
        ),
        (
            "lookup-sideways",
            consts::SECRET_TYPE,
            base(&[(k::BUCKET_LOOKUP_TYPE, "sideways")]),
            "is not one of auto, dns or path",
        ),
        (
            "half-credentials",
            consts::SECRET_TYPE,
            base(&[(k::SECRET_KEY, "")]),
            "etcd-s3-access-key is set but etcd-s3-secret-key is missing",
        ),
        (
            "opaque",
            "Opaque",
            base(&[]),
            "Secret type \"Opaque\" is not",
        ),
        (
            "missing-ca-configmap",
            consts::SECRET_TYPE,
            base(&[(k::ENDPOINT_CA_NAME, "no-such-configmap")]),
            "no-such-configmap",
        ),
    ];
    for (name, type_, data, _) in &bad_secrets {
        let data: Vec<(&str, &str)> = data.iter().map(|(a, b)| (*a, b.as_str())).collect();
        create_secret(&env, name, type_, &data).await;
    }

    // Refused at admission by the CRD's schema (`--validate=false`: the server decides).
    let refused_by_schema = [
        ("neg-count", "  local: {retention: {count: -1}}", "count"),
        ("zero-count", "  local: {retention: {count: 0}}", "count"),
        (
            "zero-hourly",
            "  local: {retention: {keepHourly: 0}}",
            "keepHourly",
        ),
        (
            "big-level",
            "  compression: {type: zstd, level: 30}",
            "level",
        ),
        (
            "neg-deadline",
            "  startingDeadlineSeconds: -5",
            "startingDeadlineSeconds",
        ),
        ("some-members", "  members: Some", "members"),
        ("zip", "  compression: {type: zip}", "type"),
        (
            "galaxy-scope",
            "  s3: {enabled: true, configSecretRef: {name: x}, retentionScope: Galaxy}",
            "retentionScope",
        ),
        ("string-suspend", "  suspend: \"yes\"", "suspend"),
        ("number-prefix", "  namePrefix: 5", "namePrefix"),
        ("list-selector", "  nodeSelector: [a, b]", "nodeSelector"),
    ];
    for (name, spec, field) in refused_by_schema {
        let (ok, err) = kubectl_apply(&env, &Schedule::new(name).spec(spec).yaml());
        assert!(!ok, "{name}: the API server accepted {spec:?}");
        assert!(
            err.contains("Invalid value") || err.contains("invalid"),
            "{name}: {err}"
        );
        assert!(err.contains(field), "{name}: {field} not named in {err}");
        assert!(!err.contains("panic"), "{err}");
        eprintln!("admission refused {name}: {}", err.trim());
    }
    // A wrong type through the typed client is refused the same way (422).
    let ar = ApiResource::erase::<ETCDSnapshotSchedule>(&());
    let dynamic: Api<DynamicObject> = Api::all_with(env.admin.clone(), &ar);
    let obj: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "etcdsnapshot.io/v1",
        "kind": "ETCDSnapshotSchedule",
        "metadata": {"name": "typed-wrong"},
        "spec": {"local": {"retention": {"count": "five"}}}
    }))
    .expect("dynamic object");
    match dynamic.create(&PostParams::default(), &obj).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 422, "{e:?}"),
        other => panic!("a string count was not refused: {other:?}"),
    }

    // Accepted by the schema, refused by the controller.
    let mut refused_by_controller: Vec<(String, String, String)> = [
        ("bad-cron", "  schedule: \"not a cron\"".to_string(), "got 3"),
        ("six-fields", "  schedule: \"0 0 0 * * *\"".into(), "5 fields"),
        ("bad-zone", "  timeZone: Mars/Olympus".into(), "Mars/Olympus"),
        ("slash-prefix", "  namePrefix: a/b".into(), "namePrefix"),
        ("dots-prefix", "  namePrefix: \"..\"".into(), "namePrefix"),
        ("long-prefix", format!("  namePrefix: {}", "p".repeat(64)), "namePrefix"),
        ("bad-maxage", "  local: {retention: {maxAge: soon}}".into(), "soon"),
        ("nowhere", "  local: {enabled: false}".into(), "nowhere to store"),
        (
            "other-namespace",
            "  s3: {enabled: true, configSecretRef: {name: etcd-s3-config, namespace: kube-system}}"
                .into(),
            "\"kube-system\" is refused",
        ),
        (
            "secret-and-inline",
            "  s3: {enabled: true, configSecretRef: {name: etcd-s3-config}, bucket: b1b, endpoint: e.local}"
                .into(),
            "endpoint, bucket",
        ),
        (
            "inline-path",
            "  s3: {enabled: true, bucket: b1b, endpoint: \"https://s3.local/path\"}".into(),
            "spec.s3.endpoint",
        ),
        (
            "inline-timeout",
            "  s3: {enabled: true, bucket: b1b, timeout: forever}".into(),
            "spec.s3.timeout \"forever\"",
        ),
        (
            "inline-proxy",
            "  s3: {enabled: true, bucket: b1b, proxy: \"proxy.local:3128\"}".into(),
            "spec.s3.proxy",
        ),
        (
            "inline-bucket",
            "  s3: {enabled: true, bucket: Bad_Bucket}".into(),
            "Bad_Bucket",
        ),
        ("s3-empty", "  s3: {enabled: true}".into(), "neither configSecretRef nor bucket"),
        ("missing-secret", "  s3: {enabled: true, configSecretRef: {name: no-such-secret}}".into(), "no-such-secret not found"),
    ]
    .into_iter()
    .map(|(n, s, m)| (n.to_string(), s, m.to_string()))
    .collect();
    for (name, _, _, needle) in &bad_secrets {
        refused_by_controller.push((
            format!("secret-{name}"),
            format!("  s3: {{enabled: true, configSecretRef: {{name: {name}}}}}"),
            needle.to_string(),
        ));
    }
    // The good schedule goes in last: it must work with all the bad ones around.
    let mut all = String::new();
    for (name, spec, _) in &refused_by_controller {
        all.push_str(&Schedule::new(name).spec(spec).yaml());
        all.push_str("\n---\n");
    }
    all.push_str(&Schedule::new("good").s3().yaml());
    env.apply(&all);

    for (name, spec, needle) in &refused_by_controller {
        let message = env
            .wait_until(
                &format!("schedule {name} to be Invalid"),
                REACT,
                async || invalid_message(&env, name).await,
            )
            .await;
        assert!(
            message.contains(needle.as_str()),
            "{name} ({spec}): {needle:?} not in {message:?}"
        );
        assert!(!message.contains('\n'), "{name}: {message:?}");
        eprintln!("controller refused {name}: {message}");
    }

    // The good schedule works meanwhile.
    let run = env.request_run("good").await;
    env.wait_run_ready(&run, 2, RUN).await;
    assert!(invalid_message(&env, "good").await.is_none());

    // Stored files are private: 0600 files, 0700 directories.
    let dir = env.node_dir("node0");
    let mut checked = 0;
    for entry in walk(&dir) {
        let mode = std::fs::metadata(&entry)
            .expect("stat")
            .permissions()
            .mode()
            & 0o777;
        let want = if entry.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{}", entry.display());
        checked += 1;
    }
    assert!(checked >= 2, "no snapshot files under {}", dir.display());

    // Several resyncs later (5 s each), still one Warning event per bad schedule, not one per
    // reconcile.
    tokio::time::sleep(Duration::from_secs(12)).await;
    for (name, _, needle) in &refused_by_controller {
        let events: Vec<Event> = events_about(&env, name)
            .await
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(consts::REASON_INVALID))
            .collect();
        assert_eq!(events.len(), 1, "{name}: {events:?}");
        let e = &events[0];
        assert_eq!(e.type_.as_deref(), Some("Warning"), "{name}");
        assert!(e.series.is_none(), "{name}: the event repeated: {e:?}");
        assert!(
            e.note
                .as_deref()
                .unwrap_or_default()
                .contains(needle.as_str()),
            "{name}: {e:?}"
        );
    }

    // Fixing a Secret makes its schedule valid again, with no restart.
    Api::<Secret>::namespaced(env.admin.clone(), NS)
        .patch(
            "bad-bool",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"stringData": {
                k::SKIP_SSL_VERIFY: "false",
                k::ACCESS_KEY: env.s3.access_key,
                k::SECRET_KEY: env.s3.secret_key,
            }})),
        )
        .await
        .expect("fix Secret");
    env.wait_until(
        "schedule secret-bad-bool to become valid",
        REACT,
        async || {
            invalid_message(&env, "secret-bad-bool")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;

    // A refused CLI call with a decoy secret key: its error must not echo the key.
    let mut flags = support::s3_flags(&env.s3, BUCKET, FOLDER);
    flags[7] = format!("--s3-secret-key={DECOY_SECRET}");
    let (ok, out, err) = support::run(
        support::cli()
            .arg("ls")
            .args(&flags)
            .arg(format!("--dir={}", env.node_dir("node0").display())),
    );
    assert!(!ok, "ls with a wrong secret key: {out}");
    assert!(err.lines().any(|l| l.starts_with("error:")), "{err}");

    assert_no_credentials(
        &env,
        &[
            DECOY_SECRET,
            DECOY_ACCESS,
            &env.s3.secret_key,
            &env.s3.access_key,
        ],
        &[out, err],
    )
    .await;
    env.assert_no_forbidden();
}

/// Every file and directory under `dir` (not `dir` itself).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// A hand-made ESF (as an administrator could create one), with the finalizer and labels the
/// operator's own records have.
fn hand_made(
    name: &str,
    snapshot: &str,
    node_label: &str,
    node: &str,
    location: &str,
    s3_secret: Option<&str>,
) -> ETCDSnapshotFile {
    let mut esf = ETCDSnapshotFile::new(
        name,
        ETCDSnapshotFileSpec {
            snapshot_name: snapshot.into(),
            node_name: node.into(),
            location: location.into(),
            s3: None,
            metadata: None,
            compression: Compression::None,
            compression_level: None,
            schedule_name: None,
            s3_config_secret_name: s3_secret.map(str::to_string),
            encryption: None,
        },
    );
    let storage = if location.starts_with("s3://") {
        consts::STORAGE_S3.to_string()
    } else {
        node_label.to_string()
    };
    esf.metadata.labels = Some(BTreeMap::from([
        (consts::LABEL_STORAGE.to_string(), storage),
        (consts::LABEL_NODE.to_string(), node_label.to_string()),
    ]));
    esf.metadata.finalizers = Some(vec![consts::FINALIZER.to_string()]);
    esf
}

/// Hand-made records pointing outside the snapshot directory or the configured bucket/folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_made_records_outside_the_dir_or_bucket_are_never_read_written_or_deleted() {
    let env = OperatorEnv::start(OperatorOptions::default()).await;
    env.create_s3_secret(None).await;
    let api = env.files_api();
    let node_dir = env.node_dir("node0");
    std::fs::create_dir_all(&node_dir).expect("node dir");
    let outside = tempfile::tempdir().expect("outside dir");
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"precious").expect("victim");
    let sibling = node_dir
        .parent()
        .expect("parent of the node dir")
        .join("sibling-victim");
    std::fs::write(&sibling, b"precious too").expect("sibling");
    // A Node for records that claim another node (so no "node gone" rule applies).
    Api::<Node>::all(env.admin.clone())
        .create(
            &PostParams::default(),
            &Node {
                metadata: ObjectMeta {
                    name: Some("node-other".into()),
                    ..ObjectMeta::default()
                },
                ..Node::default()
            },
        )
        .await
        .expect("create Node");
    // Objects in another bucket and in another folder of the configured bucket.
    support::create_bucket(&env.s3, "other-bucket").await;
    let s3 = support::s3_client(&env.s3);
    for (bucket, key) in [
        ("other-bucket", format!("{FOLDER}/stolen-node0-1")),
        (BUCKET, "other-folder/stolen-node0-1".to_string()),
    ] {
        s3.put_object()
            .bucket(bucket)
            .key(&key)
            .body(b"precious object".to_vec().into())
            .send()
            .await
            .expect("put object");
    }
    let object_exists = async |bucket: &str, key: &str| {
        s3.head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .is_ok()
    };

    let nd = node_dir.display().to_string();
    let ready: Vec<(ETCDSnapshotFile, &str)> = vec![
        (
            hand_made(
                "local-outside",
                "victim",
                "node0",
                "node0",
                &format!("file://{}", victim.display()),
                None,
            ),
            "is outside the snapshot directory",
        ),
        (
            hand_made(
                "local-dotdot",
                "sibling-victim",
                "node0",
                "node0",
                &format!("file://{nd}/../sibling-victim"),
                None,
            ),
            "is outside the snapshot directory",
        ),
        (
            hand_made(
                "local-dotdot-name",
                "../sibling-victim",
                "node0",
                "node0",
                &format!("file://{nd}/../sibling-victim"),
                None,
            ),
            "is outside the snapshot directory",
        ),
        (
            hand_made(
                "local-etc-shadow",
                "shadow",
                "node0",
                "node0",
                "file:///etc/shadow",
                None,
            ),
            "is outside the snapshot directory",
        ),
        (
            hand_made(
                "local-other-node",
                "victim",
                "node0",
                "node-other",
                &format!("file://{}", victim.display()),
                None,
            ),
            "no agent handles this record",
        ),
        (
            hand_made(
                "s3-other-bucket",
                "stolen-node0-1",
                "node0",
                "node0",
                &format!("s3://other-bucket/{FOLDER}/stolen-node0-1"),
                Some(SECRET),
            ),
            "is not under the configured bucket and folder",
        ),
        (
            hand_made(
                "s3-other-folder",
                "stolen-node0-1",
                "node0",
                "node0",
                &format!("s3://{BUCKET}/other-folder/stolen-node0-1"),
                Some(SECRET),
            ),
            "is not under the configured bucket and folder",
        ),
        (
            {
                // Consistent inline settings (no Secret) for a bucket no schedule uses.
                let mut esf = hand_made(
                    "s3-inline-elsewhere",
                    "stolen-node0-1",
                    "node0",
                    "node0",
                    &format!("s3://other-bucket/{FOLDER}/stolen-node0-1"),
                    None,
                );
                esf.spec.s3 = Some(S3Location {
                    endpoint: Some(env.s3.host_port()),
                    bucket: "other-bucket".into(),
                    bucket_lookup: Some(BucketLookup::Path),
                    prefix: Some(FOLDER.into()),
                    insecure: Some(true),
                    ..S3Location::default()
                });
                esf
            },
            "is not the inline S3 target of any schedule",
        ),
        (
            hand_made(
                "s3-no-settings",
                "stolen-node0-1",
                "node0",
                "node0",
                &format!("s3://other-bucket/{FOLDER}/stolen-node0-1"),
                None,
            ),
            "its S3 settings are invalid",
        ),
    ];
    for (esf, _) in &ready {
        let name = esf.name_any();
        api.create(&PostParams::default(), esf)
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        // Ready, as if a snapshot had been stored there.
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"status": {"phase": "Ready", "readyToUse": true}})),
        )
        .await
        .unwrap_or_else(|e| panic!("status of {name}: {e}"));
    }
    // Pending records the agent must not take: other node in spec, location outside the dir,
    // S3 location elsewhere.
    let pending = [
        hand_made(
            "pending-other-node",
            "etcd-snapshot-node-other-100",
            "node0",
            "node-other",
            &format!("file://{nd}/etcd-snapshot-node-other-100"),
            None,
        ),
        hand_made(
            "pending-outside",
            "victim",
            "node0",
            "node0",
            &format!("file://{}", victim.display()),
            None,
        ),
        hand_made(
            "pending-s3-elsewhere",
            "stolen-node0-1",
            "node0",
            "node0",
            &format!("s3://other-bucket/{FOLDER}/stolen-node0-1"),
            Some(SECRET),
        ),
    ];
    for esf in &pending {
        api.create(&PostParams::default(), esf)
            .await
            .unwrap_or_else(|e| panic!("create {}: {e}", esf.name_any()));
    }
    let failed_outside = env
        .wait_until("the agent to refuse pending-outside", REACT, async || {
            let f = api.get("pending-outside").await.ok()?;
            (phase(&f) == Phase::Failed).then_some(f)
        })
        .await;
    assert!(
        error_message(&failed_outside).contains("is not in this agent's snapshot directory"),
        "{}",
        error_message(&failed_outside)
    );
    let failed_s3 = env
        .wait_until(
            "the agent to refuse pending-s3-elsewhere",
            REACT,
            async || {
                let f = api.get("pending-s3-elsewhere").await.ok()?;
                (phase(&f) == Phase::Failed).then_some(f)
            },
        )
        .await;
    assert!(
        error_message(&failed_s3).contains("is not where the S3 settings point"),
        "{}",
        error_message(&failed_s3)
    );
    // The record claiming another node is never taken by node0's agent.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let other = api
        .get("pending-other-node")
        .await
        .expect("pending-other-node");
    assert_eq!(phase(&other), Phase::Pending, "{other:?}");
    assert!(
        !node_dir.join("etcd-snapshot-node-other-100").exists(),
        "node0's agent snapshotted another node's record"
    );

    // Deleting each record returns (nothing stuck), leaves its target alone and says so.
    for (esf, note) in &ready {
        let name = esf.name_any();
        let (ok, _, err) =
            support::run(
                env.kubectl()
                    .args(["delete", "esf", &name, "--timeout=60s"]),
            );
        assert!(
            ok,
            "kubectl delete esf {name}: {err}\n{}",
            env.diagnostics()
        );
        let events = env
            .wait_until(&format!("the Delete event of {name}"), REACT, async || {
                let e: Vec<Event> = events_about(&env, &name)
                    .await
                    .into_iter()
                    .filter(|e| e.reason.as_deref() == Some(consts::REASON_DELETED))
                    .collect();
                (!e.is_empty()).then_some(e)
            })
            .await;
        assert!(
            events.iter().all(|e| e.type_.as_deref() == Some("Warning")
                && e.note.as_deref().unwrap_or_default().contains(note)
                && e.note
                    .as_deref()
                    .unwrap_or_default()
                    .contains("nothing was deleted")),
            "{name}: {events:?}"
        );
    }
    for esf in &pending {
        let name = esf.name_any();
        let (ok, _, err) =
            support::run(
                env.kubectl()
                    .args(["delete", "esf", &name, "--timeout=60s"]),
            );
        assert!(
            ok,
            "kubectl delete esf {name}: {err}\n{}",
            env.diagnostics()
        );
    }
    assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
    assert_eq!(std::fs::read(&sibling).expect("sibling"), b"precious too");
    assert!(std::path::Path::new("/etc/shadow").exists());
    assert!(object_exists("other-bucket", &format!("{FOLDER}/stolen-node0-1")).await);
    assert!(object_exists(BUCKET, "other-folder/stolen-node0-1").await);
    assert!(
        env.files("").await.is_empty(),
        "records left: {:?}",
        env.files("")
            .await
            .iter()
            .map(|f| f.name_any())
            .collect::<Vec<_>>()
    );
    // The agent read nothing from there either: no record was made for the victims.
    assert!(env.local_snapshots("node0").is_empty());

    assert_no_credentials(&env, &[&env.s3.secret_key, &env.s3.access_key], &[]).await;
    env.assert_no_forbidden();
}
