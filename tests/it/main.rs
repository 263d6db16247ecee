//! The integration tests, in one binary (one link instead of one per suite: minutes on 2 cores).
//! One module per suite; `cargo test --test it SUITE::` runs one suite, e.g. `operator::`.
//! The shared harnesses are `support` and the modules below it, declared here once.

#[path = "support/e2e.rs"]
mod e2e_support;
#[path = "support/etcdctl.rs"]
mod etcdctl;
#[path = "support/faults.rs"]
mod faults_support;
#[path = "support/mid_snapshot.rs"]
mod mid_snapshot;
#[path = "support/operator.rs"]
mod operator_support;
#[path = "support/proxy.rs"]
mod proxy;
mod support;

mod bad_input_cli;
mod bad_input_fuzz;
mod bad_input_operator;
mod chart;
mod cli_snapshot;
mod e2e;
mod e2e_restore;
mod encryption;
mod explain;
mod faults_agent;
mod faults_apiserver;
mod faults_clock;
mod faults_disk;
mod faults_etcd;
mod faults_s3;
mod faults_verify;
mod generated;
mod http_metrics;
mod image;
mod leader;
mod lifecycle;
mod operations;
mod operator;
mod outage;
mod rbac_rules;
mod restore;
mod restore_safety;
mod s3_store;
mod smoke_apiserver;
mod smoke_etcd;
mod smoke_s3;
