"""Kubernetes Events for status transitions (``kubectl describe mi`` shows the story of an instance).

One Event per transition -- a change of phase or of the Ready/Degraded condition's status or reason --
never per reconcile, so an unchanged world posts nothing. Events are posted directly with the core API
rather than through kopf's posting queue: the operator's worker threads call this, and kopf's
log-to-event bridge stays off (its "Handler succeeded" events would be writes on every resume).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from xw_operator.k8s.client import ApiError, KubeApi, object_path
from xw_operator.k8s.status import COND_DEGRADED, COND_READY, DEGRADED, FAILED, condition_of
from xw_operator.settings import settings

log = logging.getLogger(__name__)

COMPONENT = "xw-operator"
MAX_MESSAGE = 1024  # the API server refuses Event messages above 1 KiB


@dataclass(frozen=True)
class EventSpec:
    type: str  # Normal | Warning
    reason: str
    message: str


def _key(status: Mapping[str, Any], ctype: str) -> tuple[Any, Any]:
    cond = condition_of(status, ctype) or {}
    return cond.get("status"), cond.get("reason")


def transition_event(old: Mapping[str, Any], new: Mapping[str, Any]) -> EventSpec | None:
    """The Event describing the change from ``old`` to ``new`` status, or None when nothing changed."""
    if (
        old.get("phase") == new.get("phase")
        and _key(old, COND_READY) == _key(new, COND_READY)
        and _key(old, COND_DEGRADED) == _key(new, COND_DEGRADED)
    ):
        return None
    ready = condition_of(new, COND_READY) or {}
    degraded = condition_of(new, COND_DEGRADED) or {}
    warning = new.get("phase") in (FAILED, DEGRADED) or degraded.get("status") == "True"
    source = degraded if degraded.get("status") == "True" else ready
    reason = str(source.get("reason") or new.get("phase") or "Unknown")
    message = f"phase {old.get('phase') or '-'} -> {new.get('phase')}: {source.get('message', '')}"
    return EventSpec("Warning" if warning else "Normal", reason, message)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def post_event(api: KubeApi, involved: Mapping[str, Any], event: EventSpec) -> None:
    """Create a core/v1 Event about ``involved``. Failures are logged, never raised: events are advisory."""
    meta = involved.get("metadata", {})
    namespace = meta.get("namespace") or "default"
    now = now_rfc3339()
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'xw')}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta.get("name"),
            "namespace": namespace,
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": event.type,
        "reason": event.reason[:128],
        "message": event.message[:MAX_MESSAGE],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": settings().pod_name or socket.gethostname(),
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        api.create(object_path("v1", "events", namespace), body)
    except ApiError as exc:
        log.warning("could not post event %s on %s/%s: %s", event.reason, namespace, meta.get("name"), exc)
