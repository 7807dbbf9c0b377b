#!/usr/bin/env bash
# Build the operator image from the top-level Dockerfile.
#
#   bash hack/build-image.sh [--tag TAG] [--base IMAGE] [--wheelhouse] [--local-base]
#
#   --tag TAG      image tag (default xw-operator:<version from pyproject.toml>)
#   --base IMAGE   BASE_IMAGE build argument (default: the Dockerfile's, python:3.11-slim)
#   --wheelhouse   build every wheel on the host (`pip wheel`, through the host's pip configuration and CA
#                  bundle) into .cache/wheelhouse/ and install offline in the image -- for machines where
#                  containers cannot reach a package index
#   --local-base   no registry reachable: use (building it once with `hack/test-images.sh base`, cached in
#                  the engine afterwards) the debootstrap'ed xw-test/python-base:bookworm; implies --wheelhouse
#
# Rebuilds only when the inputs changed (the context's files, the base image id, the install mode);
# XW_IMAGE_REBUILD=1 forces a build.
# Prints the image tag on stdout; progress and the build time on stderr. Uses BuildKit when the buildx
# plugin is installed, else the classic builder (the Dockerfile works with both).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

log() { printf '[build-image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -1)"
tag="xw-operator:${version:-dev}"
base=""
wheelhouse=0
local_base=0
LOCAL_BASE_IMAGE="xw-test/python-base:bookworm"
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --base) base="$2"; shift 2 ;;
    --wheelhouse) wheelhouse=1; shift ;;
    --local-base) local_base=1; wheelhouse=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

docker info >/dev/null 2>&1 || die "no Docker engine answers; run: bash hack/docker.sh up"

if [ "$local_base" = 1 ]; then
  [ -z "$base" ] || die "--base and --local-base exclude each other"
  bash hack/test-images.sh base
  base="$LOCAL_BASE_IMAGE"
fi

args=()
[ -n "$base" ] && args+=(--build-arg "BASE_IMAGE=$base")

# Skip the build when the tag already holds an image of exactly these inputs: the files the build context
# admits (tracked or new, not ignored), the base image's id and the install mode. Set XW_IMAGE_REBUILD=1
# to force a build.
HASH_LABEL="xw.image.inputs"
base_id="$(docker image inspect -f '{{.Id}}' "${base:-python:3.11-slim}" 2>/dev/null || echo "${base:-default}")"
inputs="$(
  { git ls-files -co --exclude-standard -- Dockerfile .dockerignore pyproject.toml README.md LICENSE operator configs \
      | LC_ALL=C sort | while read -r f; do [ -f "$f" ] && sha256sum "$f"; done
    echo "base=$base_id wheelhouse=$wheelhouse"; } | sha256sum | cut -c1-16
)"
if [ "${XW_IMAGE_REBUILD:-0}" != 1 ] \
  && [ "$(docker image inspect -f "{{ index .Config.Labels \"$HASH_LABEL\" }}" "$tag" 2>/dev/null || true)" = "$inputs" ]; then
  log "$tag is up to date (inputs $inputs)"
  echo "$tag"
  exit 0
fi
args+=(--label "$HASH_LABEL=$inputs")

if [ "$wheelhouse" = 1 ]; then
  wh=.cache/wheelhouse
  mkdir -p "$wh"
  # The project's own wheel is rebuilt every time (its version does not change with the code); dependency
  # wheels already present are reused.
  rm -f "$wh"/xw_operator-*.whl
  py="${PYTHON:-}"
  if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
  fi
  # The image's Python must match the wheels' (cp311 for pydantic-core and PyYAML).
  host_py="$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  log "building wheels with $py (Python $host_py) into $wh"
  start=$SECONDS
  "$py" -m pip wheel -q --find-links "$wh" -w "$wh" . >&2
  log "wheelhouse ready in $((SECONDS - start))s ($(ls "$wh" | wc -l) wheels)"
  args+=(--build-arg "WHEELHOUSE=$wh")
fi

builder_env=(DOCKER_BUILDKIT=0)
if docker buildx version >/dev/null 2>&1; then builder_env=(DOCKER_BUILDKIT=1); fi

log "docker build -t $tag ${args[*]} ($REPO)"
start=$SECONDS
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
if ! env "${builder_env[@]}" docker build -t "$tag" "${args[@]}" "$REPO" >"$out" 2>&1; then
  cat "$out" >&2
  die "docker build of $tag failed"
fi
log "built $tag in $((SECONDS - start))s ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
echo "$tag"
