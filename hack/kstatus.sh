#!/usr/bin/env bash
# A tiny command around the real kstatus library (sigs.k8s.io/cli-utils/pkg/kstatus/status), the code
# Flux's health checks (kustomize-controller, helm-controller) use to decide Current / InProgress / Failed.
# Built from the Go module proxy with the machine's Go and cached outside the repo, like the control-plane
# binaries of hack/cluster.sh (same cache root, same Go settings, same k8s.io/apimachinery release so Go's
# build cache is shared with that build).
#
#   bash hack/kstatus.sh build     build (or reuse) the binary; prints its path on stdout
#   bash hack/kstatus.sh path      print the binary's path (built or not)
#   bash hack/kstatus.sh compute   read a JSON object or a JSON list of objects on stdin, print a JSON list
#                                  of {"status": ..., "message": ...} (builds first when needed)
#
# Environment: XW_CACHE_DIR (default ~/.cache/xw-operator).
set -euo pipefail

CLI_UTILS_VERSION=v0.37.2
# The Kubernetes release hack/cluster.sh builds (its staging modules are v0.<minor>.<patch>).
APIMACHINERY_VERSION=v0.34.4

CACHE_DIR="${XW_CACHE_DIR:-$HOME/.cache/xw-operator}"
ROOT_DIR="$CACHE_DIR/tools/kstatus-cli-utils-${CLI_UTILS_VERSION}_apimachinery-${APIMACHINERY_VERSION}"
SRC_DIR="$ROOT_DIR/src"
BIN="$ROOT_DIR/bin/kstatus"

log() { printf '[kstatus %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

write_sources() {
  mkdir -p "$SRC_DIR"
  cat > "$SRC_DIR/go.mod.in" <<EOF
module xw.local/kstatus

go 1.24.0

require (
	k8s.io/apimachinery ${APIMACHINERY_VERSION}
	k8s.io/api ${APIMACHINERY_VERSION}
	sigs.k8s.io/cli-utils ${CLI_UTILS_VERSION}
)
EOF
  cat > "$SRC_DIR/main.go" <<'EOF'
// kstatus: status.Compute for each object read on stdin (one JSON object or a JSON list).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type answer struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	var objs []map[string]interface{}
	// utiljson: whole numbers become int64, as the API machinery decodes them (generation, replicas).
	if err := utiljson.Unmarshal(raw, &objs); err != nil {
		var one map[string]interface{}
		if err2 := utiljson.Unmarshal(raw, &one); err2 != nil {
			fail(fmt.Errorf("stdin is neither a JSON object nor a list of them: %v", err2))
		}
		objs = []map[string]interface{}{one}
	}
	out := make([]answer, 0, len(objs))
	for _, obj := range objs {
		res, err := status.Compute(&unstructured.Unstructured{Object: obj})
		if err != nil {
			fail(err)
		}
		out = append(out, answer{Status: res.Status.String(), Message: res.Message})
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kstatus:", err)
	os.Exit(2)
}
EOF
}

cmd_build() {
  write_sources
  # The binary is rebuilt whenever the harness source (above) changes.
  local want have
  want="$(cat "$SRC_DIR/go.mod.in" "$SRC_DIR/main.go" | sha256sum | cut -c1-16)"
  have="$(cat "$ROOT_DIR/bin/.source-hash" 2>/dev/null || true)"
  if [[ -x "$BIN" && "$want" == "$have" ]]; then echo "$BIN"; return 0; fi
  command -v go >/dev/null || die "go is required (https://go.dev/dl/)"
  # The same settings as hack/cluster.sh's builds: static, 2 compile jobs, never another toolchain.
  export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-p=2 -mod=mod"
  mkdir -p "$ROOT_DIR/bin"
  local t0=$SECONDS
  log "building kstatus (sigs.k8s.io/cli-utils ${CLI_UTILS_VERSION}) from the Go module proxy ..."
  (
    cd "$SRC_DIR"
    cp go.mod.in go.mod && rm -f go.sum
    go mod download sigs.k8s.io/cli-utils k8s.io/apimachinery k8s.io/api
    go build -trimpath -ldflags "-s -w" -o "$BIN.tmp" . && mv "$BIN.tmp" "$BIN"
  ) >&2 || die "build failed"
  echo "$want" > "$ROOT_DIR/bin/.source-hash"
  log "built $BIN in $((SECONDS - t0))s"
  echo "$BIN"
}

case "${1:-}" in
  build) cmd_build ;;
  path) echo "$BIN" ;;
  compute) bin="$(cmd_build)"; exec "$bin" ;;
  *) echo "usage: $0 build|path|compute" >&2; exit 2 ;;
esac
