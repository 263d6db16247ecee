//! Helpers of the fault tests (`tests/faults_*.rs`).
#![allow(dead_code)]

/// Put `mib` MiB of incompressible values (1 MiB each, keys `/fill/NNNN`) into etcd, so that a
/// snapshot takes a while and is as large as that.
pub async fn fill_etcd(endpoint: &str, mib: usize) {
    let mut client = etcd_client::Client::connect([endpoint], None)
        .await
        .expect("connect etcd");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..mib {
        let mut value = Vec::with_capacity(1 << 20);
        while value.len() < (1 << 20) {
            // xorshift64: cheap bytes that do not compress.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            value.extend_from_slice(&x.to_le_bytes());
        }
        client
            .put(format!("/fill/{i:04}"), value, None)
            .await
            .expect("put");
    }
}
