#!/usr/bin/env bash
# The two GitOps health evaluators xw-operator's status must satisfy, run for real in one small Go binary
# (source: hack/gitops-health/main.go):
#
# - kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status), the library Flux's health checks
#   (kustomize-controller, helm-controller) use: Current / InProgress / Failed / Terminating;
# - gopher-lua (github.com/yuin/gopher-lua), the Lua VM Argo CD embeds, running a health script such as
#   charts/xw-operator/argocd/health.lua with the object as the global `obj`, as Argo CD does.
#
# Built from the Go module proxy with the machine's Go and cached outside the repo, like the control-plane
# binaries of hack/cluster.sh (same cache root, same Go settings, and the k8s.io/apimachinery release of
# that build, so Go's build cache is shared with it). Rebuilt when main.go or a version below changes.
#
#   bash hack/gitops-health.sh build               build (or reuse) the binary; prints its path on stdout
#   bash hack/gitops-health.sh kstatus             stdin: a JSON object or a list of objects; stdout: a JSON
#                                                  list of {"status": ..., "message": ...}
#   bash hack/gitops-health.sh argocd-lua SCRIPT   the same, judged by an Argo CD health script
#
# Environment: XW_CACHE_DIR (default ~/.cache/xw-operator).
set -euo pipefail

CLI_UTILS_VERSION=v0.37.2
GOPHER_LUA_VERSION=v1.1.2
# The Kubernetes release hack/cluster.sh builds (its staging modules are v0.<minor>.<patch>).
APIMACHINERY_VERSION=v0.34.4

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_DIR="${XW_CACHE_DIR:-$HOME/.cache/xw-operator}"
ROOT_DIR="$CACHE_DIR/tools/gitops-health_cli-utils-${CLI_UTILS_VERSION}_gopher-lua-${GOPHER_LUA_VERSION}"
SRC_DIR="$ROOT_DIR/src"
BIN="$ROOT_DIR/bin/gitops-health"

log() { printf '[gitops-health %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

go_mod() {
  cat <<GOMOD
module xw.local/gitopshealth

go 1.24.0

require (
	github.com/yuin/gopher-lua ${GOPHER_LUA_VERSION}
	k8s.io/api ${APIMACHINERY_VERSION}
	k8s.io/apimachinery ${APIMACHINERY_VERSION}
	sigs.k8s.io/cli-utils ${CLI_UTILS_VERSION}
)
GOMOD
}

cmd_build() {
  local want have
  want="$( { go_mod; cat "$HERE/gitops-health/main.go"; } | sha256sum | cut -c1-16)"
  have="$(cat "$ROOT_DIR/bin/.source-hash" 2>/dev/null || true)"
  if [[ -x "$BIN" && "$want" == "$have" ]]; then echo "$BIN"; return 0; fi
  command -v go >/dev/null || die "go is required (https://go.dev/dl/)"
  # The same settings as hack/cluster.sh's builds: static, 2 compile jobs, never another toolchain.
  export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-p=2 -mod=mod"
  mkdir -p "$SRC_DIR" "$ROOT_DIR/bin"
  local t0=$SECONDS
  log "building gitops-health (kstatus of cli-utils ${CLI_UTILS_VERSION}, gopher-lua ${GOPHER_LUA_VERSION}) from the Go module proxy ..."
  (
    cd "$SRC_DIR"
    go_mod > go.mod && rm -f go.sum
    cp "$HERE/gitops-health/main.go" main.go
    go mod download sigs.k8s.io/cli-utils k8s.io/apimachinery k8s.io/api github.com/yuin/gopher-lua
    go build -trimpath -ldflags "-s -w" -o "$BIN.tmp" . && mv "$BIN.tmp" "$BIN"
  ) >&2 || die "build failed"
  echo "$want" > "$ROOT_DIR/bin/.source-hash"
  log "built $BIN in $((SECONDS - t0))s"
  echo "$BIN"
}

case "${1:-}" in
  build) cmd_build ;;
  path) echo "$BIN" ;;
  kstatus) bin="$(cmd_build)"; exec "$bin" kstatus ;;
  argocd-lua) [[ -n "${2:-}" ]] || die "argocd-lua needs a script path"; bin="$(cmd_build)"; exec "$bin" argocd-lua "$2" ;;
  *) echo "usage: $0 build|path|kstatus|argocd-lua SCRIPT" >&2; exit 2 ;;
esac
