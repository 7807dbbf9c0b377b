#!/usr/bin/env bash
# checkov (PyPI) scans what this project puts into a cluster: the Helm chart rendered with `helm template`
# (defaults, and with watchNamespaces) and the objects `xw render` makes from configs/samples/*.yaml with
# the shipped devices.yaml. Every finding must be listed with its reason in hack/checkov-skips.yaml; a
# finding not listed there fails (hack/checkov_gate.py), and so does a listed one that no longer occurs.
#
# checkov gets its own venv (.venv-checkov): it pins packaging==23.2 and python-dateutil<3, which would
# downgrade the project's .venv (packaging 26, python-dateutil 4 for the kubernetes client). The version
# is pinned too: a new checkov release brings new checks, which must be a deliberate update here.
#
#   bash hack/checkov.sh            # install (once) and scan
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKOV_VERSION=3.3.30
VENV=${XW_CHECKOV_VENV:-.venv-checkov}

if [[ "$("$VENV/bin/checkov" --version 2>/dev/null || true)" != "$CHECKOV_VERSION" ]]; then
  echo "== installing checkov $CHECKOV_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
fi

bash hack/venv.sh >/dev/null
HELM="$(bash hack/cluster.sh bin-dir)/helm"
[[ -x "$HELM" ]] || { echo "helm not found at $HELM: run 'bash hack/cluster.sh build' first" >&2; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# As on a cluster that serves ValidatingAdmissionPolicy (>= 1.30): the policy is rendered and scanned too.
vap=(--api-versions admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy)
"$HELM" template xw-operator charts/xw-operator --namespace xw-system "${vap[@]}" > "$out/chart-default.yaml"
"$HELM" template xw-operator charts/xw-operator --namespace xw-system "${vap[@]}" \
  --set 'watchNamespaces={team-a}' > "$out/chart-namespaced.yaml"
for sample in configs/samples/*.yaml; do
  .venv/bin/xw render -f "$sample" --devices-config configs/devices.yaml > "$out/sample-$(basename "$sample")"
done

# Soft-fail: the gate, not checkov's exit code, decides (checkov exits 1 on any finding, skipped or not).
"$VENV/bin/checkov" --quiet --compact --skip-download --framework kubernetes --soft-fail -o json -d "$out" > "$out/report.json"
.venv/bin/python hack/checkov_gate.py "$out/report.json" hack/checkov-skips.yaml
