"""Status of a multi-node instance, by group: ready groups, unplaceable groups, crashing workers."""

from __future__ import annotations

from typing import Any

from xw_operator.k8s.status import DEGRADED, PROGRESSING, READY, Observed, compute_status, condition_of
from xw_operator.k8s.status_groups import GroupNeeds, group_observation

NOW = "2026-01-01T00:00:00Z"
NEEDS = GroupNeeds(nodes=2, count=8, resource="huawei.com/Ascend910")
SCHED = "0/9 nodes are available: 4 node(s) didn't match pod anti-affinity rules. preemption: not helpful"


def lws(*, ready: int = 1, updated: int = 1, available: bool = True) -> dict[str, Any]:
    cond = {"type": "Available" if available else "Progressing", "status": "True"}
    return {
        "kind": "LeaderWorkerSet",
        "metadata": {"name": "big-lws", "generation": 3},
        "status": {"readyReplicas": ready, "updatedReplicas": updated, "replicas": 1, "conditions": [cond]},
    }


def pod(
    name: str, group: int = 0, *, ready: bool = True, scheduled: dict[str, Any] | None = None, waiting: str = ""
) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if scheduled:
        conditions.append({"type": "PodScheduled", **scheduled})
    status: dict[str, Any] = {"phase": "Running" if ready else "Pending", "conditions": conditions}
    if waiting:
        status["containerStatuses"] = [{"name": "engine", "image": "img:1", "state": {"waiting": {"reason": waiting}}}]
    labels = {"leaderworkerset.sigs.k8s.io/group-index": str(group)}
    return {"metadata": {"name": name, "labels": labels}, "status": status}


def status_of(live: dict[str, Any] | None, pods: list[dict[str, Any]], desired: int = 1) -> dict[str, Any]:
    groups = group_observation(live, desired, pods, NEEDS)
    obs = Observed(
        generation=3,
        desired_replicas=desired,
        endpoint="http://big.llm.svc:8000/v1",
        image="img:1",
        deployment=live,
        pods=pods,
        children_current=True,
        complete=groups.complete,
        problems=groups.problems,
        ready_replicas=groups.ready,
    )
    return compute_status(obs, now=NOW)


def ready_condition(status: dict[str, Any]) -> dict[str, Any]:
    found = condition_of(status, "Ready")
    assert found is not None
    return dict(found)


def test_a_group_with_leader_and_worker_ready_is_ready() -> None:
    status = status_of(lws(), [pod("big-lws-0"), pod("big-lws-0-1")])
    assert status["phase"] == READY and status["readyReplicas"] == 1
    assert ready_condition(status)["reason"] == "AllReplicasReady"


def test_ready_groups_come_from_the_pods_not_the_lws_counters() -> None:
    # Seen with LWS v0.8.0: readyReplicas 1 and Available while a worker of the group was unschedulable.
    unschedulable = {"status": "False", "reason": "Unschedulable", "message": SCHED}
    pods = [pod("big-lws-0"), pod("big-lws-0-1", ready=False, scheduled=unschedulable)]
    status = status_of(lws(ready=1, updated=1, available=True), pods)
    assert status["readyReplicas"] == 0 and status["phase"] == DEGRADED


def test_a_missing_worker_keeps_the_group_progressing_even_if_lws_still_says_available() -> None:
    # LWS has no observedGeneration: its counters may lag; the pods decide.
    status = status_of(lws(), [pod("big-lws-0")])
    assert status["phase"] == PROGRESSING


def test_scaling_to_two_groups_waits_for_the_second_group() -> None:
    pods = [pod("big-lws-0"), pod("big-lws-0-1"), pod("big-lws-1", 1, ready=False)]
    status = status_of(lws(ready=1, updated=1), pods, desired=2)
    assert status["phase"] == PROGRESSING and "1/2 replicas ready" in status["message"]
    pods = [*pods[:2], pod("big-lws-1", 1), pod("big-lws-1-1", 1)]
    assert status_of(lws(ready=2, updated=2), pods, desired=2)["phase"] == READY


def test_an_unplaceable_group_says_what_it_needs_and_the_schedulers_reason() -> None:
    unschedulable = {"status": "False", "reason": "Unschedulable", "message": SCHED}
    pods = [pod("big-lws-0"), pod("big-lws-0-1", ready=False, scheduled=unschedulable)]
    status = status_of(lws(ready=0, updated=1, available=False), pods)
    ready = ready_condition(status)
    assert status["phase"] == DEGRADED and ready["reason"] == "Unschedulable"
    assert (
        "group 0 needs 2 nodes with 8 free huawei.com/Ascend910; pod big-lws-0-1 cannot be scheduled"
        in (ready["message"])
    )
    assert SCHED in ready["message"]


def test_a_crashing_worker_degrades_the_instance_naming_its_group() -> None:
    pods = [pod("big-lws-0"), pod("big-lws-0-1", ready=False, waiting="CrashLoopBackOff")]
    status = status_of(lws(ready=0, updated=1, available=False), pods)
    degraded = condition_of(status, "Degraded")
    assert degraded is not None and degraded["status"] == "True"
    assert status["phase"] == DEGRADED
    assert degraded["message"] == "group 0: pod big-lws-0-1 container engine: CrashLoopBackOff"


def test_host_device_mode_needs_are_described_without_a_resource() -> None:
    assert GroupNeeds(3, 4, None).describe() == "needs 3 nodes with the chip's 4 devices"


def test_no_lws_yet_is_pending() -> None:
    obs = Observed(generation=1, desired_replicas=1, endpoint=None, image=None, deployment=None)
    assert compute_status(obs, now=NOW)["phase"] == "Pending"
