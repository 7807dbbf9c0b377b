"""Which child watch events trigger a status refresh (k8s/child_events.py): the rest must cost nothing."""

from __future__ import annotations

from typing import Any

from xw_operator.k8s.child_events import ChildEvents

UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/5 nodes"}


def pod(uid: str = "p1", *, broken: bool = False) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Pending", "conditions": [UNSCHEDULABLE] if broken else []}
    return {"kind": "Pod", "metadata": {"name": uid, "uid": uid}, "status": status}


def test_initial_listing_and_service_updates_need_no_refresh() -> None:
    events = ChildEvents()
    assert not events.matters(None, {"kind": "Deployment"})
    assert not events.matters(None, pod())
    assert not events.matters("MODIFIED", {"kind": "Service"})
    assert events.matters("DELETED", {"kind": "Service"})
    assert events.matters("MODIFIED", {"kind": "Deployment"})


def test_a_pod_matters_while_broken_and_once_more_when_it_recovers() -> None:
    events = ChildEvents()
    assert not events.matters("ADDED", pod())
    assert events.matters("MODIFIED", pod(broken=True))
    assert events.matters("MODIFIED", pod())  # recovered: the Degraded condition must go
    assert not events.matters("MODIFIED", pod())
    assert events.matters("DELETED", pod())


def test_a_pod_broken_at_start_up_is_remembered_from_the_initial_listing() -> None:
    events = ChildEvents()
    assert not events.matters(None, pod(broken=True))
    assert events.matters("MODIFIED", pod())
