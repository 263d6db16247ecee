//! `kubectl explain` documents every field of both CRDs on the oldest Kubernetes the chart
//! supports (1.20, whose API server publishes CRD schemas only as OpenAPI v2 and used to drop
//! every nullable subtree), with every kubectl on the machine: the 1.20 one built with the API
//! server, the machine's, and 1.35 from the cache when present.

use crate::support;

use eso_testenv::{ApiServer, ApiServerOptions};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray,
};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Every field path below `schema` (`spec.s3.bucket`, `status.conditions.type`, ...): object
/// properties and the properties of array items; maps (`additionalProperties`) are leaves, as
/// kubectl shows them.
fn schema_paths(prefix: &str, schema: &JSONSchemaProps, out: &mut BTreeSet<String>) {
    let item_schema = match &schema.items {
        Some(JSONSchemaPropsOrArray::Schema(items)) => Some(items.as_ref()),
        _ => None,
    };
    let props = schema
        .properties
        .as_ref()
        .or_else(|| item_schema.and_then(|i| i.properties.as_ref()));
    for (name, child) in props.into_iter().flatten() {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        out.insert(path.clone());
        // `metadata` is ObjectMeta: kubectl explains it from the built-in types.
        if path != "metadata" {
            schema_paths(&path, child, out);
        }
    }
}

/// Field paths of `kubectl explain KIND --recursive` output (three spaces per level).
fn explained_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack: Vec<String> = Vec::new();
    let fields = text.split_once("FIELDS:").map(|(_, f)| f).unwrap_or("");
    for line in fields.lines() {
        let Some((name_part, _type)) = line.split_once('\t') else {
            continue;
        };
        let indent = name_part.len() - name_part.trim_start().len();
        let depth = (indent / 3).saturating_sub(1);
        stack.truncate(depth);
        stack.push(name_part.trim().to_string());
        out.insert(stack.join("."));
    }
    out
}

/// Every kubectl to try, each once.
fn kubectls() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for candidate in [
        eso_testenv::bin("kubectl-1.20").ok(),
        eso_testenv::kubectl().ok(),
        eso_testenv::bin("kubectl").ok(),
    ]
    .into_iter()
    .flatten()
    {
        let canonical = std::fs::canonicalize(&candidate).unwrap_or(candidate);
        if !found.contains(&canonical) {
            found.push(canonical);
        }
    }
    found
}

fn explain(kubectl: &PathBuf, api: &ApiServer, what: &[&str]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(kubectl);
    cmd.arg(format!("--kubeconfig={}", api.admin_kubeconfig().display()))
        .arg(format!(
            "--cache-dir={}",
            api.scratch().join("kubectl-cache").display()
        ))
        .arg("explain")
        .args(what);
    support::run(&mut cmd)
}

#[tokio::test]
async fn kubectl_explain_documents_every_field_on_kubernetes_1_20() {
    let api = ApiServer::start(ApiServerOptions::default()).expect("start kube-apiserver");
    let client = support::admin_client(&api).await;
    support::install_crds(&client).await;
    let kubectls = kubectls();
    assert!(!kubectls.is_empty(), "no kubectl found");

    for crd in etcd_snapshot::api::crds() {
        let kind = crd.spec.names.singular.clone().expect("singular name");
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("schema");
        let mut expected = BTreeSet::new();
        schema_paths("", schema, &mut expected);
        assert!(expected.len() > 20, "{kind}: too few fields: {expected:?}");
        for kubectl in &kubectls {
            // The API server publishes a CRD's OpenAPI a moment after it is Established.
            let start = Instant::now();
            let text = loop {
                let (ok, out, err) = explain(kubectl, &api, &[&kind, "--recursive"]);
                if ok && out.contains("FIELDS:") {
                    break out;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "{}: explain {kind} never worked: {err}",
                    kubectl.display()
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            };
            let shown = explained_paths(&text);
            let missing: Vec<&String> = expected.difference(&shown).collect();
            assert!(
                missing.is_empty(),
                "{} explain {kind}: fields missing: {missing:?}\n{text}",
                kubectl.display()
            );
        }
    }

    // The two objects the issue names, field by field with their descriptions.
    for kubectl in &kubectls {
        for (what, field, description) in [
            (
                "etcdsnapshotfile.status",
                "readyToUse",
                "True when the copy is stored, checked and usable for restore.",
            ),
            (
                "etcdsnapshotschedule.spec.s3",
                "configSecretRef",
                "Secret with the k3s `etcd-s3-*` keys",
            ),
        ] {
            let (ok, out, err) = explain(kubectl, &api, &[what]);
            assert!(ok, "{} explain {what}: {err}", kubectl.display());
            let fields = out.split_once("FIELDS:").map(|(_, f)| f).unwrap_or("");
            assert!(
                fields.contains(field) && fields.contains(description),
                "{} explain {what}: {field} with its description expected in\n{out}",
                kubectl.display()
            );
        }
    }
}
