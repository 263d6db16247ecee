//! etcd-snapshot-operator: takes, stores, lists, prunes, verifies and restores etcd snapshots,
//! as a standalone CLI and as a Kubernetes operator (controller + per-node agents).
#![warn(missing_docs)]

pub mod agent;
pub mod api;
pub mod backoff;
pub mod cache;
pub mod cli;
pub mod consts;
pub mod controller;
pub mod duration;
pub mod events;
pub mod finalizer;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod naming;
pub mod net_error;
pub mod operator;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod shutdown;
pub mod snapshot;
pub mod storage;
