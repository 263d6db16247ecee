//! `etcd-snapshot uninstall`: make the operator's removal safe. The Helm chart runs it as a
//! pre-delete hook; after `helm uninstall --no-hooks` or with the plain manifests, run it by hand.
//!
//! 1. Stop the operator: scale the controller Deployment to zero and delete the agent DaemonSet
//!    (each only when named), then wait until their pods (`--pod-selector`) are gone, so nothing
//!    deletes a file or adds a finalizer afterwards.
//! 2. Remove the finalizer `etcdsnapshot.io/snapshot-file` from every ETCDSnapshotFile, deleting
//!    nothing: without the operator nobody could ever release it, and a record that cannot be
//!    deleted is worse than a record whose deletion leaves the file in place. A record that was
//!    already being deleted goes; its file or object stays, and a reinstall records it again.
//!
//! The records stay (Helm never deletes CRDs or their objects), marked with
//! `etcdsnapshot.io/released-for-uninstall`. A reinstall adopts them: the controller puts the
//! finalizer back on every marked record, and the agents and the S3 sync record files and objects
//! that have no record.

use super::CliError;
use super::args::UninstallArgs;
use crate::api::ETCDSnapshotFile;
use crate::consts;
use crate::duration::parse_go;
use crate::finalizer::release_for_uninstall;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use std::time::{Duration, Instant};

/// Rounds of listing and releasing while records change under us (409 conflicts).
const RELEASE_ROUNDS: usize = 5;

fn api_error(what: String) -> impl FnOnce(kube::Error) -> CliError {
    move |e| {
        let detail = match &e {
            kube::Error::Api(s) => format!("{} {}: {}", s.code, s.reason, s.message),
            other => other.to_string(),
        };
        CliError::Failed(format!("{what}: {detail}"))
    }
}

/// Stop the operator, then release every record's finalizer.
pub async fn run(args: UninstallArgs) -> Result<(), CliError> {
    let timeout = parse_go(&args.timeout)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            CliError::Usage(format!(
                "--timeout {:?} is not a duration like 2m",
                args.timeout
            ))
        })?;
    let client = Client::try_default()
        .await
        .map_err(|e| CliError::Usage(format!("cannot reach the Kubernetes API: {e}")))?;
    let ns = &args.namespace;

    if let Some(name) = &args.controller_deployment {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let scale = serde_json::json!({"spec": {"replicas": 0}});
        match deployments
            .patch(name, &PatchParams::default(), &Patch::Merge(&scale))
            .await
        {
            Ok(_) => println!("Scaled the controller Deployment {ns}/{name} to 0."),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                println!("The controller Deployment {ns}/{name} is already gone.");
            }
            Err(e) => {
                return Err(api_error(format!("scaling Deployment {ns}/{name} to 0"))(e));
            }
        }
    }
    if let Some(name) = &args.agent_daemonset {
        let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
        match daemonsets.delete(name, &DeleteParams::background()).await {
            Ok(_) => println!("Deleted the agent DaemonSet {ns}/{name}."),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                println!("The agent DaemonSet {ns}/{name} is already gone.");
            }
            Err(e) => return Err(api_error(format!("deleting DaemonSet {ns}/{name}"))(e)),
        }
    }
    if let Some(selector) = &args.pod_selector {
        wait_pods_gone(&client, ns, selector, timeout).await?;
    }

    let (released, deleting) = release_all(&client).await?;
    println!(
        "Released {released} snapshot records (finalizer {} removed); no snapshot file or object was deleted.",
        consts::FINALIZER
    );
    if deleting > 0 {
        println!(
            "{deleting} of them had been deleted (the deletion waited for the finalizer): those records are gone now, their files and objects kept (a reinstall records them again)."
        );
    }
    Ok(())
}

/// Wait until no pod matches `selector` (the operator's processes have exited).
async fn wait_pods_gone(
    client: &Client,
    ns: &str,
    selector: &str,
    timeout: Duration,
) -> Result<(), CliError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(selector);
    let start = Instant::now();
    loop {
        let left: Vec<String> = pods
            .list(&lp)
            .await
            .map_err(api_error(format!("listing pods {selector} in {ns}")))?
            .items
            .iter()
            .map(|p| p.name_any())
            .collect();
        if left.is_empty() {
            println!("The operator's pods are gone.");
            return Ok(());
        }
        if start.elapsed() >= timeout {
            // Releasing anyway: a pod that is still stopping does no new work, and a record left
            // with a finalizer would never be deletable.
            eprintln!(
                "warning: pods still present after {timeout:?}: {}; releasing the records anyway",
                left.join(", ")
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The records that still carry the operator's finalizer.
pub fn holding_finalizer(files: &[ETCDSnapshotFile]) -> Vec<&ETCDSnapshotFile> {
    files
        .iter()
        .filter(|f| f.finalizers().iter().any(|x| x == consts::FINALIZER))
        .collect()
}

/// Remove the finalizer from every record; returns (released, of which being deleted).
async fn release_all(client: &Client) -> Result<(usize, usize), CliError> {
    let api: Api<ETCDSnapshotFile> = Api::all(client.clone());
    let now = jiff::Timestamp::now().to_string();
    let (mut released, mut deleting) = (0, 0);
    for _ in 0..RELEASE_ROUNDS {
        let files = api
            .list(&ListParams::default())
            .await
            .map_err(api_error("listing ETCDSnapshotFiles".into()))?
            .items;
        let holding = holding_finalizer(&files);
        if holding.is_empty() {
            return Ok((released, deleting));
        }
        let mut conflicts = 0;
        for f in holding {
            match release_for_uninstall(&api, f, &now).await {
                Ok(()) => {
                    released += 1;
                    if f.metadata.deletion_timestamp.is_some() {
                        deleting += 1;
                    }
                }
                Err(kube::Error::Api(s)) if s.code == 409 => conflicts += 1,
                Err(e) => {
                    return Err(api_error(format!(
                        "removing the finalizer of ETCDSnapshotFile {}",
                        f.name_any()
                    ))(e));
                }
            }
        }
        if conflicts == 0 {
            return Ok((released, deleting));
        }
    }
    Err(CliError::Failed(format!(
        "ETCDSnapshotFiles kept changing after {RELEASE_ROUNDS} rounds ({released} released); is the operator still running?"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, finalizers: &[&str]) -> ETCDSnapshotFile {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "etcdsnapshot.io/v1",
            "kind": "ETCDSnapshotFile",
            "metadata": {"name": name, "finalizers": finalizers},
            "spec": {
                "snapshotName": "etcd-snapshot-n1-1700000000",
                "nodeName": "n1",
                "location": "file:///var/lib/etcd-snapshots/etcd-snapshot-n1-1700000000",
            },
        }))
        .expect("record fixture")
    }

    #[test]
    fn only_records_with_the_operators_finalizer_are_released() {
        let files = [
            record("a", &["other/x", consts::FINALIZER]),
            record("b", &["other/x"]),
            record("c", &[]),
        ];
        let names: Vec<String> = holding_finalizer(&files)
            .iter()
            .map(|f| f.name_any())
            .collect();
        assert_eq!(names, ["a"]);
    }
}
