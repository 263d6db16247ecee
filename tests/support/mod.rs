//! Shared helpers of the integration tests: Kubernetes clients for the real test API server.
#![allow(dead_code)]

use eso_testenv::ApiServer;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::path::Path;
use std::time::Duration;

/// A client authenticated with the given kubeconfig.
pub async fn client_from(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig to config");
    Client::try_from(config).expect("client")
}

/// The administrator's client.
pub async fn admin_client(api: &ApiServer) -> Client {
    client_from(api.admin_kubeconfig()).await
}

/// Server-side apply the generated CRDs (as `crds/` holds them) and wait until both are
/// Established.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let yaml = etcd_snapshot::api::crds_yaml().expect("render CRDs");
    let mut names = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&yaml) {
        let crd: CustomResourceDefinition =
            serde::Deserialize::deserialize(doc).expect("CRD document");
        let name = crd.metadata.name.clone().expect("CRD name");
        crds.patch(
            &name,
            &PatchParams::apply("eso-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply CRD");
        names.push(name);
    }
    for name in names {
        let established = kube::runtime::wait::await_condition(
            crds.clone(),
            &name,
            kube::runtime::wait::conditions::is_crd_established(),
        );
        tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .expect("CRD established in time")
            .expect("watch CRD");
    }
}
