#!/usr/bin/env bash
# Local Docker engine for the Docker-mode tests and for single-host use -- idempotent.
#
#   bash hack/docker.sh up       install Debian's docker.io (+ busybox-static for the test images) when
#                                dockerd is missing, start dockerd in the background unless an engine
#                                already answers on the socket, wait until `docker info` works
#   bash hack/docker.sh down     stop the dockerd that `up` started (by recorded pid) -- never another one
#   bash hack/docker.sh status   say whether an engine answers and whether we started it
#   bash hack/docker.sh pid      print the pid of the dockerd `up` started (exit 1 when none)
#
# Environment overrides:
#   XW_CACHE_DIR          cache root (default ~/.cache/xw-operator); pidfile and log in $XW_CACHE_DIR/docker/
#   XW_DOCKER_HOST_SOCK   socket path (default /var/run/docker.sock)
#   XW_DOCKER_STORAGE     storage driver to force (default: overlay2 when the kernel supports it, else vfs)
#   XW_DOCKER_WAIT        seconds to wait for the engine (default 60)
#   XW_DOCKER_PRIVATE     NAME: a second, private engine beside the shared one (for tests that kill and
#                         restart dockerd without disturbing anyone else): its own socket
#                         ($XW_CACHE_DIR/docker-NAME/docker.sock), data-root, exec-root (/run/xw-docker-NAME),
#                         pidfile, containerd and bridge (xw-NAME, XW_DOCKER_BRIDGE_CIDR, default
#                         172.31.254.1/24); no iptables rules (published ports go through docker-proxy), so
#                         the shared engine's rules are never touched. Needs root.
set -euo pipefail

CACHE_DIR="${XW_CACHE_DIR:-$HOME/.cache/xw-operator}"
PRIVATE="${XW_DOCKER_PRIVATE:-}"
if [ -n "$PRIVATE" ]; then
  case "$PRIVATE" in *[!a-z0-9-]* | ????????????*) echo "XW_DOCKER_PRIVATE must be [a-z0-9-], at most 11 characters" >&2; exit 2 ;; esac
  STATE="$CACHE_DIR/docker-$PRIVATE"
  SOCK="$STATE/docker.sock"
  BRIDGE="xw-$PRIVATE"
  BRIDGE_CIDR="${XW_DOCKER_BRIDGE_CIDR:-172.31.254.1/24}"
  EXEC_ROOT="/run/xw-docker-$PRIVATE"
  EXTRA_ARGS=(--data-root "$STATE/data-root" --exec-root "$EXEC_ROOT" --bridge "$BRIDGE"
    --iptables=false --ip-masq=false --ip-forward=false)
else
  STATE="$CACHE_DIR/docker"
  SOCK="${XW_DOCKER_HOST_SOCK:-/var/run/docker.sock}"
  EXEC_ROOT=/var/run/docker
  EXTRA_ARGS=()
fi
PIDFILE="$STATE/dockerd.pid"
LOG="$STATE/dockerd.log"
WAIT="${XW_DOCKER_WAIT:-60}"

log() { printf '[docker %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

engine_answers() {
  command -v docker >/dev/null 2>&1 && [ -S "$SOCK" ] && docker -H "unix://$SOCK" info >/dev/null 2>&1
}

our_pid() {
  # Prints the recorded pid when that process is still a dockerd; nothing otherwise.
  [ -f "$PIDFILE" ] || return 0
  local pid
  pid="$(cat "$PIDFILE")"
  # A killed daemon stays a zombie until its parent reaps it: that is not a running engine.
  if [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = dockerd ] \
    && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; then
    echo "$pid"
  fi
}

apt_install() {
  # One `apt-get update` per `up`, only when something actually has to be installed.
  if [ -z "${_APT_UPDATED:-}" ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    _APT_UPDATED=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

ensure_packages() {
  local want=()
  command -v dockerd >/dev/null 2>&1 || want+=(docker.io)
  # The client may exist without the engine (this machine has /usr/local/bin/docker only).
  command -v docker >/dev/null 2>&1 || want+=(docker.io)
  # The test images need a *static* busybox (Debian's busybox-static); the dynamic one fails in FROM scratch.
  if ! { [ -x /bin/busybox ] && file_is_static /bin/busybox; }; then want+=(busybox-static); fi
  if [ "${#want[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "need root to install ${want[*]} (run as root or install them yourself)"
    # shellcheck disable=SC2046
    apt_install $(printf '%s\n' "${want[@]}" | sort -u)
  fi
}

file_is_static() {
  # A dynamically linked ELF names its loader (ld-linux*) in PT_INTERP, within its first bytes; a static
  # one does not (the whole static binary may still contain the string elsewhere).
  ! head -c 1024 "$1" 2>/dev/null | grep -aq 'ld-linux'
}

storage_driver() {
  if [ -n "${XW_DOCKER_STORAGE:-}" ]; then echo "$XW_DOCKER_STORAGE"; return; fi
  # overlay2 needs the overlay filesystem and a backing fs that supports it (ext4/xfs do; overlay-on-overlay
  # does not). Fall back to vfs (slow copies, but works anywhere).
  local backing
  backing="$(stat -f -c %T /var/lib 2>/dev/null || echo unknown)"
  if grep -qw overlay /proc/filesystems && [ "$backing" != overlayfs ] && [ "$backing" != tmpfs ]; then
    echo overlay2
  else
    echo vfs
  fi
}

ensure_bridge() {
  # A private engine's own bridge: sharing docker0 with the main engine would hand out the same addresses.
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "creating bridge $BRIDGE ($BRIDGE_CIDR)"
    ip link add name "$BRIDGE" type bridge
    ip addr add "$BRIDGE_CIDR" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
}

alive() {
  # Running and not a zombie (a dead daemon nobody has reaped yet still answers kill -0).
  [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

drop_stale_pidfile() {
  local pid
  pid="$(cat "$1" 2>/dev/null || true)"
  if [ -n "$pid" ] && { [ ! -r "/proc/$pid/stat" ] || [ "$(awk '{print $3}' "/proc/$pid/stat")" = Z ]; }; then
    rm -f "$1"
  fi
}

cmd_up() {
  mkdir -p "$STATE"
  ensure_packages
  if engine_answers; then
    log "engine already answers on $SOCK"
    docker -H "unix://$SOCK" info --format 'server {{.ServerVersion}}, storage {{.Driver}}, cgroup {{.CgroupVersion}}' >&2
    return 0
  fi
  local pid
  pid="$(our_pid)"
  if [ -z "$pid" ]; then
    command -v dockerd >/dev/null 2>&1 || die "dockerd not found after install"
    local driver
    driver="$(storage_driver)"
    [ -z "$PRIVATE" ] || ensure_bridge
    # dockerd refuses to start (or waits for "still running" containerd) while a pidfile names a live
    # process; after a SIGKILL the old daemon and its containerd linger as zombies when nothing reaps them.
    drop_stale_pidfile "$STATE/dockerd.own.pid"
    drop_stale_pidfile "$EXEC_ROOT/containerd/containerd.pid"
    log "starting dockerd (storage driver $driver, log $LOG)"
    # setsid: the daemon must outlive the shell (and pytest) that started it.
    setsid dockerd --host "unix://$SOCK" --storage-driver "$driver" \
      --pidfile "$STATE/dockerd.own.pid" "${EXTRA_ARGS[@]}" >>"$LOG" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PIDFILE"
  else
    log "dockerd (pid $pid) already started by us; waiting for it"
  fi
  local i=0
  until engine_answers; do
    if ! alive "$pid"; then
      tail -n 30 "$LOG" >&2 || true
      rm -f "$PIDFILE"
      die "dockerd exited during start-up (log above, full log in $LOG)"
    fi
    i=$((i + 1))
    [ "$i" -le "$((WAIT * 2))" ] || { tail -n 30 "$LOG" >&2; die "engine did not answer within ${WAIT}s"; }
    [ $((i % 4)) -eq 0 ] && log "waiting for the engine ($((i / 2))s)"
    sleep 0.5
  done
  log "engine up (pid $pid, $((i / 2))s)"
  docker -H "unix://$SOCK" info --format 'server {{.ServerVersion}}, storage {{.Driver}}, cgroup {{.CgroupVersion}}' >&2
}

cmd_down() {
  local pid
  pid="$(our_pid)"
  if [ -z "$pid" ]; then
    log "no dockerd started by us is running"
    rm -f "$PIDFILE"
    return 0
  fi
  log "stopping dockerd (pid $pid)"
  kill -TERM "$pid"
  local i=0
  while alive "$pid"; do
    i=$((i + 1))
    if [ "$i" -gt 60 ]; then
      log "dockerd did not stop within 30s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.5
  done
  rm -f "$PIDFILE"
  if [ -n "$PRIVATE" ] && ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link del "$BRIDGE" || true
  fi
  log "stopped"
}

cmd_pid() {
  # The pid of the dockerd `up` started (empty + exit 1 when none): tests kill it to simulate a crash.
  local pid
  pid="$(our_pid)"
  [ -n "$pid" ] && echo "$pid"
}

cmd_status() {
  local pid
  pid="$(our_pid)"
  if engine_answers; then
    if [ -n "$pid" ]; then echo "up (dockerd pid $pid, started by hack/docker.sh)"; else echo "up (not started by us)"; fi
  elif [ -n "$pid" ]; then
    echo "starting (dockerd pid $pid, not answering yet)"
  else
    echo "down"
    return 1
  fi
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  pid) cmd_pid ;;
  *) echo "usage: $0 up|down|status|pid" >&2; exit 2 ;;
esac
