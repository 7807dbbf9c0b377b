#!/usr/bin/env bash
# Copy the single sources into the Helm chart (a chart cannot read files outside its directory):
#   crds/*.yaml          -> charts/xw-operator/files/crds/   (wrapped by templates/crds.yaml)
#   configs/devices.yaml -> charts/xw-operator/files/devices.yaml (the ConfigMap's default)
#   configs/models.yaml, configs/runtime_params.yaml -> charts/xw-operator/files/ (the recipe keys' default)
#
#   bash hack/sync-chart-files.sh          copy
#   bash hack/sync-chart-files.sh --check  exit 1 and name the files that differ (tests/k8s/test_chart_template.py
#                                          fails the same way)
set -euo pipefail
cd "$(dirname "$0")/.."
CHART=charts/xw-operator/files
check=0
[ "${1:-}" = "--check" ] && check=1

pairs=("configs/devices.yaml:$CHART/devices.yaml" "configs/models.yaml:$CHART/models.yaml"
       "configs/runtime_params.yaml:$CHART/runtime_params.yaml")
for crd in crds/*.yaml; do
  [ -e "$crd" ] || continue
  pairs+=("$crd:$CHART/crds/$(basename "$crd")")
done

rc=0
for pair in "${pairs[@]}"; do
  src="${pair%%:*}" dst="${pair#*:}"
  if cmp -s "$src" "$dst"; then continue; fi
  if [ "$check" = 1 ]; then
    echo "out of date: $dst (differs from $src); run: bash hack/sync-chart-files.sh" >&2
    rc=1
  else
    mkdir -p "$(dirname "$dst")"
    cp "$src" "$dst"
    echo "updated $dst from $src" >&2
  fi
done
# Chart copies whose source is gone.
for dst in "$CHART"/crds/*.yaml; do
  [ -e "$dst" ] || continue
  if [ ! -e "crds/$(basename "$dst")" ]; then
    if [ "$check" = 1 ]; then echo "stale: $dst (no crds/$(basename "$dst"))" >&2; rc=1; else rm "$dst"; echo "removed $dst" >&2; fi
  fi
done
exit "$rc"
