#!/usr/bin/env bash
# make demo: local cluster + CRD + operator + the sample ModelInstances, until they are Ready.
#
#   bash hack/demo.sh         bring everything up (idempotent: a second run reuses what is running)
#   bash hack/demo.sh stop    stop the demo's operator, then the local cluster
#   bash hack/demo.sh stop-operator   stop only the demo's operator (the tests run their own)
#
# The operator runs in the background; its pid is $XW_CLUSTER_DIR/pids/operator.pid and its log
# $XW_CLUSTER_DIR/logs/operator.log (next to the cluster's own), so one directory holds the whole demo.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
NS="${XW_DEMO_NAMESPACE:-xw-demo}"
HEALTH_PORT="${XW_OPERATOR_HEALTH_PORT:-18080}"
STATE="${XW_CLUSTER_DIR:-${XW_CACHE_DIR:-$HOME/.cache/xw-operator}/cluster}"
PID_FILE="$STATE/pids/operator.pid"
LOG_FILE="$STATE/logs/operator.log"

log() { printf '[demo %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# pid of the demo's operator if it is alive and really ours (a recycled pid is never signalled).
operator_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid; pid="$(cat "$PID_FILE")"
  [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "xw operator" || return 1
  echo "$pid"
}

stop_operator() {
  local pid
  if pid="$(operator_pid)"; then
    kill -TERM "$pid"
    for _ in $(seq 1 50); do [[ -d "/proc/$pid" ]] || break; sleep 0.2; done
    [[ -d "/proc/$pid" ]] && kill -KILL "$pid" 2>/dev/null || true
    log "stopped the operator (pid $pid)"
  fi
  rm -f "$PID_FILE"
}

if [[ "${1:-}" == "stop-operator" ]]; then
  stop_operator
  exit 0
fi

if [[ "${1:-}" == "stop" ]]; then
  stop_operator
  bash hack/cluster.sh down
  exit 0
fi

bash hack/venv.sh >/dev/null
eval "$(bash hack/cluster.sh up)"
export KUBECONFIG PATH
mkdir -p "$STATE/pids" "$STATE/logs"

log "installing the ModelInstance CRD"
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
# Polled: `kubectl wait --for=condition=Established` fails at once on a CRD that has no status yet.
for _ in $(seq 120); do
  [ "$(kubectl get crd modelinstances.xw.dev -o 'jsonpath={.status.conditions[?(@.type=="Established")].status}' 2>/dev/null)" = True ] \
    && kubectl get mi -A >/dev/null 2>&1 && break
  sleep 0.5
done

if pid="$(operator_pid)" && curl -sf "http://127.0.0.1:$HEALTH_PORT/healthz" >/dev/null; then
  log "operator already running (pid $pid)"
else
  stop_operator
  log "starting the operator (log: $LOG_FILE)"
  # setsid + detached stdio: the operator outlives this script and a Ctrl-C in the terminal.
  # --multi-node: the local cluster runs the LeaderWorkerSet controller (XW_LWS=0 turns both off).
  multi=(); [[ "${XW_LWS:-1}" == 1 ]] && multi=(--multi-node)
  setsid "$REPO/.venv/bin/xw" operator --all-namespaces --liveness "http://127.0.0.1:$HEALTH_PORT/healthz" "${multi[@]}" \
    < /dev/null >> "$LOG_FILE" 2>&1 &
  echo $! > "$PID_FILE"
  for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$HEALTH_PORT/healthz" >/dev/null && break
    operator_pid >/dev/null || { tail -n 30 "$LOG_FILE" >&2; die "the operator exited"; }
    sleep 0.5
  done
  curl -sf "http://127.0.0.1:$HEALTH_PORT/healthz" >/dev/null || die "operator liveness endpoint never answered"
fi

kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
log "applying configs/samples/*.yaml into namespace $NS"
kubectl apply -n "$NS" -f configs/samples/
log "waiting for every ModelInstance in $NS to be Ready"
if ! kubectl wait --for=condition=Ready mi --all -n "$NS" --timeout=120s; then
  kubectl get mi -n "$NS" -o wide >&2 || true
  tail -n 40 "$LOG_FILE" >&2
  die "the sample instances did not become Ready"
fi

echo
kubectl get mi -n "$NS"
echo
kubectl get deploy,svc,pods -n "$NS" -o wide
[[ "${XW_LWS:-1}" == 1 ]] && echo "multi-node: kubectl apply -n $NS -f configs/samples/multi-node/ (a LeaderWorkerSet group on two Ascend nodes)"
cat <<EOF

The cluster and the operator keep running. To use them from this shell:
  export KUBECONFIG=$KUBECONFIG
  export PATH=$(dirname "$(command -v kubectl)"):\$PATH
  kubectl describe mi -n $NS qwen3-8b       # status, conditions and events
  tail -f $LOG_FILE                          # operator log
To stop everything (operator, then the cluster):
  make cluster-down                          # = bash hack/demo.sh stop
EOF
