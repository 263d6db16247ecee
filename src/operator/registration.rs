//! An agent's registration: a Lease per node in the operator namespace.

use crate::consts;
use crate::naming::label_value;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;

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
