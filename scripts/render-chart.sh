#!/usr/bin/env bash
# Renders charts/etcd-snapshot-operator with real Helm ($ESO_CACHE/bin/helm, installed by
# scripts/install-helm-kubectl.sh):
#   helm template etcd-snapshot charts/etcd-snapshot-operator --namespace etcd-snapshot --include-crds [-f values.yaml]...
#
#   scripts/render-chart.sh                      render the defaults into deploy/etcd-snapshot-operator.yaml
#   scripts/render-chart.sh -o FILE [-f V.yaml]  render into FILE (`-` for stdout), with values files
#   scripts/render-chart.sh --hooks ...          keep the hooks (left out by default, as
#                                                `helm template --no-hooks`: deploy/ must never
#                                                hold the uninstall hook Job, which kubectl apply
#                                                would run at once)
#
# Exit status 1 and helm's "Error: execution error at (...): <message>" when values are rejected.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cache=${ESO_CACHE:-$HOME/.cache/etcd-snapshot-operator}
helm=$cache/bin/helm
out=$here/deploy/etcd-snapshot-operator.yaml
RELEASE=${RELEASE:-etcd-snapshot}
NAMESPACE=${NAMESPACE:-etcd-snapshot}

args=()
hooks=
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift 2 ;;
    -f | --values) args+=(-f "$2"); shift 2 ;;
    --hooks) hooks=1; shift ;;
    *) echo "render-chart: unknown argument $1 (use -o FILE, -f VALUES and --hooks)" >&2; exit 2 ;;
  esac
done

if [ ! -x "$helm" ]; then
  "$here/scripts/install-helm-kubectl.sh"
fi

if [ -z "$hooks" ]; then
  args+=(--no-hooks)
fi

render() {
  "$helm" template "$RELEASE" "$here/charts/etcd-snapshot-operator" \
    --namespace "$NAMESPACE" --include-crds "${args[@]}"
}

if [ "$out" = - ]; then
  render
  exit
fi
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
render >"$tmp"
chmod 644 "$tmp"
mv "$tmp" "$out"
trap - EXIT
