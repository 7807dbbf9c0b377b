"""charts/xw-operator/argocd/health.lua in a real Lua runtime (lupa), against statuses computed by the
operator's own status function. The Kubernetes tier runs the same script in gopher-lua (Argo CD's VM) on
objects recorded from a live operator: tests/k8s/test_day2.py::test_gitops_health_of_real_statuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lupa import LuaRuntime
from test_status import NOW, SCHED_MSG, deployment, observed, pod  # type: ignore[import-not-found]

from xw_operator.k8s.status import Failure, compute_status

HEALTH_LUA = Path(__file__).resolve().parents[2] / "charts" / "xw-operator" / "argocd" / "health.lua"


def argocd_health(obj: dict[str, Any]) -> tuple[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute(HEALTH_LUA.read_text(encoding="utf-8"))
    return str(hs["status"]), str(hs["message"])


def mi(status: dict[str, Any] | None, generation: int = 2) -> dict[str, Any]:
    doc: dict[str, Any] = {"apiVersion": "xw.dev/v1alpha1", "kind": "ModelInstance"}
    doc["metadata"] = {"name": "demo", "namespace": "ns", "generation": generation}
    if status is not None:
        doc["status"] = status
    return doc


UNSCHEDULABLE = pod(scheduled={"status": "False", "reason": "Unschedulable", "message": SCHED_MSG})
CASES = {
    "ready": (compute_status(observed(), now=NOW), "Healthy"),
    "scaled-to-zero": (
        compute_status(observed(desired_replicas=0, deployment=deployment(replicas=0, ready=0)), now=NOW),
        "Healthy",
    ),
    "rolling-out": (compute_status(observed(deployment=deployment(ready=0)), now=NOW), "Progressing"),
    "pending": (compute_status(observed(deployment=None, children_current=False), now=NOW), "Progressing"),
    "generation-lag": (
        compute_status(observed(children_current=False, previous={"observedGeneration": 1}), now=NOW),
        "Progressing",
    ),
    "unschedulable": (
        compute_status(observed(deployment=deployment(ready=0), pods=[UNSCHEDULABLE]), now=NOW),
        "Degraded",
    ),
    "failed": (
        compute_status(
            observed(failure=Failure("UnknownChip", "unknown chip 'tpu'"), deployment=None, children_current=False),
            now=NOW,
        ),
        "Degraded",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_health_of_each_status_the_operator_computes(case: str) -> None:
    status, expected = CASES[case]
    health, message = argocd_health(mi(status))
    assert health == expected, message
    assert message


def test_no_status_yet_is_progressing() -> None:
    assert argocd_health(mi(None))[0] == "Progressing"


def test_a_ready_status_of_an_older_generation_is_progressing() -> None:
    status, _ = CASES["ready"]
    health, message = argocd_health(mi(status, generation=3))
    assert health == "Progressing" and "generation 3" in message


def test_degraded_message_says_why() -> None:
    status, _ = CASES["failed"]
    assert argocd_health(mi(status)) == ("Degraded", "Failed: unknown chip 'tpu'")
