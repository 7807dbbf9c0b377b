#!/usr/bin/env bash
# Local loopback Kubernetes control plane for tests and the demo -- no Docker, no image registry.
#
#   bash hack/cluster.sh build           build (or reuse) etcd, kube-apiserver, kube-controller-manager,
#                                        kube-scheduler, kubectl, kwok, helm into the cache, then the
#                                        LeaderWorkerSet controller (its own cache dir, keyed by version)
#   bash hack/cluster.sh up              start etcd + control plane + kwok + fake accelerator nodes +
#                                        the LeaderWorkerSet CRD, controller and its webhooks;
#                                        last lines on stdout: export KUBECONFIG=... / export PATH=...
#   bash hack/cluster.sh build-lws       build (or reuse) only the LeaderWorkerSet controller
#   bash hack/cluster.sh down            stop every process `up` started (by recorded pid), wipe etcd data
#   bash hack/cluster.sh env             print the export lines without starting anything
#   bash hack/cluster.sh status          show which recorded processes are alive
#   bash hack/cluster.sh restart C [S]   stop component C (etcd, kube-apiserver, ...) and start it again
#                                        with the very same arguments after S seconds (fault tests)
#   bash hack/cluster.sh audit-log-path  print the apiserver audit log path
#   bash hack/cluster.sh bin-dir         print the directory holding the binaries
#
# Environment overrides:
#   XW_CACHE_DIR     cache root (default ~/.cache/xw-operator)
#   XW_CLUSTER_DIR   state dir  (default $XW_CACHE_DIR/cluster)
#   XW_ETCD_PORT (12379) XW_ETCD_PEER_PORT (12380) XW_APISERVER_PORT (16443)
#   XW_KCM_PORT (16257) XW_SCHEDULER_PORT (16259) XW_KWOK_PORT (16080)
#   XW_SERVICE_CIDR (10.96.0.0/16)
#   XW_LWS_WEBHOOK_PORT (XW_KWOK_PORT+1) XW_LWS_HEALTH_PORT (XW_KWOK_PORT+2)
#   XW_LWS=0         do not install/start the LeaderWorkerSet controller (multi-node instances then wait)
set -euo pipefail

K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.19.5
# LeaderWorkerSet (sigs.k8s.io/lws): v0.8.0 is the newest release built against the k8s v0.34 client
# libraries (v0.9+ moved to v0.36); its go.mod's go 1.25 builds with any newer local Go.
LWS_VERSION=v0.8.0

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_DIR="${XW_CACHE_DIR:-$HOME/.cache/xw-operator}"
TUPLE="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
ROOT_DIR="$CACHE_DIR/k8s/$TUPLE"
BIN_DIR="$ROOT_DIR/bin"
SRC_DIR="$ROOT_DIR/src"
STAMP="$ROOT_DIR/stamp"
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm)
# The LWS controller has its own cache dir and stamp, so adding or bumping it never invalidates the
# (24-minute) control-plane build above.
LWS_ROOT="$CACHE_DIR/lws/$LWS_VERSION"
LWS_BIN="$LWS_ROOT/bin/lws-controller"
LWS_STAMP="$LWS_ROOT/stamp"

STATE="${XW_CLUSTER_DIR:-$CACHE_DIR/cluster}"
ETCD_PORT="${XW_ETCD_PORT:-12379}"
ETCD_PEER_PORT="${XW_ETCD_PEER_PORT:-12380}"
APISERVER_PORT="${XW_APISERVER_PORT:-16443}"
KCM_PORT="${XW_KCM_PORT:-16257}"
SCHEDULER_PORT="${XW_SCHEDULER_PORT:-16259}"
KWOK_PORT="${XW_KWOK_PORT:-16080}"
LWS_WEBHOOK_PORT="${XW_LWS_WEBHOOK_PORT:-$((KWOK_PORT + 1))}"
LWS_HEALTH_PORT="${XW_LWS_HEALTH_PORT:-$((KWOK_PORT + 2))}"
WITH_LWS="${XW_LWS:-1}"
SERVICE_CIDR="${XW_SERVICE_CIDR:-10.96.0.0/16}"
KUBECONFIG_PATH="$STATE/kubeconfig"
AUDIT_LOG="$STATE/audit.log"

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------- build

# Go settings shared by every build: static binaries, 2 parallel compile jobs (2-core machines), never
# download a different toolchain.
go_env() {
  export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-p=2 -mod=mod"
}

# Expected version string fragment printed by "<bin> --version" (or equivalent).
want_version() {
  case "$1" in
    etcd) echo "${ETCD_VERSION#v}" ;;
    kwok) echo "${KWOK_VERSION#v}" ;;
    helm) echo "${HELM_VERSION}" ;;
    *) echo "${K8S_VERSION}" ;;
  esac
}

# Print the version output of binary $1 at path $2 (empty on failure).
version_of() {
  # Full output first, then the first line: piping into `head -1` could SIGPIPE the binary and, with
  # pipefail, make a good binary look broken.
  local name="$1" path="$2" out
  case "$name" in
    helm) out="$("$path" version --short 2>/dev/null)" ;;
    kubectl) out="$("$path" version --client 2>/dev/null)" ;;
    *) out="$("$path" --version 2>/dev/null)" ;;
  esac || return 1
  printf '%s\n' "${out%%$'\n'*}"
}

version_ok() { # name path
  local v
  v="$(version_of "$1" "$2")" || return 1
  [[ "$v" == *"$(want_version "$1")"* ]]
}

# Try to reuse an already-installed binary of the right version (PATH or KUBEBUILDER_ASSETS).
reuse_existing() {
  local name="$1" cand
  for cand in "${KUBEBUILDER_ASSETS:+$KUBEBUILDER_ASSETS/$name}" "$(command -v "$name" 2>/dev/null || true)"; do
    [[ -n "$cand" && -x "$cand" && "$cand" != "$BIN_DIR/$name" ]] || continue
    if version_ok "$name" "$cand"; then
      log "reusing $cand ($(version_of "$name" "$cand"))"
      cp "$cand" "$BIN_DIR/$name.tmp" && mv "$BIN_DIR/$name.tmp" "$BIN_DIR/$name"
      return 0
    fi
  done
  return 1
}

# Run a build command in the background with an elapsed-time ticker.
run_timed() {
  local what="$1"; shift
  local start=$SECONDS
  log "building $what ..."
  # the ticker kills its own sleep on TERM so no stray `sleep` outlives the build
  ( trap 'kill "${sp:-}" 2>/dev/null; exit 0' TERM
    while :; do sleep 60 & sp=$!; wait "$sp"; log "  ... still building $what ($((SECONDS - start))s)"; done ) &
  local ticker=$!
  local rc=0
  "$@" || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  if [[ $rc -ne 0 ]]; then die "build of $what failed (rc=$rc)"; fi
  log "built $what in $((SECONDS - start))s"
}

k8s_module_dir() {
  go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p'
}

# Wrapper module: k8s.io/kubernetes replaces its k8s.io/* staging modules with local paths, which only
# apply when it is the main module. Here we require it and replace every staging module with the
# published v0.X.Y tag of the same release.
prepare_k8s_wrapper() {
  local dir="$SRC_DIR/kubernetes" gomod staging
  mkdir -p "$dir"
  [[ -f "$dir/.ready" ]] && return 0
  gomod="$(k8s_module_dir)"
  [[ -f "$gomod" ]] || die "could not download k8s.io/kubernetes@${K8S_VERSION}"
  staging="v0.${K8S_VERSION#v1.}"
  {
    echo "module xw.local/k8sbuild"
    echo
    echo "go 1.24.0"
    echo
    echo "godebug default=go1.24"
    echo
    echo "require k8s.io/kubernetes ${K8S_VERSION}"
    echo
    echo "replace ("
    sed -n '/^replace (/,/^)/p' "$gomod" | awk '$2=="=>" && $3 ~ /^\.\/staging/ {print "\t" $1 " => " $1 " '"$staging"'"}'
    echo ")"
  } > "$dir/go.mod"
  cat > "$dir/tools.go" <<'EOF'
package k8sbuild
EOF
  log "k8s wrapper module at $dir ($(grep -c '=>' "$dir/go.mod") staging replaces -> $staging)"
  (cd "$dir" && go mod download k8s.io/kubernetes) || die "go mod download failed"
  touch "$dir/.ready"
}

k8s_ldflags() {
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local f="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f+=" -X $p.gitVersion=${K8S_VERSION} -X $p.gitMajor=1 -X $p.gitMinor=${minor}"
    f+=" -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.gitTreeState=clean"
    f+=" -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$f"
}

build_k8s() { # name
  local name="$1"
  prepare_k8s_wrapper
  run_timed "$name ${K8S_VERSION}" bash -c 'cd "$1" && go build -trimpath -ldflags "$2" -o "$3.tmp" "k8s.io/kubernetes/cmd/$4" && mv "$3.tmp" "$3"' \
    _ "$SRC_DIR/kubernetes" "$(k8s_ldflags)" "$BIN_DIR/$1" "$1"
}

build_etcd() {
  local dir="$SRC_DIR/etcd"
  mkdir -p "$dir"
  # go.etcd.io/etcd/server/v3 holds etcdmain but no main package; the v3 root module's main.go is just
  # etcdmain.Main(os.Args), so a two-line main in a wrapper module builds the same server.
  cat > "$dir/go.mod" <<EOF
module xw.local/etcdbuild

go 1.26.0

require go.etcd.io/etcd/server/v3 ${ETCD_VERSION}
EOF
  cat > "$dir/main.go" <<'EOF'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  run_timed "etcd ${ETCD_VERSION}" bash -c 'cd "$1" && go build -trimpath -ldflags "-s -w" -o "$2.tmp" . && mv "$2.tmp" "$2"' \
    _ "$dir" "$BIN_DIR/etcd"
}

build_kwok() {
  run_timed "kwok ${KWOK_VERSION}" bash -c 'GOBIN="$1/.gobin" GOFLAGS=-p=2 go install -trimpath \
      -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${2#v}" "sigs.k8s.io/kwok/cmd/kwok@$2" \
      && mv "$1/.gobin/kwok" "$1/kwok"' _ "$BIN_DIR" "$KWOK_VERSION"
}

build_helm() {
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local f="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  f+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${minor}"
  f+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${minor}"
  run_timed "helm ${HELM_VERSION}" bash -c 'GOBIN="$1/.gobin" GOFLAGS=-p=2 go install -trimpath -ldflags "$3" \
      "helm.sh/helm/v3/cmd/helm@$2" && mv "$1/.gobin/helm" "$1/helm"' _ "$BIN_DIR" "$HELM_VERSION" "$f"
}


# ---------------------------------------------------------------------------------------------- LWS

# The files `up` needs from the LWS module source, copied next to the binary so `up` never needs Go or
# the module cache: the CRD, the manager's ClusterRole (the controller runs with exactly those rights)
# and the webhook manifest (checked: the paths `up` registers must be the ones this version serves).
LWS_FILES=(config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml config/rbac/role.yaml config/webhook/manifests.yaml)
LWS_WEBHOOK_PATHS=(/mutate-leaderworkerset-x-k8s-io-v1-leaderworkerset /validate-leaderworkerset-x-k8s-io-v1-leaderworkerset /mutate--v1-pod /validate--v1-pod)

lws_version_ok() {
  [[ -x "$LWS_BIN" ]] || return 1
  local v; v="$("$LWS_BIN" --version 2>/dev/null)" || return 1
  [[ "$v" == *"Version: $LWS_VERSION"* ]]
}

lws_stamp_matches() {
  [[ -f "$LWS_STAMP" ]] && grep -qx "lws=$LWS_VERSION" "$LWS_STAMP" && lws_version_ok || return 1
  local f; for f in "${LWS_FILES[@]}"; do [[ -s "$LWS_ROOT/files/$(basename "$f")" ]] || return 1; done
}

# `go install sigs.k8s.io/lws/cmd@vX` would need the proxy's version list (it loads deprecation notices),
# which some proxies refuse; a wrapper module that requires the exact version and builds its main
# package needs only that version's files.
build_lws() {
  local src="$LWS_ROOT/src" dir f p
  mkdir -p "$src" "$LWS_ROOT/bin" "$LWS_ROOT/files"
  cat > "$src/go.mod" <<EOF
module xw.local/lwsbuild

go 1.25.0

require sigs.k8s.io/lws ${LWS_VERSION}
EOF
  echo "package lwsbuild" > "$src/tools.go"
  (cd "$src" && go mod download sigs.k8s.io/lws) || die "could not download sigs.k8s.io/lws@${LWS_VERSION}"
  run_timed "lws-controller ${LWS_VERSION}" bash -c 'cd "$1" && go build -trimpath \
      -ldflags "-s -w -X sigs.k8s.io/lws/pkg/version.GitVersion=$2" -o "$3.tmp" sigs.k8s.io/lws/cmd && mv "$3.tmp" "$3"' \
    _ "$src" "$LWS_VERSION" "$LWS_BIN"
  dir="$(cd "$src" && go list -m -f '{{.Dir}}' sigs.k8s.io/lws)"
  [[ -d "$dir" ]] || die "sigs.k8s.io/lws@${LWS_VERSION} source not found in the module cache"
  for f in "${LWS_FILES[@]}"; do
    [[ -f "$dir/$f" ]] || die "sigs.k8s.io/lws@${LWS_VERSION} has no $f"
    install -m 644 "$dir/$f" "$LWS_ROOT/files/$(basename "$f")"
  done
  for p in "${LWS_WEBHOOK_PATHS[@]}"; do
    grep -q "path: $p\$" "$LWS_ROOT/files/manifests.yaml" || die "lws ${LWS_VERSION} does not serve webhook path $p"
  done
  lws_version_ok || die "lws-controller built but reports '$("$LWS_BIN" --version 2>&1 | head -1)'"
  printf 'lws=%s\ngo=%s\nbuilt=%s\nsha256=%s\n' "$LWS_VERSION" "$(go env GOVERSION)" \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(sha256sum "$LWS_BIN" | cut -d' ' -f1)" > "$LWS_STAMP.tmp"
  mv "$LWS_STAMP.tmp" "$LWS_STAMP"
  log "lws-controller ${LWS_VERSION} ready in $LWS_ROOT"
}

cmd_build_lws() {
  command -v go >/dev/null || die "go is required (https://go.dev/dl/)"
  go_env
  if lws_stamp_matches; then log "reusing cached lws-controller ${LWS_VERSION} ($LWS_ROOT)"; return 0; fi
  build_lws
}

stamp_matches() {
  [[ -f "$STAMP" ]] || return 1
  grep -qx "tuple=$TUPLE" "$STAMP" || return 1
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$BIN_DIR/$b" ]] || return 1; done
  return 0
}

cmd_build() {
  command -v go >/dev/null || die "go is required (https://go.dev/dl/)"
  go_env
  mkdir -p "$BIN_DIR" "$SRC_DIR"
  if stamp_matches; then
    local b bad=0
    for b in "${BINARIES[@]}"; do
      version_ok "$b" "$BIN_DIR/$b" || { log "$b in cache has wrong version: $(version_of "$b" "$BIN_DIR/$b")"; bad=1; }
    done
    if [[ $bad -eq 0 ]]; then
      log "reusing cached binaries in $BIN_DIR ($TUPLE)"
      cmd_build_lws
      return 0
    fi
  fi
  local total_start=$SECONDS b
  log "building into $BIN_DIR (Go $(go env GOVERSION), GOFLAGS=$GOFLAGS; the first build takes tens of minutes on 2 cores)"
  # Order: what `up` needs first, helm last.
  for b in etcd kube-apiserver kwok kube-controller-manager kube-scheduler kubectl helm; do
    if [[ -x "$BIN_DIR/$b" ]] && version_ok "$b" "$BIN_DIR/$b"; then
      log "$b already built ($(version_of "$b" "$BIN_DIR/$b"))"
      continue
    fi
    reuse_existing "$b" && continue
    case "$b" in
      etcd) build_etcd ;;
      kwok) build_kwok ;;
      helm) build_helm ;;
      *) build_k8s "$b" ;;
    esac
    version_ok "$b" "$BIN_DIR/$b" || die "$b built but reports '$(version_of "$b" "$BIN_DIR/$b")', want $(want_version "$b")"
  done
  {
    echo "tuple=$TUPLE"
    echo "go=$(go env GOVERSION)"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    for b in "${BINARIES[@]}"; do echo "$b=$(version_of "$b" "$BIN_DIR/$b") sha256=$(sha256sum "$BIN_DIR/$b" | cut -d' ' -f1)"; done
  } > "$STAMP.tmp" && mv "$STAMP.tmp" "$STAMP"
  log "all binaries ready in $BIN_DIR ($((SECONDS - total_start))s)"
  cmd_build_lws
}

# ---------------------------------------------------------------------------------------------- up/down

COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
# Started last, stopped first: while it is down, its webhooks (scoped to LWS objects and LWS pods only)
# would refuse those objects, never anything else.
[[ "$WITH_LWS" == 1 ]] && COMPONENTS+=(lws-controller)

print_env() {
  echo "export KUBECONFIG=$KUBECONFIG_PATH"
  echo "export PATH=$BIN_DIR:\$PATH"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid recorded for component $1 if that process is still alive and is really ours (cmdline check, so
# a recycled pid of an unrelated process is never signalled).
live_pid() {
  local f="$STATE/pids/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "/$1 " || return 1
  echo "$pid"
}

kctl() { "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

# ECDSA P-256 keys: generated instantly (RSA-2048 x7 took ~20 s on a busy 2-core machine); the
# apiserver accepts them for serving, client certs and service-account token signing (ES256).
genkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }

gen_cert() { # name CN O [san]
  local name="$1" cn="$2" o="$3" san="${4:-}" pki="$STATE/pki"
  [[ -f "$pki/$name.crt" ]] && return 0
  genkey "$pki/$name.key"
  local subj="/CN=$cn"; [[ -n "$o" ]] && subj="/O=$o/CN=$cn"
  openssl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    if [[ -n "$san" ]]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$san"
    else echo "extendedKeyUsage=clientAuth"; fi
  } > "$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}

first_service_ip() { # 10.96.0.0/16 -> 10.96.0.1
  local net="${SERVICE_CIDR%/*}"
  echo "${net%.*}.$(( ${net##*.} + 1 ))"
}

gen_pki() {
  local pki="$STATE/pki"
  mkdir -p "$pki"; chmod 700 "$pki"
  if [[ ! -f "$pki/ca.crt" ]]; then
    genkey "$pki/ca.key"
    openssl req -x509 -new -nodes -key "$pki/ca.key" -subj "/CN=xw-local-ca" -days 3650 -sha256 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$pki/ca.crt" 2>/dev/null
  fi
  gen_cert apiserver kube-apiserver "" \
    "IP:127.0.0.1,IP:$(first_service_ip),DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  gen_cert admin xw-admin system:masters
  gen_cert kube-controller-manager system:kube-controller-manager ""
  gen_cert kube-scheduler system:kube-scheduler ""
  gen_cert kwok kwok-controller system:masters
  if [[ "$WITH_LWS" == 1 ]]; then
    # Its own identity, bound to the ClusterRole shipped with the LWS module (not system:masters), and a
    # serving certificate for its webhooks on 127.0.0.1 signed by the cluster CA (the caBundle).
    gen_cert lws-controller lws-controller ""
    gen_cert lws-webhook lws-webhook "" "IP:127.0.0.1,DNS:localhost"
  fi
  if [[ ! -f "$pki/sa.key" ]]; then
    genkey "$pki/sa.key"
    openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  fi
}

write_kubeconfig() { # file user-cert-name user
  local file="$1" name="$2" user="$3" pki="$STATE/pki"
  cat > "$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: xw-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $pki/ca.crt
users:
- name: $user
  user:
    client-certificate: $pki/$name.crt
    client-key: $pki/$name.key
contexts:
- name: xw-local
  context:
    cluster: xw-local
    user: $user
    namespace: default
current-context: xw-local
EOF
  chmod 600 "$file.tmp"; mv "$file.tmp" "$file"
}

write_audit_policy() {
  # Metadata level for every write verb; reads and the (very chatty) Lease renewals are not logged.
  cat > "$STATE/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  resources:
  - group: coordination.k8s.io
    resources: ["leases"]
- level: Metadata
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: None
EOF
}

start_component() { # name args...
  local name="$1"; shift
  start_component_bin "$name" "$BIN_DIR/$name" "$@"
}

start_component_bin() { # name path args...
  local name="$1" bin="$2"; shift 2
  # stdin/stdout/stderr detached so callers capturing our output (pytest, make | tee) never wait on them;
  # setsid so a Ctrl-C in the calling terminal does not kill the cluster.
  # 9>&- : the lock fd must not be inherited, or the daemons would hold the up/down lock forever.
  setsid "$bin" "$@" < /dev/null >> "$STATE/logs/$name.log" 2>&1 9>&- &
  echo $! > "$STATE/pids/$name.pid"
  log "started $name (pid $!)"
}

wait_for() { # description timeout-seconds command...
  local what="$1" timeout="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then log "timed out after ${timeout}s waiting for $what"; return 1; fi
    local c; for c in "${COMPONENTS[@]}"; do
      if [[ -f "$STATE/pids/$c.pid" ]] && ! live_pid "$c" >/dev/null; then
        log "$c exited; last log lines ($STATE/logs/$c.log):"; tail -n 20 "$STATE/logs/$c.log" >&2 || true
        return 1
      fi
    done
    sleep 0.5
  done
}

all_running() {
  local c
  for c in "${COMPONENTS[@]}"; do live_pid "$c" >/dev/null || return 1; done
  kctl --request-timeout=5s get --raw /readyz >/dev/null 2>&1
}

nodes_ready() {
  local n
  n="$(kctl get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$')"
  [[ "$n" -ge "$(grep -c '^kind: Node' "$HERE/cluster/kwok-nodes.yaml")" ]]
}

# openssl (certificates) and curl (health checks) come with Debian's standard images; install them
# when a minimal machine lacks them, so `up` never fails half-way for a missing tool.
ensure_host_tools() {
  local want=()
  command -v openssl >/dev/null 2>&1 || want+=(openssl)
  command -v curl >/dev/null 2>&1 || want+=(curl)
  command -v flock >/dev/null 2>&1 || want+=(util-linux)
  ((${#want[@]})) || return 0
  command -v apt-get >/dev/null 2>&1 || die "missing ${want[*]}; install them (no apt-get here)"
  log "installing ${want[*]} (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >&2
}

cmd_up() {
  local t0=$SECONDS
  ensure_host_tools
  stamp_matches || cmd_build
  [[ "$WITH_LWS" != 1 ]] || lws_stamp_matches || cmd_build_lws
  mkdir -p "$STATE"/{pids,logs}
  exec 9> "$STATE/lock"
  flock -w 120 9 || die "another 'cluster.sh up/down' holds $STATE/lock"
  if all_running; then
    log "cluster already up ($STATE)"
    print_env
    return 0
  fi
  if ls "$STATE"/pids/*.pid >/dev/null 2>&1; then
    log "partial cluster found (some recorded processes are dead); stopping it first"
    stop_all
  fi
  local p
  local ports=("$ETCD_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$KCM_PORT" "$SCHEDULER_PORT" "$KWOK_PORT")
  [[ "$WITH_LWS" == 1 ]] && ports+=("$LWS_WEBHOOK_PORT" "$LWS_HEALTH_PORT")
  for p in "${ports[@]}"; do
    port_in_use "$p" && die "port 127.0.0.1:$p is already in use; free it or override XW_*_PORT (see hack/cluster.sh header)"
  done
  gen_pki
  write_kubeconfig "$KUBECONFIG_PATH" admin xw-admin
  write_kubeconfig "$STATE/kube-controller-manager.kubeconfig" kube-controller-manager system:kube-controller-manager
  write_kubeconfig "$STATE/kube-scheduler.kubeconfig" kube-scheduler system:kube-scheduler
  write_kubeconfig "$STATE/kwok.kubeconfig" kwok kwok-controller
  write_audit_policy
  rm -rf "$STATE/etcd"
  # Fresh cluster, fresh logs: the previous run's audit log and component logs are kept as *.prev.
  local f
  for f in "$AUDIT_LOG" "$STATE"/logs/*.log; do [[ -f "$f" ]] && mv -f "$f" "$f.prev"; done
  local pki="$STATE/pki"

  start_component etcd --name xw --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "xw=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --log-level warn
  wait_for etcd 20 curl -sf "http://127.0.0.1:$ETCD_PORT/health" || { stop_all; die "etcd did not start"; }

  # --endpoint-reconciler-type none: the endpoints of the `kubernetes` Service may not be a loopback IP,
  # so the default lease reconciler would only log errors; nothing here runs in-cluster.
  start_component kube-apiserver \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --cert-dir "$pki" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --authorization-mode RBAC \
    --allow-privileged=true \
    --endpoint-reconciler-type none \
    --audit-policy-file "$STATE/audit-policy.yaml" --audit-log-path "$AUDIT_LOG" \
    --audit-log-maxsize 200 --audit-log-maxbackup 1 --audit-log-mode blocking \
    --v 1
  wait_for "kube-apiserver /readyz" 60 kctl --request-timeout=5s get --raw /readyz || { stop_all; die "kube-apiserver did not become ready"; }
  log "kube-apiserver ready ($((SECONDS - t0))s)"

  start_component kube-controller-manager \
    --kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --cert-dir "$STATE/kcm-certs" \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --use-service-account-credentials=true --service-cluster-ip-range "$SERVICE_CIDR" \
    --leader-elect=false --controllers '*' --v 1
  start_component kube-scheduler \
    --kubeconfig "$STATE/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig "$STATE/kube-scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --cert-dir "$STATE/scheduler-certs" \
    --leader-elect=false --v 1
  start_component kwok \
    --kubeconfig "$STATE/kwok.kubeconfig" --config "$HERE/cluster/kwok-stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --cidr 10.244.0.1/16 --node-ip 10.0.0.1 --node-lease-duration-seconds 40 \
    --server-address "127.0.0.1:$KWOK_PORT"

  kctl apply -f "$HERE/cluster/kwok-nodes.yaml" >/dev/null || { stop_all; die "could not create kwok nodes"; }
  wait_for "kwok nodes Ready" 60 nodes_ready || { stop_all; die "kwok nodes did not become Ready"; }
  wait_for "default ServiceAccount" 60 kctl get serviceaccount default -n default || { stop_all; die "no default ServiceAccount"; }
  if [[ "$WITH_LWS" == 1 ]]; then
    start_lws || { stop_all; die "LeaderWorkerSet controller did not start (log: $STATE/logs/lws-controller.log)"; }
  fi
  log "cluster up in $((SECONDS - t0))s; state $STATE; audit log $AUDIT_LOG"
  print_env
}


# ---------------------------------------------------------------------------------------------- LWS up

# The LWS manager normally runs in-cluster behind a Service and rotates its own webhook certificate
# (internalCertManagement). Here it runs on the host: cert management is off, it serves its webhooks on
# 127.0.0.1 with a certificate from this cluster's CA, and the webhook configurations point the API
# server at that address (clientConfig.url + caBundle). The webhooks are kept, not disabled: the pod
# webhook is what labels group/worker indices, injects LWS_LEADER_ADDRESS/LWS_GROUP_SIZE/LWS_WORKER_INDEX
# and applies exclusive placement -- without it the controller's groups would not work.
write_lws_config() {
  cat > "$STATE/lws-config.yaml" <<EOF
apiVersion: config.lws.x-k8s.io/v1alpha1
kind: Configuration
leaderElection:
  leaderElect: false
health:
  healthProbeBindAddress: 127.0.0.1:$LWS_HEALTH_PORT
metrics:
  bindAddress: "0"
webhook:
  host: 127.0.0.1
  port: $LWS_WEBHOOK_PORT
  certDir: $STATE/lws-certs
internalCertManagement:
  enable: false
EOF
  mkdir -p "$STATE/lws-certs"
  install -m 600 "$STATE/pki/lws-webhook.crt" "$STATE/lws-certs/tls.crt"
  install -m 600 "$STATE/pki/lws-webhook.key" "$STATE/lws-certs/tls.key"
}

# Same webhooks, rules and object selectors as the module's kustomize output (config/webhook/ +
# its patches), with the Service reference replaced by the loopback URL.
lws_webhook_configs() {
  local ca url="https://127.0.0.1:$LWS_WEBHOOK_PORT"
  ca="$(base64 -w0 < "$STATE/pki/ca.crt")"
  local pods_only='    objectSelector:
      matchExpressions:
      - key: leaderworkerset.sigs.k8s.io/name
        operator: Exists'
  cat <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: lws-mutating-webhook-configuration
webhooks:
  - name: mleaderworkerset.kb.io
    admissionReviewVersions: [v1]
    clientConfig: {url: "$url/mutate-leaderworkerset-x-k8s-io-v1-leaderworkerset", caBundle: "$ca"}
    failurePolicy: Fail
    sideEffects: None
    rules: [{apiGroups: [leaderworkerset.x-k8s.io], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [leaderworkersets]}]
  - name: mpod.kb.io
    admissionReviewVersions: [v1]
    clientConfig: {url: "$url/mutate--v1-pod", caBundle: "$ca"}
    failurePolicy: Fail
    sideEffects: None
$pods_only
    rules: [{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods]}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: lws-validating-webhook-configuration
webhooks:
  - name: vleaderworkerset.kb.io
    admissionReviewVersions: [v1]
    clientConfig: {url: "$url/validate-leaderworkerset-x-k8s-io-v1-leaderworkerset", caBundle: "$ca"}
    failurePolicy: Fail
    sideEffects: None
    rules: [{apiGroups: [leaderworkerset.x-k8s.io], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [leaderworkersets]}]
  - name: vpod.kb.io
    admissionReviewVersions: [v1]
    clientConfig: {url: "$url/validate--v1-pod", caBundle: "$ca"}
    failurePolicy: Fail
    sideEffects: None
$pods_only
    rules: [{apiGroups: [""], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [pods]}]
EOF
}

lws_crd_established() {
  [[ "$(kctl get crd leaderworkersets.leaderworkerset.x-k8s.io \
    -o jsonpath='{.status.conditions[?(@.type=="Established")].status}')" == True ]]
}

lws_webhook_serving() {
  curl -s -o /dev/null --cacert "$STATE/pki/ca.crt" "https://127.0.0.1:$LWS_WEBHOOK_PORT/"
}

start_lws() {
  local t0=$SECONDS files="$LWS_ROOT/files"
  log "installing LeaderWorkerSet ${LWS_VERSION} CRD and RBAC"
  # Server-side: the CRD (a whole pod template schema, twice) is too large for kubectl's
  # last-applied-configuration annotation.
  kctl apply --server-side --field-manager xw-cluster -f "$files/leaderworkerset.x-k8s.io_leaderworkersets.yaml" >/dev/null \
    || return 1
  sed 's/^  name: manager-role$/  name: lws-manager-role/' "$files/role.yaml" | kctl apply -f - >/dev/null || return 1
  kctl create clusterrolebinding lws-manager-rolebinding --clusterrole lws-manager-role --user lws-controller \
    --dry-run=client -o yaml | kctl apply -f - >/dev/null || return 1
  # (not `kubectl wait`: it fails at once while the new CRD has no status.conditions yet)
  wait_for "LeaderWorkerSet CRD established" 60 lws_crd_established || return 1
  write_kubeconfig "$STATE/lws-controller.kubeconfig" lws-controller lws-controller
  write_lws_config
  KUBECONFIG="$STATE/lws-controller.kubeconfig" start_component_bin lws-controller "$LWS_BIN" \
    --config "$STATE/lws-config.yaml" --zap-devel=false --zap-log-level=info
  wait_for "lws-controller /readyz" 60 curl -sf "http://127.0.0.1:$LWS_HEALTH_PORT/readyz" || return 1
  wait_for "lws webhook server on 127.0.0.1:$LWS_WEBHOOK_PORT" 60 lws_webhook_serving || return 1
  lws_webhook_configs | kctl apply -f - >/dev/null || return 1
  log "lws-controller ${LWS_VERSION} up, webhooks on https://127.0.0.1:$LWS_WEBHOOK_PORT ($((SECONDS - t0))s)"
}

stop_all() {
  local c pid pids=() i
  # reverse start order: kwok and controllers first, etcd last
  for (( i=${#COMPONENTS[@]}-1; i>=0; i-- )); do
    c="${COMPONENTS[$i]}"
    if pid="$(live_pid "$c")"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid:$c")
    fi
  done
  local deadline=$((SECONDS + 10)) entry left
  while :; do
    left=0
    for entry in "${pids[@]}"; do [[ -d "/proc/${entry%%:*}" ]] && left=1; done
    (( left == 0 || SECONDS >= deadline )) && break
    sleep 0.2
  done
  for entry in "${pids[@]}"; do
    if [[ -d "/proc/${entry%%:*}" ]]; then
      log "${entry#*:} (pid ${entry%%:*}) ignored SIGTERM; sending SIGKILL"
      kill -KILL "${entry%%:*}" 2>/dev/null || true
    fi
  done
  for entry in "${pids[@]}"; do
    while [[ -d "/proc/${entry%%:*}" ]] && ! grep -q '^State:.*Z' "/proc/${entry%%:*}/status" 2>/dev/null; do sleep 0.1; done
    log "stopped ${entry#*:} (pid ${entry%%:*})"
  done
  rm -f "$STATE"/pids/*.pid
  rm -rf "$STATE/etcd"
}

cmd_down() {
  if [[ ! -d "$STATE" ]]; then log "nothing to stop ($STATE does not exist)"; return 0; fi
  mkdir -p "$STATE/pids"
  exec 9> "$STATE/lock"
  flock -w 120 9 || die "another 'cluster.sh up/down' holds $STATE/lock"
  stop_all
  log "cluster down ($STATE)"
}

# Fault injection: restart one component exactly as `up` started it (its argv is read back from /proc),
# optionally staying down for a while. etcd keeps its data directory, so the cluster state survives.
cmd_restart() {
  local c="${1:-}" down="${2:-0}" pid args=()
  [[ " ${COMPONENTS[*]} " == *" $c "* ]] || die "usage: $0 restart {${COMPONENTS[*]}} [seconds-down]"
  pid="$(live_pid "$c")" || die "$c is not running"
  mapfile -d '' args < "/proc/$pid/cmdline"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 15))
  while [[ -d "/proc/$pid" ]] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; do
    if (( SECONDS >= deadline )); then kill -KILL "$pid" 2>/dev/null || true; fi
    sleep 0.1
  done
  log "stopped $c (pid $pid); starting it again in ${down}s"
  sleep "$down"
  start_component "$c" "${args[@]:1}"
  case "$c" in
    etcd) wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health" || die "etcd did not come back" ;;
    kube-apiserver) wait_for "kube-apiserver /readyz" 60 kctl --request-timeout=5s get --raw /readyz || die "kube-apiserver did not come back" ;;
  esac
  log "$c restarted"
}

cmd_status() {
  local c pid
  for c in "${COMPONENTS[@]}"; do
    if pid="$(live_pid "$c")"; then echo "$c running (pid $pid)"; else echo "$c stopped"; fi
  done
}

# ---------------------------------------------------------------------------------------------- main

case "${1:-}" in
  build) cmd_build ;;
  build-lws) cmd_build_lws ;;
  up) cmd_up ;;
  down) cmd_down ;;
  env) print_env ;;
  status) cmd_status ;;
  restart) shift; cmd_restart "$@" ;;
  bin-dir) echo "$BIN_DIR" ;;
  audit-log-path) echo "$AUDIT_LOG" ;;
  *) echo "usage: $0 build|build-lws|up|down|env|status|restart|audit-log-path|bin-dir" >&2; exit 2 ;;
esac
