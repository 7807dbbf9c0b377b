"""Which child events can change a ModelInstance's status, so the others cost no API call.

A status refresh reads the instance, its Deployment and maybe its Pods (3 requests); at 1,000 instances
the Deployment, Service and Pod events of a rollout add up to tens of thousands of them, all queued
before the refreshes that matter (bench/bench_scale.py). Status is a function of the Deployment and of
*problem* Pods only (``status.pod_problems``: unschedulable, image pull, crash loop, ...), so:

- the initial listing after a start (kopf's event type None) needs nothing: the resume reconcile of each
  instance computes its status from scratch;
- a Service matters only when deleted (it is put back): nothing of its state reaches status;
- a Deployment event always matters (readiness counts, conditions, drift by generation);
- a Pod event matters when the Pod shows a problem now, or showed one the last time we saw it (its
  recovery must clear the Degraded condition even before the Deployment's counts move), or is deleted.
  Pods without problems only matter through the Deployment's counts, whose events carry them.

The set of Pods last seen with a problem lives in memory (uids, bounded by the broken pods of the
cluster); after a restart the initial listing refills it, and the resume reconcile covers the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from xw_operator.k8s.status import pod_problems


class ChildEvents:
    """Decides whether a child's watch event needs a status refresh (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._problem_pods: set[str] = set()

    def matters(self, event_type: str | None, body: Mapping[str, Any]) -> bool:
        kind = body.get("kind")
        if kind == "Pod":
            return self._pod(event_type, body)
        if event_type is None:
            return False
        return kind != "Service" or event_type == "DELETED"

    def _pod(self, event_type: str | None, body: Mapping[str, Any]) -> bool:
        uid = str((body.get("metadata") or {}).get("uid"))
        broken = event_type != "DELETED" and bool(pod_problems([body]))
        with self._lock:
            was_broken = uid in self._problem_pods
            if broken:
                self._problem_pods.add(uid)
            else:
                self._problem_pods.discard(uid)
        if event_type is None:
            return False
        return broken or was_broken or event_type == "DELETED"
