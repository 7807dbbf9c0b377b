"""Ownership: the operator writes only to objects it controls, and withdraws workloads the policy revokes.

Server-side apply with ``force`` takes over any object of the same name: a ModelInstance named like an
existing Service would replace its selector (hijacking its traffic) and add an owner reference (so the
garbage collector deletes it with the instance). So before any apply, every child's live object must
be absent or controlled by this instance (its controller ownerReference carries the instance's uid).
Anything else is a :class:`NameConflict`: status Failed with reason ``NameConflict``, a Warning Event
naming the existing object, and not a single write to it.

One exception keeps recreation working: a child whose controller is a ModelInstance *of the same name*
that no longer exists (the instance was deleted and created again before the garbage collector ran)
carries our managed-by label and is adopted -- it was ours, and the old owner is gone. Likewise a child
whose ownerReference someone removed by hand, which still carries our labels for this instance and
xw-operator's server-side-apply record in managedFields: the reconcile puts the reference back.

Revocation: when an instance fails a rule that grants host access (policy, an unknown chip profile,
an engine block that is gone), :func:`withdraw_workload` scales its Deployment to 0 -- only if this
instance controls it -- so pods that the administrator no longer allows stop within seconds rather than
running on with old privileges. The Service stays (it grants nothing); when the policy allows the
instance again the next reconcile re-applies the Deployment from the current rendering.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from xw_operator.errors import XwError
from xw_operator.instance import API_VERSION, KIND
from xw_operator.k8s.client import KubeApi, object_path
from xw_operator.labels import MANAGED_BY, MANAGED_BY_KEY, MODEL_INSTANCE_KEY

log = logging.getLogger(__name__)

Obj = Mapping[str, Any]

# Failure reasons that mean "the administrator does not (or no longer does) grant this": the running
# workload is withdrawn. Other failures (a bad user edit, no image for an architecture) keep the last
# valid workload running, since it still is what the administrator allows.
WITHDRAWN = "withdrawn"  # the spec-hash annotation of a Deployment scaled to 0 by revocation
REVOKING_REASONS = frozenset(
    {"PolicyRefused", "HostPathNotAllowed", "ImageNotAllowed", "PlacementNotAllowed", "UnknownChip", "NoSandbox"}
)


class NameConflict(XwError):
    """A child's name is taken by an object this instance does not control."""

    reason = "NameConflict"

    def __init__(self, message: str, existing: Obj) -> None:
        super().__init__(message)
        self.existing = existing


def controller_of(obj: Obj) -> Mapping[str, Any] | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def controls(live: Obj | None, instance_meta: Obj) -> bool:
    """True when ``live`` is absent or controlled by the instance (see the module doc for the adoption)."""
    if live is None:
        return True
    ref = controller_of(live)
    if ref is None:
        return _orphaned_by_hand(live, instance_meta)
    if instance_meta.get("uid") and ref.get("uid") == instance_meta.get("uid"):
        return True
    labels = live.get("metadata", {}).get("labels") or {}
    return bool(
        ref.get("apiVersion") == API_VERSION
        and ref.get("kind") == KIND
        and ref.get("name") == instance_meta.get("name")
        and labels.get(MANAGED_BY_KEY) == MANAGED_BY
    )


def _orphaned_by_hand(live: Obj, instance_meta: Obj) -> bool:
    """Ours with the ownerReference removed by someone (issue 11: it is put back, not abandoned): our
    labels for this instance and a server-side-apply record of xw-operator on the object."""
    meta = live.get("metadata", {})
    labels = meta.get("labels") or {}
    applied = any(
        e.get("manager") == "xw-operator" and e.get("operation") == "Apply" for e in meta.get("managedFields") or []
    )
    return bool(
        applied
        and labels.get(MANAGED_BY_KEY) == MANAGED_BY
        and labels.get(MODEL_INSTANCE_KEY) == instance_meta.get("name")
    )


def describe(obj: Obj) -> str:
    meta = obj.get("metadata", {})
    ref = controller_of(obj)
    owner = f"controlled by {ref.get('kind')} {ref.get('name')}" if ref else "not created by xw-operator"
    return f"{obj.get('kind')} {meta.get('namespace')}/{meta.get('name')} ({owner})"


def ensure_controlled(children: Iterable[Obj], lives: Mapping[Any, Obj | None], keys: Iterable[Any], meta: Obj) -> None:
    """Raise :class:`NameConflict` for the first child whose live object belongs to someone else."""
    for child, key in zip(children, keys, strict=True):
        live = lives.get(key)
        if not controls(live, meta):
            assert live is not None
            raise NameConflict(
                f"{describe(live)} already exists with the name this ModelInstance needs; xw-operator leaves it "
                f"untouched. Rename the ModelInstance or remove the existing {child.get('kind')}",
                live,
            )


def owned_or_none(live: Obj | None, instance_meta: Obj) -> Obj | None:
    """``live`` when the instance controls it (status must never report someone else's Deployment)."""
    return live if live is not None and controls(live, instance_meta) else None


def revocation_message(reason: str, message: str) -> str:
    """The status message of a failure; a revoking one says that nothing runs until it is allowed again."""
    if reason not in REVOKING_REASONS:
        return message
    return f"{message} (no engine pod runs until this is allowed again)"


def withdraw_workload(
    api: KubeApi, instance_body: Obj, reason: str, hash_annotation: str, *, multi_node: bool = False
) -> Obj | None:
    """Scale the instance's Deployment (and, for an operator with multi-node support, its
    LeaderWorkerSet) to 0 when ``reason`` revokes it; the last patched object, or None when nothing was
    written.

    Scaling (not deleting) needs no delete permission and leaves a visible ``0/0`` workload behind.
    The patch also clears the spec-hash annotation, so the next allowed reconcile re-applies the current
    rendering even after an operator restart; the resourceVersion in it is a precondition: an object
    replaced since the GET is never touched.
    """
    if reason not in REVOKING_REASONS:
        return None
    meta = instance_body["metadata"]
    paths = [("Deployment", object_path("apps/v1", "deployments", meta["namespace"], meta["name"]))]
    if multi_node:
        from xw_operator.render_lws import LWS_API_VERSION, LWS_PLURAL, lws_name

        paths.append(
            ("LeaderWorkerSet", object_path(LWS_API_VERSION, LWS_PLURAL, meta["namespace"], lws_name(meta["name"])))
        )
    patched: Obj | None = None
    for kind, path in paths:
        result = _scale_to_zero(api, path, meta, hash_annotation)
        if result is not None:
            patched = result
            log.warning(
                "ModelInstance %s/%s: %s; scaled its %s to 0 (the administrator no longer allows it)",
                meta["namespace"],
                meta["name"],
                reason,
                kind,
            )
    return patched


def _scale_to_zero(api: KubeApi, path: str, meta: Obj, hash_annotation: str) -> Obj | None:
    live = api.get(path)
    if live is None or live["metadata"].get("deletionTimestamp") or not controls(live, meta):
        return None
    annotations = live["metadata"].get("annotations") or {}
    if live.get("spec", {}).get("replicas") == 0 and annotations.get(hash_annotation) == WITHDRAWN:
        return None
    patch = {
        "metadata": {
            "resourceVersion": live["metadata"]["resourceVersion"],
            "annotations": {hash_annotation: WITHDRAWN},
        },
        "spec": {"replicas": 0},
    }
    return api.merge_patch(path, patch)
