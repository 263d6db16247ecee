#!/usr/bin/env bash
# `make demo`: the operator end to end on one machine, with nothing but this repository.
#
# Starts the embedded test environment (eso-testenv: the real kube-apiserver, a single-member
# etcd 3.5 and SeaweedFS S3), applies the CRDs and deploy/rbac.yaml, runs `etcd-snapshot
# controller` and `etcd-snapshot agent` as processes under the ServiceAccount identities that
# RBAC binds, applies the S3 Secret and the schedule of examples/, triggers an on-demand snapshot,
# prints what the cluster and the CLI see, and proves a restore into a scratch data dir with a
# throw-away etcd. Then it stops everything it started.
#
#   scripts/demo.sh           run the demo, then stop everything
#   scripts/demo.sh --keep    keep everything running after the demo (until Ctrl-C) and print
#                             how to use kubectl and etcd-snapshot against it
#
# Needs a Debian bookworm machine (as root) with Rust; scripts/install-test-deps.sh installs the
# rest (and skips what is already there). The S3 secret key is never printed.
set -euo pipefail

keep=0
for arg in "$@"; do
  case "$arg" in
    --keep) keep=1 ;;
    -h | --help)
      sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "demo: unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

start=$(date +%s)
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
cache=${ESO_CACHE:-$HOME/.cache/etcd-snapshot-operator}
export ESO_CACHE=$cache
cachebin=$cache/bin

ns=etcd-snapshot
schedule=nightly
bucket=etcd-snapshots
folder=demo

WORK=$(mktemp -d "${TMPDIR:-/tmp}/eso-demo.XXXXXX")
mkdir -p "$WORK/bin" "$WORK/snapshots"

bold=''
reset=''
if [ -t 1 ]; then
  bold=$'\e[1m'
  reset=$'\e[0m'
fi
section() { printf '\n%s==> %s%s\n' "$bold" "$*" "$reset"; }
step() { printf '    %s\n' "$*"; }
die() {
  echo "demo: error: $*" >&2
  exit 1
}
elapsed() { echo "$(($(date +%s) - start))s"; }

# ------------------------------------------------------------------------------------------------
# Cleanup: stop everything this script started, in reverse order.
# ------------------------------------------------------------------------------------------------
testenv_pid=''
controller_pid=''
agent_pid=''
etcd_pid=''
succeeded=0

stop_pid() { # stop_pid PID NAME
  local pid=$1 name=$2
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || {
      wait "$pid" 2>/dev/null || true
      return 0
    }
    sleep 0.1
  done
  echo "demo: $name ($pid) did not stop on SIGTERM; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [ -n "$testenv_pid$controller_pid$agent_pid$etcd_pid" ]; then
    section "Stopping everything the demo started"
  fi
  stop_pid "$etcd_pid" "restored etcd"
  stop_pid "$agent_pid" "agent"
  stop_pid "$controller_pid" "controller"
  if [ -n "$testenv_pid" ]; then
    # eso-testenv stops its servers (and removes their temporary dirs) when its stdin closes.
    exec 3>&- 2>/dev/null
    for _ in $(seq 150); do
      kill -0 "$testenv_pid" 2>/dev/null || break
      sleep 0.2
    done
    stop_pid "$testenv_pid" "eso-testenv"
  fi
  if [ "$rc" = 0 ] && [ "$succeeded" = 1 ]; then
    rm -rf "$WORK"
    section "Demo finished: everything stopped; total wall time $(elapsed)"
  else
    echo "demo: FAILED (exit status $rc) after $(elapsed); logs kept in $WORK:" >&2
    ls "$WORK"/*.log 2>/dev/null | sed 's/^/    /' >&2
    for log in "$WORK"/controller.log "$WORK"/agent.log; do
      [ -s "$log" ] || continue
      echo "--- last lines of $log" >&2
      tail -n 15 "$log" >&2
    done
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2
  shift 2
  local deadline=$(($(date +%s) + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out after ${secs}s waiting for $what"
    sleep 0.5
  done
}

# ------------------------------------------------------------------------------------------------
section "1. Installing the test environment and building"
# ------------------------------------------------------------------------------------------------
step "scripts/install-test-deps.sh (etcd 3.4/3.5, SeaweedFS, kube-apiserver; skips what is there)"
"$repo/scripts/install-test-deps.sh"
step "cargo build --locked --workspace --bins"
cargo build --locked --workspace --bins --quiet
target=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
esnap=$target/debug/etcd-snapshot
testenv=$target/debug/eso-testenv
[ -x "$esnap" ] && [ -x "$testenv" ] || die "build did not produce $esnap and $testenv"

# The tools, under their plain names, on PATH for this script (and for `restore`, which runs
# etcdutl from PATH).
ln -s "$esnap" "$WORK/bin/etcd-snapshot"
ln -s "$cachebin/etcd-3.5" "$WORK/bin/etcd"
ln -s "$cachebin/etcdctl-3.5" "$WORK/bin/etcdctl"
ln -s "$cachebin/etcdutl-3.5.30" "$WORK/bin/etcdutl"
# kubectl with a discovery cache of its own (not ~/.kube/cache: the demo leaves the machine as it
# found it).
printf '#!/bin/sh\nexec %q --cache-dir=%q "$@"\n' "$cachebin/kubectl" "$WORK/kubectl-cache" >"$WORK/bin/kubectl"
chmod +x "$WORK/bin/kubectl"
export PATH=$WORK/bin:$PATH
step "built in $(elapsed)"

# ------------------------------------------------------------------------------------------------
section "2. Starting kube-apiserver, etcd 3.5 and SeaweedFS (eso-testenv)"
# ------------------------------------------------------------------------------------------------
envfile=$WORK/testenv.env
mkfifo "$WORK/testenv.stdin"
setsid "$testenv" "$envfile" <"$WORK/testenv.stdin" >"$WORK/testenv.log" 2>&1 &
testenv_pid=$!
# Hold the FIFO's write end open: eso-testenv runs until it closes (in cleanup).
exec 3>"$WORK/testenv.stdin"
env_ready() {
  kill -0 "$testenv_pid" 2>/dev/null || die "eso-testenv exited: $(tail -n 5 "$WORK/testenv.log")"
  grep -q '^S3_SECRET_KEY=' "$envfile" 2>/dev/null
}
deadline=$(($(date +%s) + 180))
until env_ready; do
  [ "$(date +%s)" -lt "$deadline" ] || die "eso-testenv did not write $envfile within 180s"
  sleep 0.5
done
# shellcheck disable=SC1090
. "$envfile"
export KUBECONFIG=$ADMIN_KUBECONFIG
step "kube-apiserver: admin kubeconfig $ADMIN_KUBECONFIG"
step "etcd:           $ETCD_ENDPOINT"
step "S3 (SeaweedFS): http://$S3_ENDPOINT (access key $S3_ACCESS_KEY, secret key not shown)"

# The bucket. curl reads the credentials from stdin (-K -), so they are in no command line.
printf 'user = "%s:%s"\n' "$S3_ACCESS_KEY" "$S3_SECRET_KEY" |
  curl -sS -f -K - --aws-sigv4 "aws:amz:us-east-1:s3" -X PUT "http://$S3_ENDPOINT/$bucket" -o /dev/null ||
  die "creating the bucket $bucket failed"
step "created bucket s3://$bucket"

# ------------------------------------------------------------------------------------------------
section "3. Applying the CRDs and deploy/rbac.yaml (as the cluster admin)"
# ------------------------------------------------------------------------------------------------
etcd-snapshot crd | kubectl apply -f - | sed 's/^/    /'
kubectl apply -f deploy/rbac.yaml | sed 's/^/    /'
kubectl wait --for condition=established --timeout 60s \
  crd/etcdsnapshotschedules.etcdsnapshot.io crd/etcdsnapshotfiles.etcdsnapshot.io | sed 's/^/    /'

# ------------------------------------------------------------------------------------------------
section "4. Writing a few keys into etcd"
# ------------------------------------------------------------------------------------------------
etcdctl --endpoints "$ETCD_ENDPOINT" put demo/greeting "hello from before the snapshot" >/dev/null
etcdctl --endpoints "$ETCD_ENDPOINT" put demo/color blue >/dev/null
etcdctl --endpoints "$ETCD_ENDPOINT" put demo/answer 42 >/dev/null
etcdctl --endpoints "$ETCD_ENDPOINT" get --prefix demo/ | paste - - | sed 's/^/    /'

# ------------------------------------------------------------------------------------------------
section "5. Starting the controller and an agent, as the ServiceAccounts deploy/rbac.yaml binds"
# ------------------------------------------------------------------------------------------------
controller_metrics=127.0.0.1:$(free_port)
KUBECONFIG=$CONTROLLER_KUBECONFIG setsid etcd-snapshot controller \
  --namespace "$ns" --identity demo-controller --metrics-addr "$controller_metrics" \
  --lease-duration 3s --renew-deadline 2s --retry-period 500ms --resync 10s \
  >"$WORK/controller.log" 2>&1 &
controller_pid=$!
step "controller (system:serviceaccount:$ns:etcd-snapshot-controller): pid $controller_pid, metrics http://$controller_metrics/metrics, log $WORK/controller.log"

agent_metrics=127.0.0.1:$(free_port)
KUBECONFIG=$AGENT_KUBECONFIG setsid etcd-snapshot agent \
  --node-name demo-node --namespace "$ns" --dir "$WORK/snapshots" \
  --etcd-endpoint "$ETCD_ENDPOINT" --heartbeat 2s --metrics-addr "$agent_metrics" \
  >"$WORK/agent.log" 2>&1 &
agent_pid=$!
step "agent      (system:serviceaccount:$ns:etcd-snapshot-agent):      pid $agent_pid, node demo-node, metrics http://$agent_metrics/metrics, log $WORK/agent.log"

alive() { kill -0 "$controller_pid" 2>/dev/null && kill -0 "$agent_pid" 2>/dev/null; }
ready() { alive && curl -sf "http://$1/readyz" >/dev/null; }
wait_for 60 "the agent to be ready" ready "$agent_metrics"
wait_for 60 "the controller to be ready" ready "$controller_metrics"
step "both ready"

# ------------------------------------------------------------------------------------------------
section "6. Applying examples/s3-secret.yaml and examples/schedule.yaml"
# ------------------------------------------------------------------------------------------------
# The Secret: the example with the demo's endpoint, bucket and keys filled in. The substitution
# happens inside bash (no command line holds the keys) and the result goes to kubectl on stdin.
secret_yaml=$(<examples/s3-secret.yaml)
secret_yaml=${secret_yaml//s3.example.com/$S3_ENDPOINT}
secret_yaml=${secret_yaml//etcd-s3-bucket: etcd-snapshots/etcd-s3-bucket: $bucket}
secret_yaml=${secret_yaml//etcd-s3-folder: my-cluster/etcd-s3-folder: $folder}
secret_yaml=${secret_yaml//'# etcd-s3-bucket-lookup-type: path '/'etcd-s3-bucket-lookup-type: path # '}
secret_yaml=${secret_yaml//'# etcd-s3-insecure: "true" '/'etcd-s3-insecure: "true" # '}
secret_yaml=${secret_yaml//REPLACE_WITH_ACCESS_KEY/$S3_ACCESS_KEY}
secret_yaml=${secret_yaml//REPLACE_WITH_SECRET_KEY/$S3_SECRET_KEY}
printf '%s\n' "$secret_yaml" | kubectl apply -f - | sed 's/^/    /'
unset secret_yaml
kubectl apply -f examples/schedule.yaml | sed 's/^/    /'

condition() { # condition TYPE FIELD
  kubectl get etcdsnapshotschedule "$schedule" \
    -o jsonpath="{.status.conditions[?(@.type==\"$1\")].$2}" 2>/dev/null
}
# kstatus: a valid schedule is Ready=True at once (before its first run); an invalid one is
# Stalled=True with the reason in its message.
valid() { alive && [ "$(condition Ready status)" = True ]; }
deadline=$(($(date +%s) + 60))
until valid; do
  alive || die "the controller or the agent exited"
  if [ "$(condition Stalled status)" = True ]; then
    condition Stalled message >&2
    echo >&2
    die "schedule $schedule is invalid (Stalled=True)"
  fi
  [ "$(date +%s)" -lt "$deadline" ] || die "schedule $schedule is not Ready=True after 60s"
  sleep 0.5
done
step "schedule $schedule is valid (condition Ready=True)"

# ------------------------------------------------------------------------------------------------
section "7. etcd-snapshot trigger $schedule --wait"
# ------------------------------------------------------------------------------------------------
etcd-snapshot trigger "$schedule" --wait --timeout 2m | sed 's/^/    /'

# A key written after the snapshot: the restore below must not have it.
etcdctl --endpoints "$ETCD_ENDPOINT" put demo/after-snapshot "written after the snapshot" >/dev/null

# ------------------------------------------------------------------------------------------------
section "8. kubectl get etcdsnapshotfile"
# ------------------------------------------------------------------------------------------------
kubectl get etcdsnapshotfile

esfs=$(kubectl get etcdsnapshotfile \
  -o jsonpath='{range .items[*]}{.metadata.name}{"\t"}{.spec.location}{"\t"}{.spec.snapshotName}{"\n"}{end}')
s3_esf=$(awk -F'\t' '$2 ~ /^s3:/ { print $1; exit }' <<<"$esfs")
local_snapshot=$(awk -F'\t' '$2 ~ /^file:/ { print $3; exit }' <<<"$esfs")
[ -n "$s3_esf" ] || die "no ETCDSnapshotFile of an S3 copy"
[ -n "$local_snapshot" ] || die "no ETCDSnapshotFile of a local copy"

# ------------------------------------------------------------------------------------------------
section "9. kubectl describe etcdsnapshotfile $s3_esf"
# ------------------------------------------------------------------------------------------------
kubectl describe etcdsnapshotfile "$s3_esf"

# ------------------------------------------------------------------------------------------------
section "10. kubectl get etcdsnapshotschedule"
# ------------------------------------------------------------------------------------------------
kubectl get etcdsnapshotschedule

# ------------------------------------------------------------------------------------------------
section "11. etcd-snapshot ls --dir \$WORK/snapshots --s3 ... (credentials from AWS_* variables)"
# ------------------------------------------------------------------------------------------------
AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY \
  etcd-snapshot ls --node-name demo-node --dir "$WORK/snapshots" --s3 --s3-endpoint "$S3_ENDPOINT" \
  --s3-insecure --s3-bucket "$bucket" --s3-folder "$folder" --s3-bucket-lookup-type path

# ------------------------------------------------------------------------------------------------
section "12. Restore $local_snapshot into a scratch data dir"
# ------------------------------------------------------------------------------------------------
client_port=$(free_port)
peer_port=$(free_port)
while [ "$peer_port" = "$client_port" ]; do peer_port=$(free_port); done
step "etcd-snapshot restore --cluster-reset --cluster-reset-restore-path=$local_snapshot --dir \$WORK/snapshots --data-dir \$WORK/restored --name demo"
etcd-snapshot restore --cluster-reset --cluster-reset-restore-path="$local_snapshot" \
  --dir "$WORK/snapshots" --data-dir "$WORK/restored" --name demo \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" 2>&1 | sed 's/^/    /'

setsid etcd --name demo --data-dir "$WORK/restored" \
  --listen-client-urls "http://127.0.0.1:$client_port" \
  --advertise-client-urls "http://127.0.0.1:$client_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  >"$WORK/restored-etcd.log" 2>&1 &
etcd_pid=$!
restored=http://127.0.0.1:$client_port
etcd_up() {
  kill -0 "$etcd_pid" 2>/dev/null || die "the restored etcd exited: $(tail -n 5 "$WORK/restored-etcd.log")"
  etcdctl --endpoints "$restored" endpoint health >/dev/null 2>&1
}
deadline=$(($(date +%s) + 30))
until etcd_up; do
  [ "$(date +%s)" -lt "$deadline" ] || die "the restored etcd is not healthy after 30s"
  sleep 0.3
done
step "etcd 3.5 started on the restored data dir ($restored)"
step "\$ etcdctl --endpoints $restored get --prefix demo/"
got=$(etcdctl --endpoints "$restored" get --prefix demo/)
paste - - <<<"$got" | sed 's/^/      /'
grep -qx 'hello from before the snapshot' <<<"$got" || die "the restored etcd does not have demo/greeting"
if grep -q 'demo/after-snapshot' <<<"$got"; then
  die "the restored etcd has demo/after-snapshot, written after the snapshot"
fi
step "restore OK: the keys written before the snapshot are there; demo/after-snapshot (written after it) is not"
stop_pid "$etcd_pid" "restored etcd"
etcd_pid=''

succeeded=1
if [ "$keep" = 1 ]; then
  # ----------------------------------------------------------------------------------------------
  section "Demo finished in $(elapsed); everything keeps running (--keep). Ctrl-C stops it."
  # ----------------------------------------------------------------------------------------------
  cat <<EOF
    export KUBECONFIG=$ADMIN_KUBECONFIG
    export PATH=$WORK/bin:\$PATH
    kubectl get etcdsnapshotfile
    kubectl get etcdsnapshotschedule $schedule -o yaml
    etcd-snapshot trigger $schedule --wait
    etcd-snapshot ls --cluster
    etcdctl --endpoints $ETCD_ENDPOINT get --prefix demo/

    logs: $WORK/{controller,agent,testenv}.log   snapshots: $WORK/snapshots
    metrics: http://$controller_metrics/metrics (controller), http://$agent_metrics/metrics (agent)
EOF
  # Ctrl-C ends the demo normally (the processes above run in their own sessions, so the
  # terminal's SIGINT reaches only this script, which stops them in order).
  trap 'exit 0' INT TERM
  while alive; do sleep 1; done
  succeeded=0
  die "the controller or the agent exited"
fi
