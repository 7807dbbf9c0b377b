"""Same input, same output, across processes: the operator compares hashes of renderings made by
different processes (before and after a restart), and Python randomises set order per process.

Two calls in one process share one hash seed and would agree even if the output depended on set
order; so every rendering here is made in subprocesses with different PYTHONHASHSEED values.
"""

from __future__ import annotations

import os
import subprocess
import sys

import builders

# For each case: the Plan (repr: field order and every tuple's order), the Kubernetes children with
# their spec hashes (what the operator stores and compares), and the Docker create parameters.
SCRIPT = """
import json, sys
import builders
from xw_operator.devices import load_devices_config
from xw_operator.k8s.reconcile import desired_state
from xw_operator.plan import resolve
from xw_operator.render_docker import render_docker

shipped_doc = builders.devices_doc()
shipped_doc["policy"]["model_host_path_prefixes"] = ["/data"]  # the hostPath cases below
shipped = builders.devices_config(shipped_doc)
host_device = load_devices_config(builders.REPO / "tests/golden/host-device-devices.yaml")
def doc(chip, count, **spec):
    return builders.instance_doc(chip, count, namespace="n", uid="u", **spec)

two_vars = {"name": "vllm", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}
cases = [
    (shipped, doc("ascend-910b", 4, engine=two_vars)),
    (shipped, doc("ascend-910b", 2, engine={"name": "mindie"})),
    (shipped, doc("ascend-310p", 2)),
    (shipped, doc("metax-c550", 1, source={"huggingFace": {"repo": "a/b"}})),
    (shipped, doc("nvidia-t4", 2, tolerations=[{"key": "k", "operator": "Exists"}])),
    (host_device, doc("acme-npu", 2)),
]
out = []
for config, doc in cases:
    desired = desired_state(doc, config)
    plan = desired.plan
    out.append([repr(plan), list(desired.children), render_docker(plan, server_name="s", host_port=1)])
json.dump(out, sys.stdout, sort_keys=False, default=str)
"""


def render_with_seeds(*seeds: str) -> list[str]:
    """The script's output under each hash seed (the subprocesses run side by side)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT],
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(builders.REPO / "tests")},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in seeds
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(out)
    return outputs


def test_plans_renderings_and_spec_hashes_do_not_depend_on_the_hash_seed() -> None:
    first, second = render_with_seeds("1", "2")
    assert '"xw.dev/spec-hash"' in first  # the children really carry the hashes the operator compares
    assert first == second, "output differs between PYTHONHASHSEED=1 and 2"
