//! The Helm chart (charts/etcd-snapshot-operator), rendered and linted by real Helm v4
//! (`$ESO_CACHE/bin/helm`, installed by scripts/install-helm-kubectl.sh):
//! - with default values `helm template` equals the checked-in deploy/etcd-snapshot-operator.yaml
//!   (drift; `make chart` regenerates it);
//! - `helm lint --strict` passes with the defaults and with other value sets;
//! - its RBAC is exactly deploy/rbac.yaml's, the least privilege tests/it/operator.rs proves;
//! - values that make no sense are rejected at render time with a clear message;
//! - the kubeadm/k3s/rke2 presets put their paths into the agent DaemonSet;
//! - every container with a read-only root file system has a writable emptyDir where the code
//!   writes its scratch files (verify and restore).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_yaml::Value;

fn root() -> PathBuf {
    eso_testenv::repo_root()
}

const CHART: &str = "charts/etcd-snapshot-operator";

/// `helm ARGS... -f values...` in the repository root, with Helm's own config, cache and data
/// directories inside a temporary directory (nothing of the machine's is read or written).
/// Values files are YAML texts written to that directory.
fn helm(args: &[&str], values: &[&str]) -> Output {
    let helm = eso_testenv::helm().unwrap_or_else(|e| {
        panic!("real Helm is needed ({e}): run scripts/install-test-deps.sh (make test-deps)")
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(helm);
    cmd.current_dir(root())
        .args(args)
        .env("HELM_CONFIG_HOME", dir.path().join("config"))
        .env("HELM_CACHE_HOME", dir.path().join("cache"))
        .env("HELM_DATA_HOME", dir.path().join("data"));
    for (i, v) in values.iter().enumerate() {
        let file = dir.path().join(format!("values-{i}.yaml"));
        std::fs::write(&file, v).expect("write values file");
        cmd.arg("-f").arg(&file);
    }
    cmd.output().expect("run helm")
}

/// `helm template etcd-snapshot charts/etcd-snapshot-operator -n etcd-snapshot --include-crds
/// --no-hooks` (what `make chart` writes to deploy/) with `values` files on top of the defaults.
/// Ok(manifests) or Err(stderr).
fn render(values: &[&str]) -> Result<String, String> {
    let out = helm(
        &[
            "template",
            "etcd-snapshot",
            CHART,
            "--namespace",
            "etcd-snapshot",
            "--include-crds",
            "--no-hooks",
        ],
        values,
    );
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("utf-8 manifests"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// As [`render`] with default values, keeping the Helm hooks (`render` leaves them out, as
/// `helm template --no-hooks` does for deploy/).
fn render_with_hooks() -> String {
    let out = Command::new(root().join("scripts/render-chart.sh"))
        .args(["--hooks", "-o", "-"])
        .output()
        .expect("run scripts/render-chart.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 manifests")
}

fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("valid YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

fn sorted_strings(v: Option<&Value>) -> Vec<String> {
    let mut out: Vec<String> = v
        .and_then(Value::as_sequence)
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().expect("string").to_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// A rule, order-insensitive: (apiGroups, resources, resourceNames, verbs), each sorted.
type Rule = [Vec<String>; 4];

/// The RBAC of a manifest set: every Role/ClusterRole's rules and every binding's roleRef and
/// subjects, keyed by (kind, namespace, name).
fn rbac(docs: &[Value]) -> BTreeMap<(String, String, String), String> {
    let mut out = BTreeMap::new();
    for d in docs {
        let kind = str_at(d, &["kind"]).unwrap_or_default().to_owned();
        let name = str_at(d, &["metadata", "name"])
            .unwrap_or_default()
            .to_owned();
        let ns = str_at(d, &["metadata", "namespace"])
            .unwrap_or_default()
            .to_owned();
        let summary = match kind.as_str() {
            "Role" | "ClusterRole" => {
                let mut rules: Vec<Rule> = d
                    .get("rules")
                    .and_then(Value::as_sequence)
                    .expect("rules")
                    .iter()
                    .map(|r| {
                        ["apiGroups", "resources", "resourceNames", "verbs"]
                            .map(|k| sorted_strings(r.get(k)))
                    })
                    .collect();
                rules.sort();
                format!("{rules:?}")
            }
            "RoleBinding" | "ClusterRoleBinding" => format!(
                "roleRef={:?} subjects={:?}",
                d.get("roleRef"),
                d.get("subjects")
            ),
            "ServiceAccount" => String::new(),
            _ => continue,
        };
        out.insert((kind, ns, name), summary);
    }
    out
}

#[test]
fn default_values_render_the_checked_in_deploy_manifests() {
    let rendered = render(&[]).expect("default values render");
    let checked_in = root().join("deploy/etcd-snapshot-operator.yaml");
    let expected =
        std::fs::read_to_string(&checked_in).expect("read deploy/etcd-snapshot-operator.yaml");
    if rendered != expected {
        let line = rendered
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| rendered.lines().count().min(expected.lines().count()))
            + 1;
        panic!(
            "deploy/etcd-snapshot-operator.yaml is not the chart rendered with default values \
             (first difference at line {line}); run `make chart` and commit the result"
        );
    }
}

#[test]
fn chart_rbac_is_exactly_deploy_rbac() {
    let chart = rbac(&documents(&render(&[]).expect("default values render")));
    let reference = rbac(&documents(
        &std::fs::read_to_string(root().join("deploy/rbac.yaml")).expect("read deploy/rbac.yaml"),
    ));
    assert!(
        chart.keys().any(|(k, _, _)| k == "ClusterRole")
            && chart.keys().any(|(k, _, _)| k == "Role"),
        "the chart renders no Role/ClusterRole: {chart:#?}"
    );
    for (key, rules) in &reference {
        match chart.get(key) {
            None => panic!("the chart does not render {key:?} of deploy/rbac.yaml"),
            Some(r) => assert_eq!(r, rules, "{key:?} differs from deploy/rbac.yaml"),
        }
    }
    for key in chart.keys() {
        assert!(
            reference.contains_key(key),
            "the chart renders {key:?}, which deploy/rbac.yaml does not have"
        );
    }
}

#[test]
fn values_without_storage_are_rejected() {
    let err = render(&["local:\n  enabled: false\n"]).expect_err("no storage must not render");
    assert!(
        err.contains("no snapshot storage enabled: set local.enabled=true and/or s3.enabled=true"),
        "unclear error: {err}"
    );
    // S3 alone is storage enough.
    render(&["local:\n  enabled: false\ns3:\n  enabled: true\n  bucket: snapshots\n"])
        .expect("S3-only renders");
}

#[test]
fn s3_without_bucket_is_rejected_when_the_chart_creates_the_secret() {
    let err = render(&["s3:\n  enabled: true\n"]).expect_err("S3 without a bucket must not render");
    assert!(
        err.contains("s3.enabled=true needs s3.bucket"),
        "unclear error: {err}"
    );
    // An existing Secret carries the bucket: no bucket needed, no Secret rendered, and the
    // schedule references it.
    let out = render(&["s3:\n  enabled: true\n  existingSecret: my-s3\n"]).expect("renders");
    let docs = documents(&out);
    assert!(!docs.iter().any(|d| str_at(d, &["kind"]) == Some("Secret")));
    let schedule = docs
        .iter()
        .find(|d| str_at(d, &["kind"]) == Some("ETCDSnapshotSchedule"))
        .expect("default schedule");
    assert_eq!(
        str_at(schedule, &["spec", "s3", "configSecretRef", "name"]),
        Some("my-s3")
    );
    // With a bucket, the chart's Secret has the operator's type and k3s's keys.
    let out = render(&["s3:\n  enabled: true\n  bucket: snapshots\n"]).expect("renders");
    let secret = documents(&out)
        .into_iter()
        .find(|d| str_at(d, &["kind"]) == Some("Secret"))
        .expect("S3 Secret");
    assert_eq!(
        str_at(&secret, &["type"]),
        Some(etcd_snapshot::consts::SECRET_TYPE)
    );
    assert_eq!(
        str_at(
            &secret,
            &["stringData", etcd_snapshot::consts::secret_keys::BUCKET]
        ),
        Some("snapshots")
    );
}

#[test]
fn schedule_encryption_references_the_key_secret_only_when_set() {
    let schedule = |values: &[&str]| {
        documents(&render(values).expect("renders"))
            .into_iter()
            .find(|d| str_at(d, &["kind"]) == Some("ETCDSnapshotSchedule"))
            .expect("default schedule")
    };
    let plain = schedule(&[]);
    assert!(plain["spec"].get("encryption").is_none());
    let sealed = schedule(&["schedule:\n  encryption:\n    keySecretName: snap-key\n"]);
    assert_eq!(
        str_at(&sealed, &["spec", "encryption", "keySecretRef", "name"]),
        Some("snap-key")
    );
    assert_eq!(
        str_at(&sealed, &["spec", "encryption", "keySecretRef", "key"]),
        Some("key")
    );
}

#[test]
fn presets_set_the_agents_etcd_certificates_and_snapshot_dir() {
    let cases = [
        (
            "kubeadm",
            "/etc/kubernetes/pki/etcd/healthcheck-client.key",
            "/var/lib/etcd-snapshots",
        ),
        (
            "k3s",
            "/var/lib/rancher/k3s/server/tls/etcd/client.key",
            "/var/lib/rancher/k3s/server/db/snapshots",
        ),
        (
            "rke2",
            "/var/lib/rancher/rke2/server/tls/etcd/client.key",
            "/var/lib/rancher/rke2/server/db/snapshots",
        ),
    ];
    for (preset, key, dir) in cases {
        let out = render(&[&format!("etcd:\n  preset: {preset}\n")]).expect("renders");
        let ds = documents(&out)
            .into_iter()
            .find(|d| str_at(d, &["kind"]) == Some("DaemonSet"))
            .expect("agent DaemonSet");
        let spec = &ds["spec"]["template"]["spec"];
        assert_eq!(spec["hostNetwork"], Value::Bool(true), "{preset}");
        let args = sorted_strings(spec["containers"][0].get("args"));
        assert!(
            args.contains(&format!("--etcd-key={key}")),
            "{preset}: {args:?}"
        );
        assert!(args.contains(&format!("--dir={dir}")), "{preset}: {args:?}");
        let host_paths: Vec<&str> = spec["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .filter_map(|v| str_at(v, &["hostPath", "path"]))
            .collect();
        assert!(host_paths.contains(&dir), "{preset}: {host_paths:?}");
        assert!(
            host_paths.iter().any(|p| Path::new(key).starts_with(p)),
            "{preset}: the key's directory is not mounted: {host_paths:?}"
        );
    }
    let err = render(&["etcd:\n  preset: minikube\n"]).expect_err("unknown preset");
    assert!(
        err.contains("etcd.preset must be one of kubeadm, k3s, rke2, custom"),
        "{err}"
    );
}

#[test]
fn chart_crds_are_the_generated_crds() {
    // Helm installs charts/*/crds/ on install (and never deletes them); they must be crds/'s.
    let generated =
        std::fs::read_to_string(root().join("crds/etcdsnapshot.io.yaml")).expect("crds/");
    let chart = std::fs::read_to_string(
        root().join("charts/etcd-snapshot-operator/crds/etcdsnapshot.io.yaml"),
    )
    .expect("chart crds/");
    assert!(
        generated == chart,
        "charts/etcd-snapshot-operator/crds/etcdsnapshot.io.yaml differs from crds/etcdsnapshot.io.yaml: \
         make crds"
    );
}

/// Value sets the lint runs with: the defaults, and each way of storing and configuring.
const LINT_VALUE_SETS: &[(&str, &str)] = &[
    ("defaults", ""),
    (
        "S3 with the chart's Secret, retention, encryption, ServiceMonitor, PrometheusRule",
        "s3:\n  enabled: true\n  bucket: snapshots\n  accessKey: AKIA\n  secretKey: s3cr3t\n  \
         retention: 10\n  retentionScope: Cluster\nschedule:\n  compression: zstd\n  \
         startingDeadlineSeconds: 300\n  encryption:\n    keySecretName: snap-key\n\
         metrics:\n  serviceMonitor:\n    enabled: true\n    labels:\n      release: prom\n\
         prometheusRule:\n  enabled: true\n  labels:\n    release: prom\n",
    ),
    (
        "k3s preset, S3 only from an existing Secret, no default schedule",
        "etcd:\n  preset: k3s\nlocal:\n  enabled: false\ns3:\n  enabled: true\n  \
         existingSecret: k3s-etcd-s3\nschedule:\n  enabled: false\n",
    ),
    (
        "custom paths, image pinned, pull secrets, labels, tolerations",
        "etcd:\n  preset: custom\n  custom:\n    certDir: /etc/etcd/pki\n    \
         caFile: /etc/etcd/pki/ca.pem\n    certFile: /etc/etcd/pki/client.pem\n    \
         keyFile: /etc/etcd/pki/client-key.pem\n    snapshotDir: /srv/etcd-snapshots\n    \
         nodeSelector:\n      etcd: \"true\"\nimage:\n  tag: \"0.1.0-rc1\"\n  \
         pullPolicy: Always\nimagePullSecrets: [regcred]\ncommonLabels:\n  team: platform\n\
         controller:\n  replicas: 1\n  tolerations:\n    - operator: Exists\n",
    ),
];

#[test]
fn helm_lint_strict_passes_for_the_defaults_and_other_value_sets() {
    for (what, values) in LINT_VALUE_SETS {
        let out = helm(&["lint", "--strict", CHART], &[values]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "helm lint --strict ({what}):\n{text}");
        assert!(
            text.contains("1 chart(s) linted, 0 chart(s) failed"),
            "helm lint ({what}) did not lint the chart:\n{text}"
        );
        // `helm lint` does not stop at the chart's `fail` (it logs "funcMap fail" and goes on),
        // so a lint that passes must also render: the value sets must be valid ones.
        render(&[values]).unwrap_or_else(|e| panic!("{what} does not render: {e}"));
    }
}

#[test]
fn custom_preset_without_a_path_is_rejected() {
    let err = render(&["etcd:\n  preset: custom\n  custom:\n    certDir: /etc/etcd/pki\n"])
        .expect_err("custom preset without paths must not render");
    assert!(
        err.contains("etcd.preset=custom needs etcd.custom.caFile"),
        "unclear error: {err}"
    );
}

/// Every container whose root file system is read-only gets an emptyDir where the code writes
/// scratch files: `std::env::temp_dir()` (TMPDIR, else /tmp), used by verify (download and
/// test-restore) and restore.
#[test]
fn read_only_containers_have_an_empty_dir_for_scratch_files() {
    let docs = documents(&render(&[]).expect("default values render"));
    let mut checked = Vec::new();
    for d in &docs {
        let kind = str_at(d, &["kind"]).unwrap_or_default();
        if kind != "Deployment" && kind != "DaemonSet" {
            continue;
        }
        let spec = &d["spec"]["template"]["spec"];
        let empty_dirs: Vec<&str> = spec["volumes"]
            .as_sequence()
            .map(|v| {
                v.iter()
                    .filter(|v| v.get("emptyDir").is_some())
                    .filter_map(|v| str_at(v, &["name"]))
                    .collect()
            })
            .unwrap_or_default();
        for c in spec["containers"].as_sequence().expect("containers") {
            let name = str_at(c, &["name"]).unwrap_or_default();
            if c["securityContext"]["readOnlyRootFilesystem"] != Value::Bool(true) {
                continue;
            }
            let tmpdir = c["env"]
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|e| str_at(e, &["name"]) == Some("TMPDIR"))
                .and_then(|e| str_at(e, &["value"]))
                .unwrap_or("/tmp");
            let mounted = c["volumeMounts"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|m| {
                    str_at(m, &["mountPath"]) == Some(tmpdir)
                        && str_at(m, &["name"]).is_some_and(|n| empty_dirs.contains(&n))
                        && m.get("readOnly") != Some(&Value::Bool(true))
                });
            assert!(
                mounted,
                "{kind} container {name} has a read-only root file system and no writable \
                 emptyDir at {tmpdir}"
            );
            checked.push(format!("{kind}/{name}"));
        }
    }
    checked.sort();
    assert_eq!(
        checked,
        ["DaemonSet/agent", "Deployment/controller"],
        "both components run with a read-only root file system"
    );
}

#[test]
fn the_uninstall_hook_runs_etcd_snapshot_uninstall_as_its_own_identity_and_stays_out_of_deploy() {
    let docs = documents(&render_with_hooks());
    let jobs: Vec<&Value> = docs
        .iter()
        .filter(|d| str_at(d, &["kind"]) == Some("Job"))
        .collect();
    assert_eq!(jobs.len(), 1, "one hook Job");
    let job = jobs[0];
    assert_eq!(
        str_at(job, &["metadata", "annotations", "helm.sh/hook"]),
        Some("pre-delete")
    );
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(
        str_at(pod, &["serviceAccountName"]),
        Some("etcd-snapshot-uninstall")
    );
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args[0], "uninstall");
    for want in [
        "--controller-deployment=etcd-snapshot-controller",
        "--agent-daemonset=etcd-snapshot-agent",
        "--pod-selector=app.kubernetes.io/name=etcd-snapshot-operator,app.kubernetes.io/instance=etcd-snapshot,app.kubernetes.io/component in (controller,agent)",
    ] {
        assert!(args.contains(&want), "{want} in {args:?}");
    }
    // Its identity is a regular object of the release (it must exist while the hook runs), and
    // deploy/ never holds the Job (`kubectl apply` would run it at once).
    let deploy = std::fs::read_to_string(root().join("deploy/etcd-snapshot-operator.yaml"))
        .expect("read deploy/etcd-snapshot-operator.yaml");
    let deployed = documents(&deploy);
    assert!(!deployed.iter().any(|d| str_at(d, &["kind"]) == Some("Job")));
    assert!(deployed.iter().any(|d| {
        str_at(d, &["kind"]) == Some("ServiceAccount")
            && str_at(d, &["metadata", "name"]) == Some("etcd-snapshot-uninstall")
    }));
}
