//! k3s and rke2 coexistence: their servers install their own `etcdsnapshotfiles.k3s.cattle.io`
//! CRD and take their own scheduled snapshots. With both installed, `kubectl get
//! etcdsnapshotfile` (and `esf`) names two kinds; the controller says so once at start, with the
//! commands that tell the records apart and the flag that turns the built-in schedule off.

use crate::consts;
use crate::events::Events;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::Api;

/// What the warning says (one line).
pub fn message() -> String {
    format!(
        "k3s/rke2's own CRD {crd} is installed beside this operator's: `kubectl get etcdsnapshotfile` \
         and `kubectl get esf` may show either kind; list this operator's records with `kubectl get \
         etcdsnapshotfiles.{group}` and k3s's with `kubectl get {crd}`. This operator's S3 and \
         directory sync also records k3s's snapshot files and .zip objects. To stop the built-in \
         schedule, start the k3s/rke2 servers with --etcd-disable-snapshots (see the README, \"On \
         k3s and rke2\").",
        crd = consts::K3S_SNAPSHOT_FILE_CRD,
        group = consts::GROUP,
    )
}

/// Warn once (log line and Warning event on the CRD) when k3s's CRD is installed. A refused or
/// failed read is logged at debug level only: the check is a courtesy.
pub async fn warn_if_present(client: Client, events: Events) {
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    match crds.get_opt(consts::K3S_SNAPSHOT_FILE_CRD).await {
        Ok(Some(crd)) => {
            let message = message();
            tracing::warn!(crd = consts::K3S_SNAPSHOT_FILE_CRD, %message, "k3s snapshot records found");
            events
                .publish(
                    &crd,
                    true,
                    consts::REASON_K3S_DETECTED,
                    consts::actions::DETECT,
                    message,
                )
                .await;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::debug!(error = %e, "cannot check for k3s's ETCDSnapshotFile CRD");
        }
    }
}
