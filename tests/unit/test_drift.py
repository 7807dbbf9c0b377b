"""Drift detection: a child whose generation moved past our last apply is no longer current."""

from __future__ import annotations

from typing import Any

from xw_operator.k8s.drift import drift, foreign_fields, replacement
from xw_operator.k8s.reconcile import SPEC_HASH_ANNOTATION, child_key, generation_of, is_current


def child(generation: int | None, spec_hash: str = "h1") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "m", "namespace": "ns", "annotations": {SPEC_HASH_ANNOTATION: spec_hash}}
    if generation is not None:
        meta["generation"] = generation
    return {"kind": "Deployment", "metadata": meta}


def test_unknown_generation_trusts_the_hash() -> None:
    assert is_current(child(None), child(7)) is True


def test_same_generation_is_current() -> None:
    assert is_current(child(None), child(3), known_generation=3) is True


def test_spec_edited_by_someone_else_is_not_current() -> None:
    assert is_current(child(None), child(4), known_generation=3) is False


def test_objects_without_generation_are_judged_by_hash_alone() -> None:
    assert is_current(child(None), child(None), known_generation=3) is True
    assert is_current(child(None), child(None, spec_hash="other"), known_generation=3) is False


def test_helpers() -> None:
    assert generation_of(child(5)) == 5
    assert generation_of(None) is None
    assert child_key(child(1)) == ("Deployment", "ns", "m")


# ---------------------------------------------------------------------------- managedFields (drift.py)

OURS = {"app.kubernetes.io/managed-by": "xw-operator", "xw.dev/model-instance": "m"}
OWNER = {"apiVersion": "xw.dev/v1alpha1", "kind": "ModelInstance", "name": "m", "uid": "u1", "controller": True}


def rendered(kind: str = "Deployment") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1" if kind == "Deployment" else "v1",
        "kind": kind,
        "metadata": {"name": "m", "namespace": "ns", "labels": dict(OURS), "ownerReferences": [OWNER]},
        "spec": {"ports": [{"port": 8000}]} if kind == "Service" else {"replicas": 1},
    }


def live_with(*entries: dict[str, Any], kind: str = "Deployment", **meta: Any) -> dict[str, Any]:
    obj = rendered(kind)
    obj["metadata"].update(resourceVersion="7", managedFields=list(entries), **meta)
    return obj


APPLY = {"manager": "xw-operator", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}


def test_fields_only_we_own_are_clean() -> None:
    assert drift(rendered(), live_with(APPLY)) == []


def test_status_subresource_and_revision_annotation_of_the_controller_are_not_drift() -> None:
    kcm_status = {"manager": "kube-controller-manager", "subresource": "status", "fieldsV1": {"f:status": {}}}
    kcm_revision = {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:deployment.kubernetes.io/revision": {}}}},
    }
    someone_label = {"manager": "kubectl-label", "fieldsV1": {"f:metadata": {"f:labels": {"f:team": {}}}}}
    assert drift(rendered(), live_with(APPLY, kcm_status, kcm_revision, someone_label)) == []


def test_env_added_by_kubectl_set_is_drift() -> None:
    env = {
        "manager": "kubectl-set",
        "operation": "Update",
        "fieldsV1": {
            "f:spec": {
                "f:template": {
                    "f:spec": {"f:containers": {'k:{"name":"engine"}': {"f:env": {'k:{"name":"X"}': {".": {}}}}}}
                }
            }
        },
    }
    found = drift(rendered(), live_with(APPLY, env))
    assert len(found) == 1 and found[0].startswith("kubectl-set: spec.template.spec.containers")


def test_our_label_taken_over_or_owner_reference_removed_is_drift() -> None:
    relabel = {"manager": "kubectl-label", "fieldsV1": {"f:metadata": {"f:labels": {"f:xw.dev/model-instance": {}}}}}
    assert drift(rendered(), live_with(APPLY, relabel)) == ["kubectl-label: metadata.labels[xw.dev/model-instance]"]
    orphan = live_with(APPLY)
    orphan["metadata"]["ownerReferences"] = []
    assert drift(rendered(), orphan) == ["metadata.ownerReferences[ModelInstance/m]"]
    assert foreign_fields(orphan) == []


def test_replacement_keeps_allocated_service_fields_and_others_labels_and_clears_managers() -> None:
    live = live_with(APPLY, {"manager": "kubectl-patch", "fieldsV1": {"f:spec": {}}}, kind="Service")
    live["metadata"]["labels"]["team"] = "a"
    live["metadata"]["annotations"] = {"note": "x"}
    live["spec"] = {"ports": [{"port": 9999}], "clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"]}
    body = replacement(rendered("Service"), live)
    assert body["spec"] == {"ports": [{"port": 8000}], "clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"]}
    assert body["metadata"]["labels"] == {**OURS, "team": "a"}
    assert body["metadata"]["annotations"] == {"note": "x"}
    assert body["metadata"]["resourceVersion"] == "7"
    assert body["metadata"]["managedFields"] == [APPLY]
    assert body["metadata"]["ownerReferences"] == [OWNER]
