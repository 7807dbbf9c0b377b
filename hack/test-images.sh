#!/usr/bin/env bash
# Local images for the Docker-mode tests -- built offline, only when missing or when their context changed.
#
#   bash hack/test-images.sh          stand-in engine images (FROM scratch + Debian's static busybox):
#                                       xw-test/engine:ok         /health 200, /v1/models lists the name
#                                       xw-test/engine:unhealthy  /v1/models lists the name, /health 404
#                                       xw-test/engine:exits      prints a message, exits 3 after ~1 s
#                                       xw-test/engine:contract   like ok; for the engine-contract tests (it
#                                                                 serves back its argv and env, a tag of its own)
#                                     (the served name comes from --served-model-name / XW_TEST_MODEL_NAME,
#                                     see hack/test-images/engine/entrypoint.sh)
#   bash hack/test-images.sh base     xw-test/python-base:bookworm, a debootstrap'ed Debian with python3
#                                     (for building the operator image offline); built only if missing
#   bash hack/test-images.sh all      both
#
# Each engine image carries the label xw.test.context-hash (sha256 of its build context, the static busybox
# included); a rebuild happens only when that hash differs. Needs a running engine (hack/docker.sh up).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CTX="$HERE/test-images/engine"
CACHE_DIR="${XW_CACHE_DIR:-$HOME/.cache/xw-operator}"
BASE_IMAGE="xw-test/python-base:bookworm"
HASH_LABEL="xw.test.context-hash"

log() { printf '[test-images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

docker info >/dev/null 2>&1 || die "no Docker engine answers; run: bash hack/docker.sh up"

apt_install() {
  [ "$(id -u)" = 0 ] || die "need root to install $* (or install it yourself)"
  log "apt-get update && apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

static_busybox() {
  # Debian's busybox-static provides a statically linked /bin/busybox; a dynamic one cannot run FROM scratch.
  # A dynamic ELF names its loader (ld-linux*) in PT_INTERP within the first bytes; a static one does not.
  if [ -x /bin/busybox ] && ! head -c 1024 /bin/busybox | grep -aq 'ld-linux'; then echo /bin/busybox; return; fi
  apt_install busybox-static
  [ -x /bin/busybox ] && ! head -c 1024 /bin/busybox | grep -aq 'ld-linux' || die "/bin/busybox is not statically linked"
  echo /bin/busybox
}

image_label() {
  docker image inspect -f "{{ index .Config.Labels \"$HASH_LABEL\" }}" "$1" 2>/dev/null || true
}

build_engines() {
  local bb tmp hash mode tag
  bb="$(static_busybox)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  cp -a "$CTX/." "$tmp/"
  cp "$bb" "$tmp/busybox"
  # Hash of every file's path and content in the context (order-independent of the filesystem).
  hash="$(cd "$tmp" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
  for mode in ok unhealthy exits contract; do
    tag="xw-test/engine:$mode"
    if [ "$(image_label "$tag")" = "$hash" ]; then
      log "$tag up to date ($hash)"
      continue
    fi
    log "building $tag (context $hash)"
    local start=$SECONDS
    # The classic builder works offline with FROM scratch on every engine version; its deprecation notice on
    # stderr is noise, so stderr is shown only when the build fails.
    if ! DOCKER_BUILDKIT=0 docker build -q --build-arg "MODE=$mode" --label "$HASH_LABEL=$hash" \
      -t "$tag" "$tmp" >"$tmp.out" 2>&1; then
      cat "$tmp.out" >&2; rm -f "$tmp.out"
      die "docker build of $tag failed"
    fi
    rm -f "$tmp.out"
    log "built $tag in $((SECONDS - start))s"
  done
}

debian_mirror() {
  # The first Debian (non-security) URI in the apt sources, deb822 or one-line style.
  local uri
  uri="$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' \
    | grep -v security | head -1 || true)"
  if [ -z "$uri" ]; then
    uri="$(grep -h '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | awk '{for (i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}' | grep -v security | head -1 || true)"
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

build_base() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "$BASE_IMAGE present"
    return 0
  fi
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
  local mirror dir start=$SECONDS
  mirror="$(debian_mirror)"
  dir="$CACHE_DIR/python-base-rootfs"
  rm -rf "$dir"
  mkdir -p "$dir"
  log "debootstrap bookworm from $mirror into $dir (about a minute)"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$dir" "$mirror" 2>&1 | awk '/^I: (Retrieving|Validating|Extracting|Installing|Configuring) [a-z]/ {n++; if (n % 25 == 0) {print "  ... " $0; fflush()}} /^(E|W):/ {print; fflush()}' >&2
  [ -x "$dir/usr/bin/python3" ] || die "debootstrap did not produce python3 (see above)"
  rm -rf "$dir/var/cache/apt/archives/"*.deb "$dir/var/lib/apt/lists/"*
  log "importing into $BASE_IMAGE"
  tar -C "$dir" -c . | docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["/usr/bin/python3"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$dir"
  log "built $BASE_IMAGE in $((SECONDS - start))s"
}

case "${1:-engines}" in
  engines) build_engines ;;
  base) build_base ;;
  all) build_engines; build_base ;;
  *) echo "usage: $0 [engines|base|all]" >&2; exit 2 ;;
esac
