//! `eso-testenv ENV_FILE`: start the real test environment — kube-apiserver (with the operator's
//! ServiceAccount users), a single-member etcd 3.5 to snapshot, and SeaweedFS S3 — write shell
//! variables describing it to ENV_FILE, and keep it running until standard input closes or the
//! process is terminated. Used by the demo and for debugging.

use eso_testenv::{
    ApiServer, ApiServerOptions, ApiUser, EtcdCluster, EtcdOptions, S3Options, S3Server,
};
use std::io::Read;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let env_file = std::env::args()
        .nth(1)
        .ok_or("usage: eso-testenv ENV_FILE")?;
    let ns = "etcd-snapshot";
    let controller = ApiUser::service_account(ns, "etcd-snapshot-controller");
    let agent = ApiUser::service_account(ns, "etcd-snapshot-agent");
    let api = ApiServer::start(ApiServerOptions {
        users: vec![controller.clone(), agent.clone()],
    })?;
    let etcd = EtcdCluster::start(EtcdOptions::default())?;
    let s3 = S3Server::start(S3Options::default())?;
    let path = |p: Option<&std::path::Path>| p.map(|p| p.display().to_string()).unwrap_or_default();
    let text = format!(
        "ADMIN_KUBECONFIG={}\nCONTROLLER_KUBECONFIG={}\nAGENT_KUBECONFIG={}\nETCD_ENDPOINT={}\nS3_ENDPOINT={}\nS3_ACCESS_KEY={}\nS3_SECRET_KEY={}\n",
        api.admin_kubeconfig().display(),
        path(api.kubeconfig(&controller.name)),
        path(api.kubeconfig(&agent.name)),
        etcd.endpoint(0),
        s3.host_port(),
        s3.access_key,
        s3.secret_key,
    );
    std::fs::write(&env_file, text)?;
    eprintln!(
        "eso-testenv: running; environment in {env_file}; close stdin or stop this process to end"
    );
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop((api, etcd, s3));
    Ok(())
}
