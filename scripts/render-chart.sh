#!/usr/bin/env bash
# Renders charts/etcd-snapshot-operator like
#   helm template etcd-snapshot charts/etcd-snapshot-operator --namespace etcd-snapshot --include-crds [-f values.yaml]...
# without helm (not packaged here): tools/render is Helm's engine (Go text/template + sprig, from
# Debian's golang-github-masterminds-sprig-dev), built offline in GOPATH mode into the cache dir.
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
bin=$cache/bin/eso-render-chart
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

# Drop the documents that are Helm hooks (annotation helm.sh/hook), unless --hooks.
strip_hooks() {
  if [ -n "$hooks" ]; then
    cat
    return
  fi
  awk '
    function flush() { if (doc !~ /\n    helm\.sh\/hook: /) printf "%s", doc; doc = "" }
    /^---$/ { flush() }
    { doc = doc $0 "\n" }
    END { flush() }
  '
}

if ! command -v go >/dev/null; then
  echo "render-chart: go is missing (apt-get install golang-go golang-github-masterminds-sprig-dev)" >&2
  exit 3
fi
# Tests render concurrently: one installer/builder at a time.
mkdir -p "$cache/bin"
exec 9>"$cache/render-chart.lock"
flock 9
if [ ! -d /usr/share/gocode/src/github.com/Masterminds/sprig ] || [ ! -d /usr/share/gocode/src/gopkg.in/yaml.v2 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "render-chart: apt-get install golang-github-masterminds-sprig-dev golang-gopkg-yaml.v2-dev" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      golang-github-masterminds-sprig-dev golang-gopkg-yaml.v2-dev >/dev/null
  else
    echo "render-chart: needs Debian's golang-github-masterminds-sprig-dev and golang-gopkg-yaml.v2-dev" >&2
    exit 3
  fi
fi

# Rebuild when the source changed (content hash, not mtime: a fresh clone has new mtimes).
src=$here/tools/render/main.go
sum=$(sha256sum "$src" | cut -d' ' -f1)
if [ ! -x "$bin" ] || [ "$(cat "$bin.sha256" 2>/dev/null)" != "$sum" ]; then
  mkdir -p "$(dirname "$bin")"
  (cd "$here/tools/render" && GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off \
    GOCACHE=${GOCACHE:-$cache/go-build} CGO_ENABLED=0 go build -o "$bin.tmp.$$" .)
  mv "$bin.tmp.$$" "$bin"
  echo "$sum" >"$bin.sha256"
fi
flock -u 9

if [ "$out" = - ]; then
  "$bin" --namespace "$NAMESPACE" --include-crds "${args[@]}" "$RELEASE" "$here/charts/etcd-snapshot-operator" | strip_hooks
  exit "${PIPESTATUS[0]}"
fi
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
"$bin" --namespace "$NAMESPACE" --include-crds "${args[@]}" "$RELEASE" "$here/charts/etcd-snapshot-operator" | strip_hooks >"$tmp"
[ "${PIPESTATUS[0]}" = 0 ] || exit 1
chmod 644 "$tmp"
mv "$tmp" "$out"
trap - EXIT
