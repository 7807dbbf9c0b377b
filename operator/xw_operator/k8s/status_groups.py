"""Status of a multi-node instance from its LeaderWorkerSet and pods, by group. Pure: no I/O.

A replica of a multi-node instance is a group (one leader + workers). What a user needs to see is per
group: how many groups serve, why a group cannot be placed (the scheduler's message for its pending pods,
prefixed with what the group needs: "group 0 needs 2 nodes with 8 free huawei.com/Ascend910"), and a
worker that crashes (which makes the instance Degraded: LWS recreates the whole group, so one bad worker
takes its group's leader down with it). :func:`compute_status` then derives phase and conditions exactly
as for a Deployment, from :func:`group_observation`'s completeness and problems.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xw_operator.k8s.status import (
    Problem,
    _get,  # one nested-lookup helper for both status modules
    pod_problems,
)
from xw_operator.plan import Plan

GROUP_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/group-index"
WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class GroupNeeds:
    """What every group asks the scheduler for: ``nodes`` nodes with ``count`` free ``resource`` each."""

    nodes: int
    count: int
    resource: str | None  # the device plugin's resource; None in host-device mode

    def describe(self) -> str:
        what = f"{self.count} free {self.resource}" if self.resource else f"the chip's {self.count} devices"
        return f"needs {self.nodes} nodes with {what}"


@dataclass(frozen=True)
class GroupObservation:
    complete: bool
    problems: tuple[Problem, ...]
    ready: int  # groups whose pods are all Ready


def _condition_true(obj: Obj | None, ctype: str) -> bool:
    conditions = _get(obj, "status", "conditions", default=[]) or []
    return any(c.get("type") == ctype and c.get("status") == "True" for c in conditions)


def _pod_ready(pod: Obj) -> bool:
    return not _get(pod, "metadata", "deletionTimestamp") and _condition_true(pod, "Ready")


def _group_of(pod: Obj) -> str:
    return str(_get(pod, "metadata", "labels", GROUP_INDEX_LABEL, default="?"))


def ready_groups(pods: Sequence[Obj], nodes: int) -> int:
    """Groups whose ``nodes`` pods all exist and are Ready, counted from the pods themselves.

    Not the LeaderWorkerSet's ``status.readyReplicas``: LWS v0.8.0 was seen reporting a group ready
    (and ``Available``) while its worker StatefulSet had 3 of 4 pods ready and the 4th unschedulable.
    """
    by_group: dict[str, list[Obj]] = defaultdict(list)
    for pod in pods:
        if not _get(pod, "metadata", "deletionTimestamp"):
            by_group[_group_of(pod)].append(pod)
    return sum(1 for members in by_group.values() if len(members) == nodes and all(map(_pod_ready, members)))


def lws_complete(lws: Obj, desired: int, pods: Sequence[Obj], nodes: int) -> bool:
    """Every group is rolled out (the LWS controller's updatedReplicas) and ready (its pods show it).

    A LeaderWorkerSet has no ``status.observedGeneration``, so its counters can be stale right after a
    change; requiring exactly ``desired x nodes`` live pods, all Ready, closes most of that window (a
    scale-up or -down is seen at once).
    """
    live = [p for p in pods if not _get(p, "metadata", "deletionTimestamp")]
    if desired == 0:
        return not live
    updated = int(_get(lws, "status", "updatedReplicas", default=0) or 0)
    return updated == desired and len(live) == desired * nodes and ready_groups(live, nodes) == desired


def group_problems(pods: Sequence[Obj], needs: GroupNeeds) -> list[Problem]:
    """Problems of the pods, grouped: an unplaceable group names what it needs and the scheduler's reason."""
    by_group: dict[str, list[Obj]] = defaultdict(list)
    for pod in pods:
        by_group[_group_of(pod)].append(pod)
    problems: list[Problem] = []
    for group in sorted(by_group, key=lambda g: (not g.isdigit(), int(g) if g.isdigit() else 0, g)):
        for problem in pod_problems(by_group[group]):
            if problem.reason == "Unschedulable":
                problems.append(Problem(problem.reason, f"group {group} {needs.describe()}; {problem.message}"))
            else:
                problems.append(Problem(problem.reason, f"group {group}: {problem.message}"))
    return problems


def group_observation(lws: Obj | None, desired: int, pods: Sequence[Obj], needs: GroupNeeds) -> GroupObservation:
    if lws is None:
        return GroupObservation(False, (), 0)
    return GroupObservation(
        lws_complete(lws, desired, pods, needs.nodes),
        tuple(group_problems(pods, needs)),
        ready_groups(pods, needs.nodes),
    )


def observe_groups(
    plan: Plan, want: Obj, live: Obj | None, desired: int, pods: Sequence[Obj]
) -> GroupObservation | None:
    """The group view of a multi-node instance's live LeaderWorkerSet; None for a Deployment."""
    if want.get("kind") != "LeaderWorkerSet":
        return None
    resource = plan.kubernetes.resource_name if plan.kubernetes else None
    return group_observation(live, desired, pods, GroupNeeds(plan.nodes, plan.device_count, resource))
