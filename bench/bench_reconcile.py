"""Cost of the operator's no-write decision, relative to resolving + rendering the same instances.

A resume after restart runs the decision for every instance; the spec-hash check should add only a
small fraction to the render it needs anyway (and no API writes at all, which the k8s tests count).
Prints ratios against the resolve+render baseline measured in this run; no absolute thresholds.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from xw_operator.devices import load_devices_config, packaged_devices_config_path
from xw_operator.instance import parse_instance
from xw_operator.k8s.reconcile import desired_state, is_current
from xw_operator.k8s.status import Observed, compute_status
from xw_operator.plan import resolve
from xw_operator.render_kubernetes import render_kubernetes

N = 200
CHIPS = ["ascend-910b", "ascend-910c", "ascend-310p", "nvidia-t4", "metax-c550"]


def body(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "xw.dev/v1alpha1",
        "kind": "ModelInstance",
        "metadata": {"name": f"m{i}", "namespace": "bench", "uid": f"uid-{i}", "generation": 1},
        "spec": {
            "model": {"source": {"huggingFace": {"repo": f"org/m{i}"}}},
            "devices": {"chip": CHIPS[i % len(CHIPS)], "count": 1},
        },
    }


def timed(fn: Callable[[], object], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    config = load_devices_config(packaged_devices_config_path())
    bodies = [body(i) for i in range(N)]
    desired = [desired_state(b, config) for b in bodies]
    live = [copy.deepcopy(d.deployment) for d in desired]

    def baseline() -> None:
        for b in bodies:
            inst = parse_instance(b)
            render_kubernetes(inst, resolve(inst, config).bind())

    def decide() -> None:
        for b, lv in zip(bodies, live, strict=True):
            d = desired_state(b, config)
            assert is_current(d.deployment, lv)

    def status() -> None:
        for d, lv in zip(desired, live, strict=True):
            obs = Observed(
                generation=1,
                desired_replicas=1,
                endpoint=d.endpoint,
                image=d.plan.image,
                deployment=lv,
                children_current=True,
            )
            compute_status(obs, now="2026-01-01T00:00:00Z")

    base = timed(baseline)
    print(f"instances: {N}")
    print(f"resolve+render (baseline):            1.00  ({base / N * 1e6:.0f} us/instance)")
    print(f"no-write decision (render+hash+check): {timed(decide) / base:.2f}x baseline")
    print(f"status computation:                    {timed(status) / base:.2f}x baseline")


if __name__ == "__main__":
    main()
