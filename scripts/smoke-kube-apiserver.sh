#!/usr/bin/env bash
# Smoke test of the kube-apiserver built by scripts/build-kube-apiserver.sh:
# starts a private etcd and kube-apiserver on 127.0.0.1 (ports picked at run time, temp dirs),
# applies a cluster-scoped CRD (status subresource, printer columns), creates and reads a custom
# object, creates an events.k8s.io/v1 Event in `default` about it (the backported validation rule)
# and checks RBAC, with both the 1.20 kubectl built alongside and kubectl 1.35 (the one the tests use,
# scripts/install-helm-kubectl.sh).
# Everything is stopped and removed on exit.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${ESO_CACHE:-$HOME/.cache/etcd-snapshot-operator}
APISERVER=$CACHE/bin/kube-apiserver
KUBECTL120=$CACHE/bin/kubectl-1.20
KUBECTL135=$CACHE/bin/kubectl
ETCD=${ETCD:-/usr/bin/etcd}

log() { printf '[smoke-kube-apiserver] %s\n' "$*" >&2; }
die() { printf '[smoke-kube-apiserver] FAIL: %s\n' "$*" >&2; exit 1; }

# --- prerequisites --------------------------------------------------------------------------
if [[ ! -x $APISERVER || ! -x $KUBECTL120 ]]; then
  "$SCRIPT_DIR/build-kube-apiserver.sh"
fi
[[ -x $KUBECTL135 ]] || "$SCRIPT_DIR/install-helm-kubectl.sh"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [[ ! -x $ETCD ]]; then
  [[ $(id -u) -eq 0 ]] || die "$ETCD missing; run as root to install etcd-server"
  log "installing etcd-server etcd-client (service start suppressed)"
  created_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 0755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
  [[ $created_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
  if [[ -d /run/systemd/system ]]; then
    systemctl disable --now etcd >/dev/null 2>&1 || true
  else
    service etcd stop >/dev/null 2>&1 || true
  fi
  for p in 2379 2380; do ! port_busy "$p" || die "something holds port $p after installing etcd-server"; done
fi

# --- temp dir, ports, cleanup ---------------------------------------------------------------
TMP=$(mktemp -d /tmp/eso-smoke-kube.XXXXXX)
ETCD_PID=; API_PID=
cleanup() {
  local rc=$?
  for pid in $API_PID $ETCD_PID; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in $API_PID $ETCD_PID; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ $rc -ne 0 ]]; then
    log "exit code $rc; last apiserver log lines:"
    tail -n 30 "$TMP/apiserver.log" >&2 2>/dev/null || true
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT

declare -A USED_PORTS=()
free_port() {
  local p
  while :; do
    p=$(( 20000 + RANDOM % 40000 ))
    [[ -z ${USED_PORTS[$p]:-} ]] && ! port_busy "$p" && break
  done
  USED_PORTS[$p]=1
  echo "$p"
}
ETCD_CLIENT_PORT=$(free_port); USED_PORTS[$ETCD_CLIENT_PORT]=1
ETCD_PEER_PORT=$(free_port); USED_PORTS[$ETCD_PEER_PORT]=1
API_PORT=$(free_port)

wait_for() { # seconds description command...
  local deadline=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) < deadline )) || die "timed out waiting for $what"
    sleep 0.2
  done
}

# --- etcd -----------------------------------------------------------------------------------
t0=$(date +%s%N)
"$ETCD" --name smoke --data-dir "$TMP/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "smoke=http://127.0.0.1:$ETCD_PEER_PORT" \
  >"$TMP/etcd.log" 2>&1 &
ETCD_PID=$!
wait_for 20 "etcd health" curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health"
log "etcd up on 127.0.0.1:$ETCD_CLIENT_PORT"

# --- apiserver inputs -----------------------------------------------------------------------
mkdir -p "$TMP/certs"
openssl genrsa -out "$TMP/sa.key" 2048 2>/dev/null
ADMIN_TOKEN=$(openssl rand -hex 16)
USER_TOKEN=$(openssl rand -hex 16)
# token,user,uid,"group1,group2"
cat >"$TMP/tokens.csv" <<EOF
$ADMIN_TOKEN,admin,uid-admin,"system:masters"
$USER_TOKEN,alice,uid-alice
EOF

API_ARGS=(
  --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT"
  --bind-address=127.0.0.1
  --secure-port="$API_PORT"
  --advertise-address=127.0.0.1
  --cert-dir="$TMP/certs"
  --token-auth-file="$TMP/tokens.csv"
  --authorization-mode=RBAC
  --service-account-key-file="$TMP/sa.key"
  --service-account-signing-key-file="$TMP/sa.key"
  --service-account-issuer=https://kubernetes.default.svc
  --service-cluster-ip-range=10.0.0.0/24
  --endpoint-reconciler-type=none
)
"$APISERVER" "${API_ARGS[@]}" >"$TMP/apiserver.log" 2>&1 &
API_PID=$!
SERVER=https://127.0.0.1:$API_PORT
ready() { kill -0 "$API_PID" && [[ $(curl -ksS -H "Authorization: Bearer $ADMIN_TOKEN" "$SERVER/readyz") == ok ]]; }
wait_for 60 "kube-apiserver /readyz" ready
log "kube-apiserver ready on $SERVER $(( ($(date +%s%N) - t0) / 1000000 )) ms after starting etcd; RSS $(awk '/VmRSS/{print $2/1024 " MB"}' "/proc/$API_PID/status")"

# The generated serving cert (cert-dir/apiserver.crt) holds the leaf and its self-signed CA;
# SANs are 127.0.0.1, 10.0.0.1, the advertise address and kubernetes.default.svc (not localhost).
cat >"$TMP/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: smoke
  cluster:
    server: $SERVER
    certificate-authority: $TMP/certs/apiserver.crt
users:
- name: admin
  user: {token: $ADMIN_TOKEN}
- name: alice
  user: {token: $USER_TOKEN}
contexts:
- name: admin
  context: {cluster: smoke, user: admin}
- name: alice
  context: {cluster: smoke, user: alice}
current-context: admin
EOF
export KUBECONFIG=$TMP/kubeconfig

# --- checks ---------------------------------------------------------------------------------
run_checks() { # kubectl label
  local k=$1 label=$2 name uid out
  name=w-${label//[^a-z0-9]/}
  log "[$label] $("$k" version 2>/dev/null | tr '\n' ' ')"

  "$k" apply -f - >/dev/null <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.etcdsnapshot.io
spec:
  group: smoke.etcdsnapshot.io
  scope: Cluster
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Phase, type: string, jsonPath: .status.phase}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties: {size: {type: integer, minimum: 1}}
          status:
            type: object
            properties: {phase: {type: string}}
EOF
  "$k" wait --for=condition=Established --timeout=30s crd/widgets.smoke.etcdsnapshot.io >/dev/null
  # Discovery may lag a moment behind Established.
  wait_for 20 "widgets in discovery" "$k" get widgets

  "$k" create -f - >/dev/null <<EOF
apiVersion: smoke.etcdsnapshot.io/v1
kind: Widget
metadata: {name: $name}
spec: {size: 3}
EOF
  out=$("$k" get widget "$name")
  grep -q 'SIZE' <<<"$out" && grep -q "^$name  *3 " <<<"$out" \
    || die "[$label] unexpected 'kubectl get' output: $out"

  # Schema validation is enforced.
  if "$k" create -f - >/dev/null 2>&1 <<EOF
apiVersion: smoke.etcdsnapshot.io/v1
kind: Widget
metadata: {name: $name-bad}
spec: {size: 0}
EOF
  then die "[$label] schema validation did not reject size=0"; fi

  # Status subresource: status via /status, not via the main resource.
  curl -ksSf -X PATCH -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/merge-patch+json' \
    --data '{"status":{"phase":"Ready"}}' \
    "$SERVER/apis/smoke.etcdsnapshot.io/v1/widgets/$name/status" >/dev/null
  [[ $("$k" get widget "$name" -o jsonpath='{.status.phase}') == Ready ]] || die "[$label] status not set"

  uid=$("$k" get widget "$name" -o jsonpath='{.metadata.uid}')
  # events.k8s.io/v1 Event about a cluster-scoped object, in namespace default (backport).
  event() { # namespace
    "$k" create -f - <<EOF
apiVersion: events.k8s.io/v1
kind: Event
metadata: {name: $name.smoke$RANDOM, namespace: $1}
eventTime: "$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)"
reportingController: smoke.etcdsnapshot.io/test
reportingInstance: smoke-1
action: Smoke
reason: SmokeTest
note: event about a cluster-scoped widget
type: Normal
regarding: {apiVersion: smoke.etcdsnapshot.io/v1, kind: Widget, name: $name, uid: $uid}
EOF
  }
  event default >/dev/null || die "[$label] events.k8s.io/v1 Event in 'default' rejected (backport missing?)"
  event kube-system >/dev/null || die "[$label] events.k8s.io/v1 Event in 'kube-system' rejected"
  if event kube-public >/dev/null 2>&1; then die "[$label] Event in kube-public accepted (validation too lax)"; fi
  "$k" get events.v1.events.k8s.io -n default -o name | grep "$name.smoke" >/dev/null || die "[$label] event not listed"

  # RBAC is real: alice has no permissions.
  if "$k" --context=alice get widgets >/dev/null 2>"$TMP/forbidden"; then die "[$label] alice could list widgets"; fi
  grep -qi forbidden "$TMP/forbidden" || die "[$label] expected 403 for alice, got: $(cat "$TMP/forbidden")"

  "$k" delete widget "$name" >/dev/null
  log "[$label] CRD, custom object, status, printer columns, schema, event in default, RBAC: OK"
}

run_checks "$KUBECTL120" kubectl-1.20
run_checks "$KUBECTL135" kubectl-1.35
log "PASS"
