#!/usr/bin/env bash
# Builds the upstream control-plane binaries (and the demo's trace collector, Jaeger, and SPIRE)
# from source with the Go module proxy and caches them under .cache/bin/<component>-<version>/. A
# cached binary is never rebuilt.
#
# Why from source: our machines have no Docker engine and may fetch nothing but packages from
# registries, so kind/minikube images and release tarballs are out of reach. The Go module proxy
# is reachable, and k8s.io/kubernetes is a Go module.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=versions.env
source "$ROOT/e2e/cluster/versions.env"
CACHE="${X0_CACHE:-$ROOT/.cache}"
BIN_CACHE="$CACHE/bin"
SRC_CACHE="$CACHE/gosrc"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--trimpath}"

log() { printf '[build-binaries %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v go >/dev/null || die "go is not installed; install Go >= 1.25 (https://go.dev/dl is not reachable here: use the machine's Go)"

check_proxy() {
  # Fail early and clearly when the module proxy is unreachable, rather than deep in a build.
  if ! go list -m -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" >/dev/null 2>"$CACHE/proxy-check.err"; then
    die "cannot reach the Go module proxy ($(go env GOPROXY)) to resolve k8s.io/kubernetes@${KUBERNETES_VERSION}: $(tail -n 3 "$CACHE/proxy-check.err")"
  fi
}

cached() { [[ -x "$1" ]]; }

build_kubernetes() {
  local out="$BIN_CACHE/kubernetes-$KUBERNETES_VERSION" v="$KUBERNETES_VERSION"
  local want=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  local missing=()
  for b in "${want[@]}"; do cached "$out/$b" || missing+=("$b"); done
  if ((${#missing[@]} == 0)); then log "kubernetes $v: cached in $out"; return; fi
  check_proxy
  local src="$SRC_CACHE/kubernetes-$v"
  mkdir -p "$src" "$out"
  local upstream_mod
  upstream_mod="$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  [[ -f "$upstream_mod" ]] || die "could not download the go.mod of k8s.io/kubernetes@$v"
  # k8s.io/kubernetes points its k8s.io/* staging modules at ./staging/...; outside its tree those
  # must be pinned to the published v0.<minor>.<patch> tags, or Go resolves them as @v0.0.0.
  local staging_version="v0.${v#v1.}"
  {
    echo "module x0tta6bl4.io/controlplane-build"
    echo
    echo "go $(sed -n 's/^go //p' "$upstream_mod")"
    echo "godebug default=go1.25"
    echo
    echo "require k8s.io/kubernetes $v"
    echo
    echo "replace ("
    grep -E '^\s+k8s\.io/[a-z0-9-]+ => \./staging/' "$upstream_mod" |
      awk -v sv="$staging_version" '{print "\t" $1 " => " $1 " " sv}'
    echo ")"
  } >"$src/go.mod"
  log "kubernetes $v: resolving modules (staging pinned to $staging_version)"
  (cd "$src" && go get "k8s.io/kubernetes/cmd/kube-apiserver@$v" \
      "k8s.io/kubernetes/cmd/kube-controller-manager@$v" "k8s.io/kubernetes/cmd/kube-scheduler@$v" \
      "k8s.io/kubernetes/cmd/kubectl@$v" >&2) || die "could not resolve the modules of k8s.io/kubernetes@$v"
  local minor="${v#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
    ldflags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for b in "${missing[@]}"; do
    log "kubernetes $v: building $b (slow on a cold cache)"
    (cd "$src" && go build -ldflags "$ldflags" -o "$out/$b.tmp" "k8s.io/kubernetes/cmd/$b") || die "go build of $b failed"
    mv "$out/$b.tmp" "$out/$b"
  done
}

build_etcd() {
  local out="$BIN_CACHE/etcd-$ETCD_VERSION"
  if cached "$out/etcd"; then log "etcd $ETCD_VERSION: cached"; return; fi
  check_proxy
  local src="$SRC_CACHE/etcd-$ETCD_VERSION"
  mkdir -p "$src" "$out"
  cat >"$src/main.go" <<'GO'
// A minimal etcd server binary: the same entry point as upstream's etcd command.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  printf 'module x0tta6bl4.io/etcd-build\n\ngo 1.25\n' >"$src/go.mod"
  log "etcd $ETCD_VERSION: resolving modules"
  (cd "$src" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2 && go mod tidy >&2)
  log "etcd $ETCD_VERSION: building"
  (cd "$src" && go build -ldflags "-s -w" -o "$out/etcd.tmp" .) || die "go build of etcd failed"
  mv "$out/etcd.tmp" "$out/etcd"
}

# kwok and helm have no replace directives, so `go install pkg@version` builds them as released.
build_installable() {
  local name="$1" version="$2" pkg="$3" ldflags="${4:-}"
  local out="$BIN_CACHE/$name-$version"
  if cached "$out/$name"; then log "$name $version: cached"; return; fi
  check_proxy
  mkdir -p "$out"
  log "$name $version: building"
  GOBIN="$out" go install -ldflags "-s -w $ldflags" "$pkg@$version" || die "go install of $pkg@$version failed"
}

# tool_module <name> <module> <version> <dir>: a scratch go.mod in dir, on the Go version of the
# module's own go.mod and with its module-to-module replaces (part of what upstream releases),
# for `go get -tool` of the module's commands.
tool_module() {
  local name="$1" module="$2" v="$3" src="$4" upstream_mod
  upstream_mod="$(go mod download -json "$module@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  [[ -f "$upstream_mod" ]] || die "could not download the go.mod of $module@$v"
  {
    echo "module x0tta6bl4.io/$name-build"
    echo
    echo "go $(sed -n 's/^go //p' "$upstream_mod")"
    echo
    # Single-line replaces of one module by another module version (not by a local directory).
    grep -E '^replace [^ ]+ => [^ .][^ ]* v[0-9]' "$upstream_mod" || true
  } >"$src/go.mod"
}

# Jaeger (the v2 backend, an OpenTelemetry Collector distribution) cannot be `go install`ed: its
# go.mod has replace directives. So, as for Kubernetes, a scratch module requires it as a tool,
# copies its module-to-module replaces (they are part of what upstream releases) and builds it.
build_jaeger() {
  local out="$BIN_CACHE/jaeger-$JAEGER_VERSION" v="$JAEGER_VERSION"
  if cached "$out/jaeger"; then log "jaeger $v: cached"; return; fi
  check_proxy
  local src="$SRC_CACHE/jaeger-$v"
  mkdir -p "$src" "$out"
  tool_module jaeger github.com/jaegertracing/jaeger "$v" "$src"
  log "jaeger $v: resolving modules"
  (cd "$src" && go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$v" >&2) ||
    die "could not resolve the modules of github.com/jaegertracing/jaeger@$v"
  local ldflags="-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$v"
  ldflags+=" -X github.com/jaegertracing/jaeger/internal/version.date=1970-01-01T00:00:00Z"
  log "jaeger $v: building (slow on a cold cache: several minutes)"
  (cd "$src" && go build -ldflags "$ldflags" -o "$out/jaeger.tmp" github.com/jaegertracing/jaeger/cmd/jaeger) ||
    die "go build of jaeger failed"
  mv "$out/jaeger.tmp" "$out/jaeger"
}

# SPIRE (spire-server and spire-agent, run by e2e/spire.sh) is built like Jaeger: a scratch module
# requires both commands as tools (its go.mod has no replace directives today; any module-to-module
# replace it gains is copied), and `go install` with a version is refused by the proxy here. Its
# sqlite3 datastore is github.com/mattn/go-sqlite3, which needs cgo: this build alone has
# CGO_ENABLED=1 (gcc).
build_spire() {
  local out="$BIN_CACHE/spire-$SPIRE_VERSION" v="$SPIRE_VERSION"
  local want=(spire-server spire-agent)
  local missing=()
  for b in "${want[@]}"; do cached "$out/$b" || missing+=("$b"); done
  if ((${#missing[@]} == 0)); then log "spire $v: cached in $out"; return; fi
  check_proxy
  command -v gcc >/dev/null || die "gcc is not installed; SPIRE's sqlite3 datastore needs cgo (apt-get install gcc)"
  local src="$SRC_CACHE/spire-$v"
  mkdir -p "$src" "$out"
  tool_module spire github.com/spiffe/spire "$v" "$src"
  log "spire $v: resolving modules"
  (cd "$src" && go get -tool "github.com/spiffe/spire/cmd/spire-server@$v" \
      "github.com/spiffe/spire/cmd/spire-agent@$v" >&2) ||
    die "could not resolve the modules of github.com/spiffe/spire@$v"
  # As upstream's Makefile does for a release: the version without its "v".
  local ldflags="-s -w -X github.com/spiffe/spire/pkg/common/version.gittag=${v#v}"
  for b in "${missing[@]}"; do
    log "spire $v: building $b with cgo (slow on a cold cache: several minutes)"
    (cd "$src" && CGO_ENABLED=1 go build -ldflags "$ldflags" -o "$out/$b.tmp" "github.com/spiffe/spire/cmd/$b") ||
      die "go build of $b failed"
    mv "$out/$b.tmp" "$out/$b"
  done
}

main() {
  mkdir -p "$BIN_CACHE" "$SRC_CACHE"
  local start=$SECONDS
  local what="${1:-all}"
  case "$what" in
    all | kubernetes) build_kubernetes ;;&
    all | etcd) build_etcd ;;&
    all | kwok) build_installable kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok \
      "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" ;;&
    all | helm) build_installable helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
      "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" ;;&
    all | jaeger) build_jaeger ;;&
    all | spire) build_spire ;;&
    all | kubernetes | etcd | kwok | helm | jaeger | spire) ;;
    *) die "unknown component '$what' (all|kubernetes|etcd|kwok|helm|jaeger|spire)" ;;
  esac
  log "done in $((SECONDS - start))s; binaries under $BIN_CACHE"
}

main "$@"
