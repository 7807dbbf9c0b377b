"""Drift detection: a child whose generation moved past our last apply is no longer current."""

from __future__ import annotations

from typing import Any

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
