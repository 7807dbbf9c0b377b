"""Status is a pure function of instance + Deployment + Pods (the GitOps contract)."""

from __future__ import annotations

from typing import Any

from xw_operator.k8s.events import transition_event
from xw_operator.k8s.status import (
    DEGRADED,
    FAILED,
    PENDING,
    PROGRESSING,
    READY,
    Failure,
    Observed,
    compute_status,
    condition_of,
    status_differs,
    status_patch,
)

NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T01:00:00Z"
ENDPOINT = "http://demo.ns.svc:8000/v1"
SCHED_MSG = "0/5 nodes are available: 5 Insufficient huawei.com/Ascend910. preemption: 0/5 nodes are available"


def deployment(
    *,
    replicas: int = 1,
    ready: int = 1,
    updated: int | None = None,
    generation: int = 1,
    observed: int | None = None,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"name": "demo", "generation": generation},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"xw.dev/model-instance": "demo"}}},
        "status": {
            "observedGeneration": generation if observed is None else observed,
            "replicas": replicas,
            "updatedReplicas": replicas if updated is None else updated,
            "readyReplicas": ready,
            "conditions": conditions or [],
        },
    }


def pod(
    name: str = "demo-abc", *, scheduled: dict[str, Any] | None = None, waiting: dict[str, Any] | None = None
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Pending", "conditions": []}
    if scheduled is not None:
        status["conditions"].append({"type": "PodScheduled", **scheduled})
    if waiting is not None:
        status["containerStatuses"] = [{"name": "engine", "image": "img:1", "state": {"waiting": waiting}}]
    return {"metadata": {"name": name}, "status": status}


def observed(**kw: Any) -> Observed:
    base: dict[str, Any] = {
        "generation": 2,
        "desired_replicas": 1,
        "endpoint": ENDPOINT,
        "image": "img:1",
        "deployment": deployment(),
        "children_current": True,
    }
    base.update(kw)
    return Observed(**base)


def cond(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    found = condition_of(status, ctype)
    assert found is not None, f"no {ctype} condition in {status}"
    return dict(found)


def test_all_replicas_ready_is_ready_with_endpoint_and_observed_generation() -> None:
    s = compute_status(observed(), now=NOW)
    assert s["phase"] == READY
    assert s["observedGeneration"] == 2
    assert s["readyReplicas"] == 1
    assert s["endpoint"] == ENDPOINT
    assert s["image"] == "img:1"
    assert cond(s, "Ready")["status"] == "True"
    assert cond(s, "Progressing")["status"] == "False"
    assert cond(s, "Degraded")["status"] == "False"
    assert ENDPOINT in cond(s, "Ready")["message"]


def test_no_deployment_yet_is_pending() -> None:
    s = compute_status(observed(deployment=None, children_current=False), now=NOW)
    assert s["phase"] == PENDING
    assert cond(s, "Ready")["status"] == "False"
    assert cond(s, "Progressing")["status"] == "True"
    assert "observedGeneration" not in s


def test_children_of_an_older_generation_keep_the_previous_observed_generation() -> None:
    prev = {"observedGeneration": 1, "phase": READY}
    s = compute_status(observed(children_current=False, previous=prev), now=NOW)
    assert s["phase"] == PROGRESSING
    assert s["observedGeneration"] == 1
    assert cond(s, "Ready")["status"] == "False"


def test_deployment_controller_not_caught_up_is_progressing() -> None:
    s = compute_status(observed(deployment=deployment(generation=3, observed=2)), now=NOW)
    assert s["phase"] == PROGRESSING
    assert cond(s, "Ready")["reason"] == "RollingOut"


def test_partially_ready_without_problems_is_progressing() -> None:
    s = compute_status(observed(desired_replicas=2, deployment=deployment(replicas=2, ready=1)), now=NOW)
    assert s["phase"] == PROGRESSING
    assert s["readyReplicas"] == 1
    assert "1/2 replicas ready" in cond(s, "Ready")["message"]


def test_unschedulable_pod_copies_the_scheduler_message() -> None:
    p = pod(scheduled={"status": "False", "reason": "Unschedulable", "message": SCHED_MSG})
    s = compute_status(observed(deployment=deployment(ready=0), pods=[p]), now=NOW)
    assert s["phase"] == DEGRADED
    for ctype, status in (("Ready", "False"), ("Degraded", "True")):
        c = cond(s, ctype)
        assert c["status"] == status
        assert c["reason"] == "Unschedulable"
        assert SCHED_MSG in c["message"]
    assert SCHED_MSG in s["message"]


def test_image_pull_backoff_is_degraded_with_the_image_named() -> None:
    p = pod(waiting={"reason": "ImagePullBackOff", "message": 'Back-off pulling image "img:1"'})
    s = compute_status(observed(deployment=deployment(ready=0), pods=[p]), now=NOW)
    assert s["phase"] == DEGRADED
    assert cond(s, "Degraded")["reason"] == "ImagePullBackOff"
    assert "img:1" in cond(s, "Degraded")["message"]


def test_crash_loop_is_degraded() -> None:
    p = pod(waiting={"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"})
    s = compute_status(observed(deployment=deployment(ready=0), pods=[p]), now=NOW)
    assert s["phase"] == DEGRADED
    assert cond(s, "Ready")["reason"] == "CrashLoopBackOff"


def test_container_creating_is_not_a_problem() -> None:
    p = pod(waiting={"reason": "ContainerCreating"})
    s = compute_status(observed(deployment=deployment(ready=0), pods=[p]), now=NOW)
    assert s["phase"] == PROGRESSING
    assert cond(s, "Degraded")["status"] == "False"


def test_terminating_pods_are_ignored() -> None:
    p = pod(waiting={"reason": "CrashLoopBackOff"})
    p["metadata"]["deletionTimestamp"] = NOW
    s = compute_status(observed(pods=[p]), now=NOW)
    assert s["phase"] == READY
    assert cond(s, "Degraded")["status"] == "False"


def test_progress_deadline_exceeded_stops_progressing() -> None:
    dep = deployment(
        ready=0,
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "demo-1" has timed out progressing.',
            }
        ],
    )
    s = compute_status(observed(deployment=dep), now=NOW)
    assert s["phase"] == DEGRADED
    assert cond(s, "Progressing")["status"] == "False"
    assert cond(s, "Progressing")["reason"] == "ProgressDeadlineExceeded"


def test_scaled_to_zero_is_ready_so_gitops_does_not_hang() -> None:
    s = compute_status(observed(desired_replicas=0, deployment=deployment(replicas=0, ready=0)), now=NOW)
    assert s["phase"] == READY
    assert cond(s, "Ready")["status"] == "True"
    assert cond(s, "Ready")["reason"] == "ScaledToZero"


def test_failure_is_failed_with_message_and_no_endpoint() -> None:
    f = Failure("UnknownChip", "unknown chip 'tpu-v9'")
    s = compute_status(observed(failure=f, deployment=None, children_current=False, endpoint=None, image=None), now=NOW)
    assert s["phase"] == FAILED
    assert s["observedGeneration"] == 2
    assert "endpoint" not in s
    assert cond(s, "Ready")["status"] == "False"
    assert cond(s, "Ready")["reason"] == "UnknownChip"
    assert cond(s, "Ready")["message"] == "unknown chip 'tpu-v9'"
    assert cond(s, "Degraded")["status"] == "True"
    assert s["message"] == "unknown chip 'tpu-v9'"


def test_recomputing_an_unchanged_world_gives_an_identical_status() -> None:
    first = compute_status(observed(), now=NOW)
    again = compute_status(observed(previous=first), now=LATER)
    assert again == first
    assert not status_differs(first, again)


def test_transition_time_moves_only_for_conditions_that_changed() -> None:
    first = compute_status(observed(deployment=deployment(ready=0)), now=NOW)
    second = compute_status(observed(previous=first), now=LATER)
    assert cond(second, "Ready")["lastTransitionTime"] == LATER  # False -> True
    assert cond(second, "Degraded")["lastTransitionTime"] == NOW  # False -> False


def test_status_patch_nulls_keys_that_disappear() -> None:
    ready = compute_status(observed(), now=NOW)
    failed = compute_status(observed(failure=Failure("InvalidSpec", "bad"), endpoint=None), now=NOW)
    patch = status_patch(ready, failed)
    assert patch["endpoint"] is None
    assert patch["phase"] == FAILED


def test_events_only_on_transitions() -> None:
    ready = compute_status(observed(), now=NOW)
    assert transition_event(ready, compute_status(observed(previous=ready), now=LATER)) is None
    p = pod(scheduled={"status": "False", "reason": "Unschedulable", "message": SCHED_MSG})
    degraded = compute_status(observed(deployment=deployment(ready=0), pods=[p], previous=ready), now=LATER)
    event = transition_event(ready, degraded)
    assert event is not None
    assert event.type == "Warning"
    assert event.reason == "Unschedulable"
    assert SCHED_MSG in event.message
    back = transition_event(degraded, compute_status(observed(previous=degraded), now=LATER))
    assert back is not None and back.type == "Normal" and back.reason == "AllReplicasReady"


def kstatus_pair(s: dict[str, Any]) -> tuple[str, str]:
    return cond(s, "Reconciling")["status"], cond(s, "Stalled")["status"]


def test_scale_subresource_fields_come_from_the_live_deployment() -> None:
    s = compute_status(observed(desired_replicas=3, deployment=deployment(replicas=3, ready=1)), now=NOW)
    assert (s["replicas"], s["readyReplicas"]) == (3, 1)
    assert s["selector"] == "xw.dev/model-instance=demo"
    pending = compute_status(observed(deployment=None, children_current=False), now=NOW)
    assert pending["replicas"] == 0 and "selector" not in pending


def test_kstatus_conditions_follow_the_phase() -> None:
    """Reconciling=True while Pending/Progressing, Stalled=True when Degraded/Failed (Flux reads these)."""
    ready = compute_status(observed(), now=NOW)
    assert kstatus_pair(ready) == ("False", "False")
    rolling = compute_status(observed(deployment=deployment(ready=0)), now=NOW)
    assert rolling["phase"] == PROGRESSING and kstatus_pair(rolling) == ("True", "False")
    assert cond(rolling, "Reconciling")["reason"] == "RollingOut"
    unschedulable = pod(scheduled={"status": "False", "reason": "Unschedulable", "message": SCHED_MSG})
    stuck = compute_status(observed(deployment=deployment(ready=0), pods=[unschedulable]), now=NOW)
    assert stuck["phase"] == DEGRADED and kstatus_pair(stuck) == ("False", "True")
    assert SCHED_MSG in cond(stuck, "Stalled")["message"]
    f = Failure("UnknownChip", "unknown chip 'tpu-v9'")
    failed = compute_status(observed(failure=f, deployment=None, children_current=False), now=NOW)
    assert kstatus_pair(failed) == ("False", "True") and cond(failed, "Stalled")["reason"] == "UnknownChip"
