//! etcd-client talks to the real etcd 3.4 and 3.5 of the test environment, plain and TLS, and
//! to a 3-member cluster.

use eso_testenv::{EtcdCluster, EtcdOptions, EtcdVersion};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

async fn connect(cluster: &EtcdCluster) -> Client {
    let mut options = ConnectOptions::new();
    if let Some(tls) = cluster.tls() {
        let ca = std::fs::read(&tls.ca).expect("read CA");
        let cert = std::fs::read(&tls.client_cert).expect("read client cert");
        let key = std::fs::read(&tls.client_key).expect("read client key");
        options = options.with_tls(
            TlsOptions::new()
                .ca_certificate(Certificate::from_pem(ca))
                .identity(Identity::from_pem(cert, key)),
        );
    }
    Client::connect(cluster.endpoints(), Some(options))
        .await
        .expect("connect to etcd")
}

async fn put_get_round_trip(version: EtcdVersion, tls: bool) {
    let cluster = EtcdCluster::start(EtcdOptions {
        version,
        members: 1,
        tls,
    })
    .expect("start etcd");
    let mut client = connect(&cluster).await;
    client.put("/smoke/key", "value", None).await.expect("put");
    let resp = client.get("/smoke/key", None).await.expect("get");
    let kv = resp.kvs().first().expect("one key");
    assert_eq!(kv.value_str().expect("utf8"), "value");
    let status = client.status().await.expect("status");
    assert_eq!(status.version(), version.release());
}

#[tokio::test]
async fn etcd_3_4_plain_reads_and_writes_keys() {
    put_get_round_trip(EtcdVersion::V3_4, false).await;
}

#[tokio::test]
async fn etcd_3_4_tls_with_client_cert_reads_and_writes_keys() {
    put_get_round_trip(EtcdVersion::V3_4, true).await;
}

#[tokio::test]
async fn etcd_3_5_plain_reads_and_writes_keys() {
    put_get_round_trip(EtcdVersion::V3_5, false).await;
}

#[tokio::test]
async fn etcd_3_5_tls_with_client_cert_reads_and_writes_keys() {
    put_get_round_trip(EtcdVersion::V3_5, true).await;
}

#[tokio::test]
async fn etcd_3_5_30_plain_reads_and_writes_keys() {
    put_get_round_trip(EtcdVersion::V3_5_30, false).await;
}

#[tokio::test]
async fn etcd_tls_without_client_cert_is_refused() {
    let cluster = EtcdCluster::start(EtcdOptions {
        version: EtcdVersion::V3_5,
        members: 1,
        tls: true,
    })
    .expect("start etcd");
    let tls = cluster.tls().expect("tls files");
    let ca = std::fs::read(&tls.ca).expect("read CA");
    let options = ConnectOptions::new()
        .with_tls(TlsOptions::new().ca_certificate(Certificate::from_pem(ca)))
        .with_timeout(std::time::Duration::from_secs(3))
        .with_connect_timeout(std::time::Duration::from_secs(3));
    let result = async {
        let mut client = Client::connect(cluster.endpoints(), Some(options)).await?;
        client.get("/x", None).await
    }
    .await;
    assert!(result.is_err(), "a client without certificate got through");
}

#[tokio::test]
async fn three_member_cluster_replicates_writes() {
    let cluster = EtcdCluster::start(EtcdOptions {
        version: EtcdVersion::V3_5,
        members: 3,
        tls: false,
    })
    .expect("start 3 members");
    let mut client = connect(&cluster).await;
    let members = client.member_list().await.expect("member list");
    assert_eq!(members.members().len(), 3);
    client
        .put("/smoke/replicated", "yes", None)
        .await
        .expect("put");
    for endpoint in cluster.endpoints() {
        let mut one = Client::connect([endpoint.clone()], None)
            .await
            .expect("connect to one member");
        let resp = one.get("/smoke/replicated", None).await.expect("get");
        assert_eq!(resp.kvs().len(), 1, "{endpoint} lacks the key");
    }
}
