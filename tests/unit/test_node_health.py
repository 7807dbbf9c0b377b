"""Accelerator health: pods on a node that lost devices or went NotReady are named, newest first."""

from __future__ import annotations

from typing import Any

from xw_operator.k8s.node_health import (
    DEVICES_UNAVAILABLE,
    NODE_NOT_READY,
    device_faults,
    device_requests,
    devices_withdrawn,
    health_fingerprint,
    health_view,
)

RES = "huawei.com/Ascend910"


def pod(name: str, chips: int, node: str = "n1", created: str = "2026-01-01T00:00:00Z", **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created, **meta},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "engine", "resources": {"limits": {RES: str(chips), "cpu": "4"}}}],
        },
        "status": {"phase": "Running"},
    }


def node(ready: bool = True, chips: int = 8) -> dict[str, Any]:
    return {
        "metadata": {"name": "n1"},
        "status": {
            "allocatable": {RES: str(chips), "cpu": "64"},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False", "reason": "KubeletNotReady"}],
        },
    }


def test_healthy_node_has_no_fault() -> None:
    pods = [pod("a", 4), pod("b", 4)]
    assert device_faults(pods, {"n1": pods}, {"n1": node()}) == []


def test_withdrawn_devices_name_the_node_the_missing_count_and_the_newest_pod() -> None:
    old, new = pod("old", 4, created="2026-01-01T00:00:00Z"), pod("new", 4, created="2026-01-02T00:00:00Z")
    faults = device_faults([old, new], {"n1": [old, new]}, {"n1": node(chips=6)})
    assert len(faults) == 1
    fault = faults[0]
    assert fault.problem.reason == DEVICES_UNAVAILABLE
    assert "node n1: 2 huawei.com/Ascend910 device(s) missing (allocatable 6, 8 requested" in fault.problem.message
    assert [p["metadata"]["name"] for p in fault.pods] == ["new"]


def test_other_instances_pods_count_towards_the_node_total() -> None:
    mine, theirs = pod("mine", 4), pod("theirs", 4)
    faults = device_faults([mine], {"n1": [mine, theirs]}, {"n1": node(chips=7)})
    assert [p["metadata"]["name"] for p in faults[0].pods] == ["mine"]


def test_not_ready_node_affects_every_pod_on_it() -> None:
    pods = [pod("a", 2), pod("b", 2)]
    faults = device_faults(pods, {"n1": pods}, {"n1": node(ready=False)})
    assert faults[0].problem.reason == NODE_NOT_READY
    assert (
        "node n1 is not ready (KubeletNotReady)" in faults[0].problem.message
        and "huawei.com/Ascend910 x4" in faults[0].problem.message
    )
    assert len(faults[0].pods) == 2


def test_unknown_nodes_and_terminating_pods_are_ignored() -> None:
    gone = pod("gone", 8, deletionTimestamp="2026-01-01T00:00:00Z")
    assert device_faults([pod("a", 8)], {}, {}) == []
    assert device_faults([gone], {"n1": [gone]}, {"n1": node(chips=0)}) == []


def test_requests_and_fingerprint() -> None:
    assert device_requests(pod("a", 3)) == {RES: 3}
    assert health_fingerprint(node()) == (True, ((RES, "8"),))
    assert health_fingerprint(node(ready=False, chips=6)) == (False, ((RES, "6"),))


def with_capacity(n: dict[str, Any], chips: int) -> dict[str, Any]:
    n["status"]["capacity"] = {RES: str(chips), "cpu": "64"}
    return n


def test_a_node_offering_all_it_has_withdrew_nothing() -> None:
    assert not devices_withdrawn(with_capacity(node(chips=8), 8), [RES])
    assert not devices_withdrawn(with_capacity(node(chips=6), 8), ["other.com/gpu"])  # not a resource we use


def test_allocatable_below_capacity_or_gone_is_a_withdrawal() -> None:
    assert devices_withdrawn(with_capacity(node(chips=6), 8), [RES])
    gone = with_capacity(node(), 8)
    del gone["status"]["allocatable"][RES]
    assert devices_withdrawn(gone, [RES])
    garbled = with_capacity(node(), 8)
    garbled["status"]["allocatable"][RES] = "eight"
    assert devices_withdrawn(garbled, [RES])


def test_the_kept_view_answers_like_the_whole_node() -> None:
    whole = with_capacity(node(chips=6), 8)
    whole["status"]["images"] = [{"names": ["registry/engine:1"], "sizeBytes": 1}] * 50
    whole["status"]["conditions"].append({"type": "MemoryPressure", "status": "False"})
    view = health_view(whole)
    assert "images" not in view["status"] and len(view["status"]["conditions"]) == 1
    assert health_fingerprint(view) == health_fingerprint(whole)
    assert devices_withdrawn(view, [RES]) and devices_withdrawn(whole, [RES])
    mine = [pod("a", 4), pod("b", 4)]
    assert device_faults(mine, {"n1": mine}, {"n1": view}) == device_faults(mine, {"n1": mine}, {"n1": whole})
    assert device_faults(mine, {"n1": mine}, {"n1": health_view(node(ready=False))})[0].problem.reason == NODE_NOT_READY
