//! The data generator: fills etcd with Kubernetes-like objects until its reported `dbSize`
//! reaches the target.
//!
//! Every worker has its own seeded PRNG, so the sequence of objects it writes is the same on every
//! run; only the point where the target is reached (checked between batches) varies slightly.
//! The mix, by count: pods 30 %, events 25 %, configmaps 12 % (one in eight of them 100 KiB–1 MiB),
//! secrets 10 %, deployments/replicasets/services/endpointslices 15 %, leases 8 %. One write in
//! four overwrites an object the worker wrote before (new revisions), one in forty deletes an
//! event. When the target is reached, the first half of the history is compacted.

use eso_bench::{Error, Result, Rng};
use etcd_client::{Client, CompactionOptions, Txn, TxnOp};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Concurrent writers.
const WORKERS: u64 = 4;
/// A transaction is sent once its values pass this size …
const BATCH_BYTES: usize = 512 * 1024;
/// … or it holds this many operations.
const BATCH_OPS: usize = 64;
/// Values above this size go alone in their own transaction (etcd's request limit is 1.5 MiB).
const ALONE: usize = 256 * 1024;

/// What the generator wrote.
#[derive(Debug, Clone)]
pub struct Filled {
    /// etcd's `dbSize` at the end.
    pub db_size: u64,
    /// etcd's `dbSizeInUse` at the end (after compaction).
    pub db_size_in_use: u64,
    /// Puts (creates and overwrites).
    pub puts: u64,
    /// Deletes.
    pub deletes: u64,
    /// Bytes of values written.
    pub value_bytes: u64,
    /// Revision at the end.
    pub revision: i64,
    /// Revision compacted to.
    pub compacted: i64,
    /// Wall time.
    pub took: Duration,
}

fn etcd_err(what: &str) -> impl FnOnce(etcd_client::Error) -> Error + '_ {
    move |e| Error::Other(format!("etcd {what}: {e}"))
}

/// Fill etcd at `endpoint` until `dbSize >= target`, from `seed`.
pub async fn fill(endpoint: &str, target: u64, seed: u64) -> Result<Filled> {
    let started = Instant::now();
    let client = Client::connect([endpoint], None)
        .await
        .map_err(etcd_err("connect"))?;
    let done = Arc::new(AtomicBool::new(false));
    let puts = Arc::new(AtomicU64::new(0));
    let deletes = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let mut client = client.clone();
        let (done, puts, deletes, bytes) =
            (done.clone(), puts.clone(), deletes.clone(), bytes.clone());
        workers.push(tokio::spawn(async move {
            let mut generator = Generator::new(seed.wrapping_add(w * 0x1000_0001), w);
            while !done.load(Ordering::Relaxed) {
                let batch = generator.batch();
                puts.fetch_add(batch.puts, Ordering::Relaxed);
                deletes.fetch_add(batch.deletes, Ordering::Relaxed);
                bytes.fetch_add(batch.bytes, Ordering::Relaxed);
                client
                    .txn(Txn::new().and_then(batch.ops))
                    .await
                    .map_err(etcd_err("txn"))?;
            }
            Ok::<(), Error>(())
        }));
    }
    let mut monitor = client.clone();
    let mut last_print = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if workers.iter().any(|w| w.is_finished()) {
            break;
        }
        let status = monitor.status().await.map_err(etcd_err("status"))?;
        let size = u64::try_from(status.db_size()).unwrap_or(0);
        if last_print.elapsed() >= Duration::from_secs(10) {
            last_print = Instant::now();
            eprintln!(
                "bench: filling etcd: dbSize {} of {} ({} puts)",
                eso_bench::human_size(size),
                eso_bench::human_size(target),
                puts.load(Ordering::Relaxed)
            );
        }
        if size >= target {
            break;
        }
    }
    done.store(true, Ordering::Relaxed);
    for w in workers {
        w.await
            .map_err(|e| Error::Other(format!("fill worker: {e}")))??;
    }
    let mut client = client;
    let status = client.status().await.map_err(etcd_err("status"))?;
    let revision = status.header().map_or(0, |h| h.revision());
    let compacted = revision / 2;
    client
        .compact(compacted, Some(CompactionOptions::new().with_physical()))
        .await
        .map_err(etcd_err("compact"))?;
    let status = client.status().await.map_err(etcd_err("status"))?;
    Ok(Filled {
        db_size: u64::try_from(status.db_size()).unwrap_or(0),
        db_size_in_use: u64::try_from(status.raft_used_db_size()).unwrap_or(0),
        puts: puts.load(Ordering::Relaxed),
        deletes: deletes.load(Ordering::Relaxed),
        value_bytes: bytes.load(Ordering::Relaxed),
        revision,
        compacted,
        took: started.elapsed(),
    })
}

/// One transaction's operations.
struct Batch {
    ops: Vec<TxnOp>,
    puts: u64,
    deletes: u64,
    bytes: u64,
}

/// Kinds of object, with their key resource and weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pod,
    Event,
    ConfigMap,
    Secret,
    Deployment,
    ReplicaSet,
    Service,
    EndpointSlice,
    Lease,
}

impl Kind {
    fn resource(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Event => "events",
            Kind::ConfigMap => "configmaps",
            Kind::Secret => "secrets",
            Kind::Deployment => "deployments",
            Kind::ReplicaSet => "replicasets",
            Kind::Service => "services/specs",
            Kind::EndpointSlice => "endpointslices",
            Kind::Lease => "leases",
        }
    }

    fn pick(rng: &mut Rng) -> Kind {
        match rng.range(0, 99) {
            0..=29 => Kind::Pod,
            30..=54 => Kind::Event,
            55..=66 => Kind::ConfigMap,
            67..=76 => Kind::Secret,
            77..=81 => Kind::Deployment,
            82..=85 => Kind::ReplicaSet,
            86..=88 => Kind::Service,
            89..=91 => Kind::EndpointSlice,
            _ => Kind::Lease,
        }
    }
}

const NAMESPACES: &[&str] = &[
    "default",
    "kube-system",
    "monitoring",
    "ingress-nginx",
    "cert-manager",
    "payments",
    "checkout",
    "search",
    "analytics",
    "auth",
    "logging",
    "ci",
];
const APPS: &[&str] = &[
    "api",
    "web",
    "worker",
    "redis",
    "postgres",
    "kafka",
    "nginx",
    "grafana",
    "prometheus",
    "fluent-bit",
    "coredns",
    "cart",
    "billing",
    "indexer",
    "gateway",
    "scheduler",
];
const WORDS: &[&str] = &[
    "server",
    "listen",
    "timeout",
    "enabled",
    "replicas",
    "cache",
    "upstream",
    "retry",
    "backoff",
    "max",
    "min",
    "connections",
    "pool",
    "size",
    "log",
    "level",
    "info",
    "debug",
    "path",
    "host",
    "port",
    "region",
    "zone",
    "threshold",
    "interval",
    "rules",
    "match",
    "labels",
    "target",
];
const REASONS: &[&str] = &[
    "Scheduled",
    "Pulling",
    "Pulled",
    "Created",
    "Started",
    "Killing",
    "BackOff",
    "Unhealthy",
    "SuccessfulCreate",
    "ScalingReplicaSet",
];

/// Writes one worker's deterministic stream of objects.
struct Generator {
    rng: Rng,
    worker: u64,
    serial: u64,
    /// Keys written so far (and not deleted), with their kind, for overwrites.
    keys: Vec<(String, Kind)>,
}

impl Generator {
    fn new(seed: u64, worker: u64) -> Generator {
        Generator {
            rng: Rng::new(seed),
            worker,
            serial: 0,
            keys: Vec::new(),
        }
    }

    fn batch(&mut self) -> Batch {
        let mut batch = Batch {
            ops: Vec::new(),
            puts: 0,
            deletes: 0,
            bytes: 0,
        };
        let mut touched: Vec<usize> = Vec::new();
        while batch.ops.len() < BATCH_OPS && (batch.bytes as usize) < BATCH_BYTES {
            let roll = self.rng.range(0, 99);
            if roll < 25 && !self.keys.is_empty() {
                // Overwrite (a new revision of) an object written before, once per transaction.
                let i = (self.rng.next_u64() % self.keys.len() as u64) as usize;
                if touched.contains(&i) {
                    continue;
                }
                let (key, kind) = self.keys[i].clone();
                if kind == Kind::ConfigMap && !batch.ops.is_empty() {
                    continue;
                }
                let value = self.value(kind, &key);
                let big = value.len() > ALONE;
                touched.push(i);
                batch.bytes += value.len() as u64;
                batch.puts += 1;
                batch.ops.push(TxnOp::put(key, value, None));
                if big {
                    break;
                }
                continue;
            }
            if roll < 28 {
                // Delete an event (they expire in Kubernetes).
                // An event not written in this transaction; later indices shift down by one.
                if let Some(i) = self.keys.iter().rposition(|(_, k)| *k == Kind::Event)
                    && !touched.contains(&i)
                {
                    let (key, _) = self.keys.remove(i);
                    for t in touched.iter_mut().filter(|t| **t > i) {
                        *t -= 1;
                    }
                    batch.deletes += 1;
                    batch.ops.push(TxnOp::delete(key, None));
                }
                continue;
            }
            let kind = Kind::pick(&mut self.rng);
            let key = self.new_key(kind);
            let value = self.value(kind, &key);
            if value.len() > ALONE && !batch.ops.is_empty() {
                // Leave it for the next transaction: large values travel alone.
                self.keys.push((key, kind));
                continue;
            }
            let big = value.len() > ALONE;
            touched.push(self.keys.len());
            self.keys.push((key.clone(), kind));
            batch.bytes += value.len() as u64;
            batch.puts += 1;
            batch.ops.push(TxnOp::put(key, value, None));
            if big {
                break;
            }
        }
        batch
    }

    fn new_key(&mut self, kind: Kind) -> String {
        self.serial += 1;
        let ns = *self.rng.pick(NAMESPACES);
        let app = *self.rng.pick(APPS);
        let suffix = self.hex(5);
        let name = match kind {
            Kind::Pod => format!("{app}-{}-{suffix}", self.hex(10)),
            Kind::Event => format!("{app}-{suffix}.{:x}", self.rng.next_u64() >> 8),
            Kind::Lease => format!("{app}-lock-{}-{}", self.worker, self.serial),
            _ => format!("{app}-{}-{}-{suffix}", self.worker, self.serial),
        };
        format!("/registry/{}/{ns}/{name}", kind.resource())
    }

    fn hex(&mut self, n: usize) -> String {
        const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        (0..n).map(|_| char::from(*self.rng.pick(DIGITS))).collect()
    }

    fn uid(&mut self) -> String {
        let a = self.rng.next_u64();
        let b = self.rng.next_u64();
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }

    /// Words of config-like text, about `len` bytes.
    fn text(&mut self, len: usize) -> String {
        let mut out = String::with_capacity(len + 32);
        while out.len() < len {
            let a = *self.rng.pick(WORDS);
            let b = *self.rng.pick(WORDS);
            let n = self.rng.range(0, 9999);
            out.push_str(&format!("{a}_{b} = {n}\\n"));
        }
        out
    }

    /// Random bytes as base64 (secrets, certificates: incompressible), `len` characters.
    fn base64(&mut self, len: usize) -> String {
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        (0..len)
            .map(|_| char::from(B64[(self.rng.next_u64() % 64) as usize]))
            .collect()
    }

    fn metadata(&mut self, key: &str, extra_labels: usize) -> String {
        let mut parts = key.rsplit('/');
        let name = parts.next().unwrap_or("x").to_string();
        let ns = parts.next().unwrap_or("default").to_string();
        let app = name.split('-').next().unwrap_or("app").to_string();
        let mut labels = format!(
            r#""app.kubernetes.io/name":"{app}","app.kubernetes.io/part-of":"{ns}","pod-template-hash":"{}""#,
            self.hex(10)
        );
        for i in 0..extra_labels {
            let w = *self.rng.pick(WORDS);
            labels.push_str(&format!(r#","example.com/{w}-{i}":"{}""#, self.hex(8)));
        }
        let uid = self.uid();
        let rv = self.rng.range(1, 50_000_000);
        let ts = 1_700_000_000 + self.rng.range(0, 30_000_000);
        format!(
            r#""metadata":{{"name":"{name}","namespace":"{ns}","uid":"{uid}","resourceVersion":"{rv}","creationTimestamp":"{ts}","labels":{{{labels}}},"managedFields":[{{"manager":"kube-controller-manager","operation":"Update","apiVersion":"v1","time":"{ts}","fieldsType":"FieldsV1"}}]}}"#
        )
    }

    fn value(&mut self, kind: Kind, key: &str) -> Vec<u8> {
        let json = match kind {
            Kind::Pod => {
                let meta = {
                    let n = self.rng.range(2, 8) as usize;
                    self.metadata(key, n)
                };
                let mut containers = Vec::new();
                for c in 0..self.rng.range(1, 4) {
                    let app = *self.rng.pick(APPS);
                    let mut env = Vec::new();
                    for e in 0..self.rng.range(5, 40) {
                        let w = self.rng.pick(WORDS).to_ascii_uppercase();
                        env.push(format!(r#"{{"name":"{w}_{e}","value":"{}"}}"#, {
                            let n = self.rng.range(8, 60) as usize;
                            self.text(n)
                        }));
                    }
                    containers.push(format!(
                        r#"{{"name":"{app}-{c}","image":"registry.example.com/{app}:v1.{}.{}","ports":[{{"containerPort":{},"protocol":"TCP"}}],"env":[{}],"resources":{{"requests":{{"cpu":"{}m","memory":"{}Mi"}}}},"imagePullPolicy":"IfNotPresent"}}"#,
                        self.rng.range(0, 30),
                        self.rng.range(0, 9),
                        self.rng.range(80, 9000),
                        env.join(","),
                        self.rng.range(10, 2000),
                        self.rng.range(16, 4096)
                    ));
                }
                let node = self.rng.range(1, 200);
                let ip = self.rng.next_u64();
                format!(
                    r#"{{"kind":"Pod","apiVersion":"v1",{meta},"spec":{{"containers":[{}],"restartPolicy":"Always","nodeName":"node-{node}","serviceAccountName":"default"}},"status":{{"phase":"Running","conditions":[{{"type":"Ready","status":"True"}},{{"type":"ContainersReady","status":"True"}}],"podIP":"10.{}.{}.{}"}}}}"#,
                    containers.join(","),
                    ip & 0xff,
                    (ip >> 8) & 0xff,
                    (ip >> 16) & 0xff
                )
            }
            Kind::Event => {
                let meta = self.metadata(key, 0);
                let reason = *self.rng.pick(REASONS);
                let message = {
                    let n = self.rng.range(60, 400) as usize;
                    self.text(n)
                };
                format!(
                    r#"{{"kind":"Event","apiVersion":"v1",{meta},"involvedObject":{{"kind":"Pod","uid":"{}"}},"reason":"{reason}","message":"{message}","source":{{"component":"kubelet","host":"node-{}"}},"count":{},"type":"Normal"}}"#,
                    self.uid(),
                    self.rng.range(1, 200),
                    self.rng.range(1, 50)
                )
            }
            Kind::ConfigMap => {
                let meta = {
                    let n = self.rng.range(0, 4) as usize;
                    self.metadata(key, n)
                };
                let size = if self.rng.percent(12) {
                    self.rng.range(100 * 1024, 1000 * 1024)
                } else {
                    self.rng.range(512, 8 * 1024)
                } as usize;
                let data = self.text(size);
                format!(
                    r#"{{"kind":"ConfigMap","apiVersion":"v1",{meta},"data":{{"config.ini":"{data}"}}}}"#
                )
            }
            Kind::Secret => {
                let meta = self.metadata(key, 1);
                let cert = {
                    let n = self.rng.range(1200, 3600) as usize;
                    self.base64(n)
                };
                let token = self.base64(64);
                format!(
                    r#"{{"kind":"Secret","apiVersion":"v1",{meta},"type":"kubernetes.io/tls","data":{{"tls.crt":"{cert}","token":"{token}"}}}}"#
                )
            }
            Kind::Lease => {
                let meta = self.metadata(key, 0);
                format!(
                    r#"{{"kind":"Lease","apiVersion":"coordination.k8s.io/v1",{meta},"spec":{{"holderIdentity":"node-{}","leaseDurationSeconds":40,"renewTime":"{}"}}}}"#,
                    self.rng.range(1, 200),
                    self.rng.next_u64()
                )
            }
            Kind::Deployment | Kind::ReplicaSet | Kind::Service | Kind::EndpointSlice => {
                let meta = {
                    let n = self.rng.range(2, 10) as usize;
                    self.metadata(key, n)
                };
                let annotation = {
                    let n = self.rng.range(800, 5000) as usize;
                    self.text(n)
                };
                format!(
                    r#"{{"kind":"{kind:?}","apiVersion":"apps/v1",{meta},"spec":{{"replicas":{},"template":{{"annotations":{{"kubectl.kubernetes.io/last-applied-configuration":"{annotation}"}}}}}},"status":{{"observedGeneration":{}}}}}"#,
                    self.rng.range(1, 30),
                    self.rng.range(1, 400)
                )
            }
        };
        json.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_writes_the_same_objects() {
        let (mut a, mut b) = (Generator::new(9, 0), Generator::new(9, 0));
        for _ in 0..20 {
            let (x, y) = (a.batch(), b.batch());
            assert_eq!(format!("{:?}", x.ops), format!("{:?}", y.ops));
        }
    }
}
