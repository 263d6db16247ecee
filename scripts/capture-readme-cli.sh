#!/usr/bin/env bash
# Re-capture the README's CLI examples (save, ls, prune, verify; encryption) from real runs of
# the binary under test (ESO_BIN, default target/debug/etcd-snapshot) against etcd 3.4.23, etcd
# 3.5.30 and SeaweedFS from the test environment (make test-deps), on 127.0.0.1 with free ports.
# Writes OUT/block1.txt (The CLI) and OUT/block2.txt (Encryption at rest); OUT defaults to
# /tmp/readme-cap. Everything it starts is stopped on exit; it works in /tmp/readme and
# /tmp/readme-enc (the paths the README shows).
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TARGET=${CARGO_TARGET_DIR:-$SCRIPT_DIR/../target}
ESO=${ESO_BIN:-$TARGET/debug/etcd-snapshot}
[[ -x $ESO ]] || { echo "no $ESO: cargo build first (or set ESO_BIN)" >&2; exit 1; }
OUT=${1:-/tmp/readme-cap}
mkdir -p "$OUT"
CACHE=$HOME/.cache/etcd-snapshot-operator/bin
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap 'cleanup; rm -rf /tmp/readme /tmp/readme-enc' EXIT

# --- block 1: etcd 3.4.23, S3 (SeaweedFS), etcdctl 3.4 as the restore tool (no etcdutl on PATH)
rm -rf /tmp/readme && mkdir -p /tmp/readme/snaps /tmp/readme/s3data
CP=$(port); PP=$(port)
/usr/bin/etcd --name server-1 --data-dir /tmp/readme/etcd --listen-client-urls http://127.0.0.1:$CP \
  --advertise-client-urls http://127.0.0.1:$CP --listen-peer-urls http://127.0.0.1:$PP \
  --initial-advertise-peer-urls http://127.0.0.1:$PP --initial-cluster server-1=http://127.0.0.1:$PP \
  >/tmp/readme/etcd.log 2>&1 &
PIDS+=($!)
S3P=$(port); AP=$(port)
while (( AP >= 55000 )); do AP=$(port); done
SECRET=readme-secret-$RANDOM
cat >/tmp/readme/s3.json <<J
{"identities":[{"name":"eso","credentials":[{"accessKey":"READMEACCESSKEY","secretKey":"$SECRET"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
J
$CACHE/weed mini -dir=/tmp/readme/s3data -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port=$(port) -master.port.grpc=$(port) \
  -master.volumeSizeLimitMB=512 -volume.port=$(port) -volume.port.grpc=$(port) -filer.port=$(port) -filer.port.grpc=$(port) \
  -s3.port=$S3P -s3.port.grpc=$(port) -s3.port.iceberg=0 -s3.port.lance=0 -s3.config=/tmp/readme/s3.json \
  -admin.port=$AP -admin.port.grpc=$((AP + 10000)) -admin.ui=false -webdav=false >/tmp/readme/weed.log 2>&1 &
PIDS+=($!)
for i in $(seq 120); do curl -s -o /dev/null http://127.0.0.1:$S3P/ && break; sleep 0.5; done
for i in $(seq 60); do curl -sf http://127.0.0.1:$CP/health >/dev/null && break; sleep 0.5; done
for i in $(seq 60); do
  curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user "READMEACCESSKEY:$SECRET" -X PUT "http://127.0.0.1:$S3P/backups" >/dev/null && break
  sleep 1
done
ETCDCTL_API=3 /usr/bin/etcdctl --endpoints=http://127.0.0.1:$CP put /registry/demo hello >/dev/null
export ETCD_SNAPSHOT_ETCD_ENDPOINT=http://127.0.0.1:$CP ETCD_SNAPSHOT_DIR=/tmp/readme/snaps NODE_NAME=server-1
export AWS_ACCESS_KEY_ID=READMEACCESSKEY AWS_SECRET_ACCESS_KEY=$SECRET
S3="--s3 --s3-endpoint=127.0.0.1:$S3P --s3-insecure --s3-bucket=backups --s3-folder=prod"
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
{
  echo "\$ etcd-snapshot save --snapshot-compress $S3"
  $ESO save --snapshot-compress $S3 2>&1
  sleep 1
  echo; echo "\$ etcd-snapshot save $S3"
  $ESO save $S3 2>&1
  echo; echo "\$ etcd-snapshot ls --s3 ..."
  $ESO ls $S3 2>&1
  echo; echo "\$ etcd-snapshot prune --snapshot-retention=1 --dry-run --s3 ..."
  $ESO prune --snapshot-retention=1 --dry-run $S3 2>&1
  Z=$(cd /tmp/readme/snaps && ls *.zst)
  echo; echo "\$ etcd-snapshot verify $Z"
  $ESO verify "$Z" 2>&1
} >$OUT/block1.txt
cleanup; PIDS=()

# --- block 2: etcd 3.5.30, encryption, etcdutl 3.5.30 on PATH
rm -rf /tmp/readme-enc && mkdir -p /tmp/readme-enc/bin
ln -s $CACHE/etcdutl-3.5.30 /tmp/readme-enc/bin/etcdutl
CP=$(port); PP=$(port)
$CACHE/etcd-3.5.30 --name node-a --data-dir /tmp/readme-enc/etcd --listen-client-urls http://127.0.0.1:$CP \
  --advertise-client-urls http://127.0.0.1:$CP --listen-peer-urls http://127.0.0.1:$PP \
  --initial-advertise-peer-urls http://127.0.0.1:$PP --initial-cluster node-a=http://127.0.0.1:$PP \
  >/tmp/readme-enc/etcd.log 2>&1 &
PIDS+=($!)
for i in $(seq 60); do curl -sf http://127.0.0.1:$CP/health >/dev/null && break; sleep 0.5; done
$CACHE/etcdctl-3.5.30 --endpoints=http://127.0.0.1:$CP put /registry/demo hello >/dev/null
unset ETCD_SNAPSHOT_DIR AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
export ETCD_SNAPSHOT_ETCD_ENDPOINT=http://127.0.0.1:$CP NODE_NAME=node-a
export PATH=/tmp/readme-enc/bin:$PATH
cd /tmp/readme-enc
openssl rand -base64 32 > key && chmod 600 key
openssl rand -base64 32 > other.key && chmod 600 other.key
{
  echo "\$ openssl rand -base64 32 > key && chmod 600 key"
  echo "\$ etcd-snapshot save --snapshot-compress --encryption-key-file key --dir snaps"
  $ESO save --snapshot-compress --encryption-key-file key --dir snaps 2>&1
  E=$(cd snaps && ls *.enc)
  echo; echo "\$ etcd-snapshot verify $E --encryption-key-file key --dir snaps"
  $ESO verify "$E" --encryption-key-file key --dir snaps 2>&1
  echo; echo "\$ etcd-snapshot verify $E --dir snaps"
  $ESO verify "$E" --dir snaps 2>&1 || true
  echo; echo "\$ etcd-snapshot verify $E --encryption-key-file other.key --dir snaps"
  $ESO verify "$E" --encryption-key-file other.key --dir snaps 2>&1 || true
} >$OUT/block2.txt
