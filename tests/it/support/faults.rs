//! Helpers of the fault tests (`tests/faults_*.rs`).
#![allow(dead_code)]

/// Put `mib` MiB of incompressible values (1 MiB each, keys `/fill/NNNN`) into etcd, so that a
/// snapshot takes a while and is as large as that.
pub async fn fill_etcd(endpoint: &str, mib: usize) {
    let mut client = etcd_client::Client::connect([endpoint], None)
        .await
        .expect("connect etcd");
    crate::support::put_incompressible(&mut client, "/fill/", mib).await;
}
