"""ownership.py: which live objects the operator may write to, and which failures revoke a workload."""

from __future__ import annotations

from typing import Any

import pytest

from xw_operator.k8s.ownership import REVOKING_REASONS, NameConflict, controls, ensure_controlled

META = {"name": "qwen", "namespace": "team-a", "uid": "uid-1"}


def obj(kind: str = "Service", owner: dict[str, Any] | None = None, labels: dict[str, str] | None = None) -> Any:
    meta: dict[str, Any] = {"name": "qwen", "namespace": "team-a", "labels": labels or {}}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {"kind": kind, "metadata": meta}


def ref(uid: str, *, kind: str = "ModelInstance", name: str = "qwen", controller: bool = True) -> dict[str, Any]:
    return {"apiVersion": "xw.dev/v1alpha1", "kind": kind, "name": name, "uid": uid, "controller": controller}


MANAGED = {"app.kubernetes.io/managed-by": "xw-operator"}


def test_absent_or_own_objects_may_be_written() -> None:
    assert controls(None, META)
    assert controls(obj(owner=ref("uid-1")), META)


@pytest.mark.parametrize(
    "live",
    [
        obj(),  # someone's Service, no owner
        obj(labels=MANAGED),  # a forged managed-by label is not ownership
        obj(owner=ref("uid-1", controller=False)),  # owner but not controller
        obj(owner=ref("uid-9", name="other"), labels=MANAGED),  # another instance's child
        obj(owner=ref("uid-9", kind="ReplicaSet")),
        obj(owner=ref("uid-9")),  # previous incarnation without our label: not adopted
    ],
)
def test_foreign_objects_are_a_name_conflict(live: Any) -> None:
    assert not controls(live, META)
    with pytest.raises(NameConflict) as exc:
        ensure_controlled([{"kind": "Service"}], {"k": live}, ["k"], META)
    assert exc.value.reason == "NameConflict"
    assert "Service team-a/qwen" in str(exc.value)


def test_a_previous_incarnation_of_the_same_instance_is_adopted() -> None:
    assert controls(obj(owner=ref("uid-old"), labels=MANAGED), META)


def test_policy_and_vanished_profiles_revoke_but_user_edits_do_not() -> None:
    assert {"ImageNotAllowed", "HostPathNotAllowed", "PlacementNotAllowed", "UnknownChip"} <= REVOKING_REASONS
    assert "InvalidSpec" not in REVOKING_REASONS and "ImageNotAvailable" not in REVOKING_REASONS
