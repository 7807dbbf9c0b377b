"""Is the live child exactly what we rendered? Pure checks on a live object and its managedFields.

Server-side apply only takes back fields the applier owns: a field *added* by another client (``kubectl
set env``, a ``hostPath`` volume patched into the pod template, a Service port edited) stays after any
number of our applies, and the generation or our hash annotation says nothing about it (Services have no
generation at all). The API server records who set what in ``metadata.managedFields``, so:

- **foreign fields**: any manager other than ours (``xw-operator``) owning a field under ``spec``, one of
  the label keys we set, or ``ownerReferences`` means someone else changed what runs. Entries for the
  ``status`` subresource (the Deployment controller) and fields outside those paths (the Deployment
  controller's ``deployment.kubernetes.io/revision`` annotation, someone's extra label) are not drift.
- **missing fields**: one of our labels or our controller ownerReference is gone (a removal leaves no
  manager behind, so it is checked directly).

Putting it back is the caller's job (reconcile.restore_child): a PUT of the rendering, which removes
what others added, an apply, then managedFields reduced to our own apply entry, so the next check is clean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from xw_operator.k8s.client import FIELD_MANAGER

Obj = Mapping[str, Any]

IGNORED_SUBRESOURCES = frozenset({"status"})


def _owned_paths(fields: Obj, wanted_labels: Sequence[str]) -> list[str]:
    """Human-readable paths under spec / our labels / ownerReferences present in one fieldsV1 set."""
    out: list[str] = []
    spec = fields.get("f:spec")
    if isinstance(spec, Mapping) and spec:
        out.extend(f"spec.{_describe(key, value)}" for key, value in spec.items() if key != ".")
    meta = fields.get("f:metadata")
    if isinstance(meta, Mapping):
        labels = meta.get("f:labels")
        if isinstance(labels, Mapping):
            out.extend(
                f"metadata.labels[{key[2:]}]" for key in labels if key.startswith("f:") and key[2:] in wanted_labels
            )
        if meta.get("f:ownerReferences"):
            out.append("metadata.ownerReferences")
    return out


def _describe(key: str, value: Any, depth: int = 0) -> str:
    """``f:template`` -> ``template.spec.containers...``: a short path to the first owned leaf."""
    name = key[2:] if key.startswith(("f:", "k:", "v:", "i:")) else key
    if depth < 5 and isinstance(value, Mapping):
        children = [(k, v) for k, v in value.items() if k != "."]
        if len(children) == 1:
            return f"{name}.{_describe(*children[0], depth=depth + 1)}"
    return name


def foreign_fields(live: Obj, wanted_labels: Sequence[str] = ()) -> list[str]:
    """``manager: path`` for every field of spec / our labels / ownerReferences another manager owns."""
    found = []
    for entry in live.get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") == FIELD_MANAGER or entry.get("subresource") in IGNORED_SUBRESOURCES:
            continue
        for path in _owned_paths(entry.get("fieldsV1") or {}, wanted_labels):
            found.append(f"{entry.get('manager') or '?'}: {path}")
    return found


def missing_metadata(desired: Obj, live: Obj) -> list[str]:
    """Our labels (value changed or removed) and our controller ownerReference, when gone from ``live``."""
    meta = live.get("metadata", {})
    labels = meta.get("labels") or {}
    out = [
        f"metadata.labels[{key}]"
        for key, value in (desired.get("metadata", {}).get("labels") or {}).items()
        if labels.get(key) != value
    ]
    have = {(o.get("uid"), bool(o.get("controller"))) for o in meta.get("ownerReferences") or []}
    for owner in desired.get("metadata", {}).get("ownerReferences") or []:
        if (owner.get("uid"), bool(owner.get("controller"))) not in have:
            out.append(f"metadata.ownerReferences[{owner.get('kind')}/{owner.get('name')}]")
    return out


def drift(desired: Obj, live: Obj) -> list[str]:
    """Everything about ``live`` that is not what ``desired`` (our rendering) says; empty when clean."""
    wanted_labels = list((desired.get("metadata", {}).get("labels") or {}).keys())
    return missing_metadata(desired, live) + foreign_fields(live, wanted_labels)


# Fields the API server allocates on a Service and that a PUT must carry over unchanged.
SERVICE_ALLOCATED = ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "healthCheckNodePort")


def replacement(desired: Obj, live: Obj) -> dict[str, Any]:
    """The body of a PUT that makes ``live`` exactly ``desired`` again.

    - spec, our labels and ownerReferences come from the rendering; labels and annotations others added
      are kept (only our keys are ours to enforce; the Deployment controller keeps its revision there);
    - a Service keeps the addresses the API server allocated (immutable);
    - managedFields keep only our entries and the ``status`` subresource's: every foreign manager's
      record goes (never emptied: see reconcile.restore_child).
    """
    meta = live.get("metadata", {})
    want = desired.get("metadata", {})
    body: dict[str, Any] = {
        "apiVersion": desired["apiVersion"],
        "kind": desired["kind"],
        "metadata": {
            "name": want["name"],
            "namespace": want.get("namespace"),
            "resourceVersion": meta.get("resourceVersion"),
            "labels": {**(meta.get("labels") or {}), **(want.get("labels") or {})},
            "annotations": {**(meta.get("annotations") or {}), **(want.get("annotations") or {})},
            "ownerReferences": list(want.get("ownerReferences") or []),
            "managedFields": [
                e
                for e in meta.get("managedFields") or []
                if e.get("manager") == FIELD_MANAGER or e.get("subresource") in IGNORED_SUBRESOURCES
            ],
        },
        "spec": _json_copy(desired.get("spec") or {}),
    }
    if desired["kind"] == "Service":
        live_spec = live.get("spec") or {}
        for key in SERVICE_ALLOCATED:
            if key in live_spec and key not in body["spec"]:
                body["spec"][key] = live_spec[key]
    return body


def _json_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_copy(v) for v in value]
    return value
