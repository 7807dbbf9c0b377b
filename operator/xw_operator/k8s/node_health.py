"""Accelerator health from node status: which of an instance's pods lost their devices. Pure.

A device plugin withdraws an unhealthy chip by lowering the node's ``allocatable`` for its resource
(``huawei.com/Ascend910: 8 -> 6``); the scheduler then stops placing pods there, but the pods already
running keep their (now partly dead) allocation and the instance would stay Ready. Likewise a node that
goes NotReady takes its devices with it. This module compares, per node, what the xw pods on it
requested with what the node still offers, and names the affected pods:

- node NotReady (or gone): every pod of the instance on it is affected;
- allocatable for resource R below the sum requested by the xw pods on the node: the instance's pods
  there are affected, newest first, until the shortage is covered (we cannot know which pod held the
  withdrawn chip; deleting the newest ones first keeps the longest-running serving).

The operator shows the result as the Degraded condition (reason ``DevicesUnavailable`` / ``NodeNotReady``,
naming the node and the missing devices) and, unless disabled, deletes the affected pods so their
Deployment reschedules them onto healthy devices.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xw_operator.k8s.status import Problem

Obj = Mapping[str, Any]

NODE_NOT_READY = "NodeNotReady"
DEVICES_UNAVAILABLE = "DevicesUnavailable"


@dataclass(frozen=True)
class DeviceFault:
    """One node's fault as it affects one instance."""

    problem: Problem
    pods: tuple[Obj, ...] = field(default_factory=tuple)  # the instance's pods to reschedule


def _active(pod: Obj) -> bool:
    meta = pod.get("metadata", {})
    phase = (pod.get("status") or {}).get("phase")
    return (
        bool((pod.get("spec") or {}).get("nodeName"))
        and not meta.get("deletionTimestamp")
        and phase not in ("Succeeded", "Failed")
    )


def device_requests(pod: Obj) -> dict[str, int]:
    """Extended resources (``vendor.com/chip``) a pod's containers ask for, summed (limits == requests)."""
    out: dict[str, int] = {}
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        wanted = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        for name, value in wanted.items():
            if "/" in name and not name.startswith(("hugepages-", "kubernetes.io/")):
                try:
                    out[name] = out.get(name, 0) + int(str(value))
                except ValueError:
                    continue
    return out


def node_ready(node: Obj | None) -> tuple[bool, str]:
    if node is None:
        return False, "the node no longer exists"
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            if cond.get("status") == "True":
                return True, ""
            return False, str(cond.get("reason") or cond.get("message") or f"Ready={cond.get('status')}")
    return False, "no Ready condition"


def devices_withdrawn(node: Obj, resources: Iterable[str]) -> bool:
    """The node offers fewer of one of ``resources`` than it has (allocatable < capacity): a device
    plugin withdrew unhealthy chips. Only then can the pods there be short of devices -- the scheduler
    never places more than allocatable -- so only then are the node's other pods worth listing."""
    status = node.get("status") or {}
    allocatable, capacity = status.get("allocatable") or {}, status.get("capacity") or {}
    for resource in resources:
        try:
            if int(str(allocatable.get(resource, "0"))) < int(str(capacity.get(resource, "0"))):
                return True
        except ValueError:
            return True  # unreadable: look rather than guess
    return False


def _created(pod: Obj) -> str:
    return str(pod.get("metadata", {}).get("creationTimestamp") or "")


def device_faults(
    instance_pods: Sequence[Obj], node_pods: Mapping[str, Sequence[Obj]], nodes: Mapping[str, Obj | None]
) -> list[DeviceFault]:
    """Faults of the nodes ``instance_pods`` run on. ``node_pods[n]``: every xw pod on node n (all
    instances, used for the sum of requests); ``nodes[n]``: the node object or None if it is gone."""
    faults: list[DeviceFault] = []
    mine_by_node: dict[str, list[Obj]] = {}
    for pod in instance_pods:
        if _active(pod):
            mine_by_node.setdefault(str(pod["spec"]["nodeName"]), []).append(pod)
    for node_name in sorted(mine_by_node):
        if node_name not in nodes:
            continue  # not seen yet: nothing known against it
        mine = sorted(mine_by_node[node_name], key=_created, reverse=True)
        node = nodes[node_name]
        ready, why = node_ready(node)
        names = ", ".join(str(p["metadata"]["name"]) for p in mine)
        if not ready:
            lost = _sum_requests(mine)
            devices = ", ".join(f"{n} x{c}" for n, c in sorted(lost.items())) or "its devices"
            faults.append(
                DeviceFault(
                    Problem(NODE_NOT_READY, f"node {node_name} is not ready ({why}): pod(s) {names} lost {devices}"),
                    tuple(mine),
                )
            )
            continue
        allocatable = (node or {}).get("status", {}).get("allocatable") or {}
        on_node = [p for p in node_pods.get(node_name, mine) if _active(p)]
        requested = _sum_requests(on_node)
        mine_requests = _sum_requests(mine)
        for resource in sorted(mine_requests):
            try:
                offered = int(str(allocatable.get(resource, "0")))
            except ValueError:
                continue
            missing = requested.get(resource, 0) - offered
            if missing <= 0:
                continue
            affected: list[Obj] = []
            freed = 0
            for pod in mine:
                if freed >= missing:
                    break
                affected.append(pod)
                freed += device_requests(pod).get(resource, 0)
            message = (
                f"node {node_name}: {missing} {resource} device(s) missing (allocatable {offered}, "
                f"{requested.get(resource, 0)} requested by xw pods there); affected pod(s): "
                + ", ".join(str(p["metadata"]["name"]) for p in affected)
            )
            faults.append(DeviceFault(Problem(DEVICES_UNAVAILABLE, message), tuple(affected)))
    return faults


def _sum_requests(pods: Sequence[Obj]) -> dict[str, int]:
    total: dict[str, int] = {}
    for pod in pods:
        for name, count in device_requests(pod).items():
            total[name] = total.get(name, 0) + count
    return total


def health_fingerprint(node: Obj) -> tuple[Any, ...]:
    """What of a node matters here (readiness, allocatable extended resources): node events whose
    fingerprint did not change (heartbeats) are ignored."""
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    extended = tuple(sorted((k, str(v)) for k, v in allocatable.items() if "/" in k))
    return node_ready(node)[0], extended


def health_view(node: Obj) -> dict[str, Any]:
    """The part of a node this module reads (name, Ready condition, allocatable and capacity): what the
    operator keeps per node. A whole Node -- its image list alone is tens of KiB on a real host -- times
    every node of a large cluster would be most of the operator's memory."""
    status = node.get("status") or {}
    return {
        "metadata": {"name": (node.get("metadata") or {}).get("name")},
        "status": {
            "conditions": [c for c in status.get("conditions") or [] if c.get("type") == "Ready"],
            "allocatable": dict(status.get("allocatable") or {}),
            "capacity": dict(status.get("capacity") or {}),
        },
    }
