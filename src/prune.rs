//! Which stored copies a prune deletes: the retention policy applied per scope, to copies of one
//! name prefix and one etcd cluster. Pure; shared by the CLI's `prune` and the operator.

use crate::api::Storage;
use crate::retention::{Candidate, Decision, Policy, decide};
use crate::storage::catalog::StoredCopy;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// What S3 retention counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Each node's copies separately (the default).
    Node,
    /// All of this cluster's copies together (the reference's behaviour).
    Cluster,
}

/// The decisions of one prune.
#[derive(Debug, Default)]
pub struct PrunePlan {
    /// One decision per candidate copy, newest first within each group.
    pub decisions: Vec<(StoredCopy, Decision<String>)>,
    /// S3 copies left alone because they belong to another cluster, or say nothing of theirs.
    pub other_cluster: Vec<StoredCopy>,
}

impl PrunePlan {
    /// The copies to delete.
    pub fn deletions(&self) -> impl Iterator<Item = &(StoredCopy, Decision<String>)> {
        self.decisions.iter().filter(|(_, d)| !d.keep)
    }
}

/// Decide for every copy whose name starts with `<prefix>-`. Local copies are grouped per node
/// (each node has its own directory); S3 copies are grouped per node or for the whole cluster, and only copies
/// recorded with `cluster_id` are candidates: a folder shared with another cluster is safe.
pub fn plan(
    copies: &[StoredCopy],
    prefix: &str,
    local_policy: &Policy,
    s3_policy: &Policy,
    scope: Scope,
    cluster_id: Option<&str>,
    now: DateTime<Utc>,
) -> PrunePlan {
    let starts = format!("{prefix}-");
    let mut groups: BTreeMap<(Storage, String), Vec<&StoredCopy>> = BTreeMap::new();
    let mut plan = PrunePlan::default();
    for copy in copies.iter().filter(|c| c.name.starts_with(&starts)) {
        let group = match copy.storage {
            Storage::Local => copy.node_name.clone(),
            Storage::S3 => {
                if cluster_id.is_none() || copy.cluster_id.as_deref() != cluster_id {
                    plan.other_cluster.push(copy.clone());
                    continue;
                }
                match scope {
                    Scope::Node => copy.node_name.clone(),
                    Scope::Cluster => String::new(),
                }
            }
        };
        groups.entry((copy.storage, group)).or_default().push(copy);
    }
    for ((storage, _), members) in groups {
        let policy = match storage {
            Storage::Local => local_policy,
            Storage::S3 => s3_policy,
        };
        let candidates: Vec<Candidate<String>> = members
            .iter()
            .map(|c| Candidate {
                key: c.name.clone(),
                time: DateTime::from_timestamp(c.created_unix, 0).unwrap_or_default(),
                ready: true,
            })
            .collect();
        for decision in decide(&candidates, policy, now) {
            if let Some(copy) = members.iter().find(|c| c.name == decision.key) {
                plan.decisions.push(((*copy).clone(), decision));
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Compression;
    use proptest::prelude::*;

    fn copy(storage: Storage, name: &str, node: &str, t: i64, cluster: Option<&str>) -> StoredCopy {
        StoredCopy {
            storage,
            name: name.into(),
            location: format!("{}://{name}", storage.as_str()),
            node_name: node.into(),
            size: 1,
            created_unix: t,
            compression: Compression::None,
            sha256: None,
            cluster_id: cluster.map(String::from),
            revision: None,
            s3: None,
            encryption: None,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(10_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn s3_counts_per_node_by_default_and_per_cluster_on_request() {
        let mut copies = Vec::new();
        for node in ["a", "b", "c"] {
            for t in 1..=4 {
                copies.push(copy(
                    Storage::S3,
                    &format!("etcd-snapshot-{node}-{t}"),
                    node,
                    t,
                    Some("c1"),
                ));
            }
        }
        let p = Policy::count_only(2);
        let node = plan(
            &copies,
            "etcd-snapshot",
            &p,
            &p,
            Scope::Node,
            Some("c1"),
            now(),
        );
        assert_eq!(node.deletions().count(), 6, "2 kept per node out of 4");
        let cluster = plan(
            &copies,
            "etcd-snapshot",
            &p,
            &p,
            Scope::Cluster,
            Some("c1"),
            now(),
        );
        assert_eq!(cluster.deletions().count(), 10, "2 kept in all");
    }

    #[test]
    fn other_clusters_and_other_prefixes_are_untouched() {
        let copies = vec![
            copy(Storage::S3, "etcd-snapshot-a-1", "a", 1, Some("other")),
            copy(Storage::S3, "etcd-snapshot-a-2", "a", 2, None),
            copy(Storage::S3, "etcd-snapshot-a-3", "a", 3, Some("c1")),
            copy(Storage::S3, "etcd-snapshot-a-4", "a", 4, Some("c1")),
            copy(Storage::Local, "on-demand-a-1", "a", 1, None),
        ];
        let p = Policy::count_only(1);
        let plan = plan(
            &copies,
            "etcd-snapshot",
            &p,
            &p,
            Scope::Node,
            Some("c1"),
            now(),
        );
        let deleted: Vec<_> = plan.deletions().map(|(c, _)| c.name.as_str()).collect();
        assert_eq!(deleted, ["etcd-snapshot-a-3"]);
        assert_eq!(plan.other_cluster.len(), 2);
    }

    #[test]
    fn without_a_cluster_id_s3_is_never_pruned() {
        let copies = vec![
            copy(Storage::S3, "x-a-1", "a", 1, Some("c1")),
            copy(Storage::S3, "x-a-2", "a", 2, Some("c1")),
        ];
        let p = Policy::count_only(1);
        let plan = plan(&copies, "x", &p, &p, Scope::Node, None, now());
        assert_eq!(plan.deletions().count(), 0);
    }

    proptest! {
        #[test]
        fn count_n_keeps_exactly_the_n_newest_per_node(n in 1u32..6, times in proptest::collection::btree_set(1i64..1000, 0..20), nodes in proptest::collection::vec(0usize..3, 20)) {
            let copies: Vec<_> = times.iter().zip(nodes.iter()).map(|(t, n)| {
                let node = format!("n{n}");
                copy(Storage::S3, &format!("p-{node}-{t}"), &node, *t, Some("c"))
            }).collect();
            let p = Policy::count_only(n);
            let plan = plan(&copies, "p", &p, &p, Scope::Node, Some("c"), now());
            for node in ["n0", "n1", "n2"] {
                let mut mine: Vec<_> = copies.iter().filter(|c| c.node_name == node).collect();
                mine.sort_by_key(|c| std::cmp::Reverse(c.created_unix));
                let kept: Vec<_> = plan.decisions.iter().filter(|(c, d)| c.node_name == node && d.keep).map(|(c, _)| c.name.clone()).collect();
                let want: Vec<_> = mine.iter().take(n as usize).map(|c| c.name.clone()).collect();
                prop_assert_eq!(kept, want);
                if let Some(newest) = mine.first() {
                    prop_assert!(plan.decisions.iter().any(|(c, d)| c.name == newest.name && d.keep));
                }
            }
        }
    }
}
