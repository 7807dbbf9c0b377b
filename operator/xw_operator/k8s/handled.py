"""What kopf remembers of each ModelInstance it handled, kept in the operator's memory, not on the object.

kopf compares every ModelInstance event with the spec it last handled (its "diff base") to tell a new
or changed spec from a status update. Its stock storage writes that spec into an annotation on the
instance after every handled change: one more write per instance, and a write into an object its user
owns, whose metadata GitOps tools compare with Git. The operator does not need it to survive a restart:
create, update and resume all run the same idempotent reconcile, so after a restart (or a leader
handover) every instance counts as new once, is reconciled, and writes nothing when nothing changed.

kopf's handler progress (retries) stays in annotations, without kopf's marker annotation
(:class:`RetryProgress`), so a handler that succeeds at once leaves nothing on the object.

Entries are dropped when an instance is deleted (:meth:`HandledSpecs.forget`, from a watch handler).
Instances handled by an older operator keep their ``xw.dev/last-handled-configuration`` annotation; it
is no longer read or updated.
"""

from __future__ import annotations

import threading
from typing import Any

import kopf


class HandledSpecs(kopf.DiffBaseStorage):
    """kopf's diff base per instance uid, in a dict guarded by a lock. ``prefix``: the annotation prefix
    of kopf's retry progress (:class:`RetryProgress`), left out of the essence."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.bookkeeping = f"{prefix}/"
        self._lock = threading.Lock()
        self._essences: dict[str, Any] = {}

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        """kopf's essence of the instance, without our own bookkeeping annotations (a retry's progress
        record is not a change of the instance)."""
        essence = super().build(body=body, extra_fields=extra_fields)
        annotations = (essence.get("metadata") or {}).get("annotations")
        if annotations:
            for key in [k for k in annotations if k.startswith(self.bookkeeping)]:
                del annotations[key]
            self.remove_empty_stanzas(essence)
        return essence

    def fetch(self, *, body: kopf.Body) -> Any:
        with self._lock:
            return self._essences.get(str(body.get("metadata", {}).get("uid")))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        with self._lock:
            self._essences[str(body.get("metadata", {}).get("uid"))] = essence

    def forget(self, uid: str) -> None:
        with self._lock:
            self._essences.pop(uid, None)


class RetryProgress(kopf.AnnotationsProgressStorage):
    """kopf's handler progress in annotations under ``xw.dev/``, minus its ``xw.dev/kopf-managed`` marker.

    kopf records progress even for a handler that succeeds at once (stored, then purged in the same
    patch), and the marker it adds on the first record would be the one write left into every new
    instance. The marker lets *other* kopf operators recognise this prefix; :class:`HandledSpecs` drops
    the prefix from the essence itself. Progress is written only while a handler is retried."""

    def _store_marker(self, prefix: str, patch: kopf.Patch, body: kopf.Body) -> None:
        return None
