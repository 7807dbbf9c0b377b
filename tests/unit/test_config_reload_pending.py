"""A devices.yaml reload is never lost: the changed chips stay pending until every affected instance
was reached, and the watcher's idle polls retry (the old code advanced and forgot)."""

from __future__ import annotations

from typing import Any

from xw_operator.k8s.client import ApiError
from xw_operator.k8s.config_source import Change, FileSource
from xw_operator.k8s.reconcile import InvalidSpec
from xw_operator.k8s.runner import ConfigReactions
from xw_operator.k8s.status import Failure


def mi(name: str, chip: str, phase: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name},
        "spec": {"devices": {"chip": chip}},
        "status": {"phase": phase},
    }


class FlakyList:
    """Stands in for KubeApi.list: fails ``failures`` times, then returns the instances."""

    def __init__(self, failures: int, instances: list[dict[str, Any]]) -> None:
        self.failures = failures
        self.instances = instances

    def list(self, path: str, **_: Any) -> list[dict[str, Any]]:
        if self.failures:
            self.failures -= 1
            raise ApiError(503, "etcd leader changed")
        return self.instances


class RecordingReconciler:
    def __init__(self, fail: dict[str, int] | None = None, invalid: set[str] | None = None) -> None:
        self.calls: list[str] = []
        self.fail = dict(fail or {})
        self.invalid = invalid or set()

    def reconcile(self, namespace: str, name: str, body: Any = None) -> list[str]:
        self.calls.append(name)
        if self.fail.get(name):
            self.fail[name] -= 1
            raise ApiError(0, "API server unreachable: connection refused")
        if name in self.invalid:
            raise InvalidSpec(Failure("UnknownChip", "gone"))
        return []


def reactions(api: Any, reconciler: Any, tmp_path: Any) -> ConfigReactions:
    return ConfigReactions(api, reconciler, FileSource(tmp_path / "d.yaml"), (), True)


def change(*chips: str) -> Change:
    return Change(None, None, frozenset(chips), "d1")  # type: ignore[arg-type]


def test_listing_failure_keeps_the_change_pending_until_a_retry_reaches_everyone(tmp_path: Any) -> None:
    rec = RecordingReconciler()
    r = reactions(FlakyList(2, [mi("a", "nvidia-t4"), mi("b", "ascend-910b")]), rec, tmp_path)
    r.on_change(change("nvidia-t4"))
    assert rec.calls == [] and r.has_pending()
    r.on_idle()  # second failure
    assert r.has_pending()
    r.on_idle()
    assert rec.calls == ["a"] and not r.has_pending()
    r.on_idle()
    assert rec.calls == ["a"]  # nothing pending: nothing done


def test_a_transient_error_on_one_instance_retries_the_change(tmp_path: Any) -> None:
    rec = RecordingReconciler(fail={"b": 1}, invalid={"c"})
    r = reactions(FlakyList(0, [mi("a", "nvidia-t4"), mi("b", "nvidia-t4"), mi("c", "nvidia-t4")]), rec, tmp_path)
    r.on_change(change("nvidia-t4"))
    assert r.has_pending()  # b was not reached; c is invalid, which counts as reached (status says so)
    r.on_idle()
    assert not r.has_pending()
    assert rec.calls == ["a", "b", "c", "a", "b", "c"]


def test_failed_instances_are_retried_and_the_first_valid_config_reaches_everything(tmp_path: Any) -> None:
    rec = RecordingReconciler()
    r = reactions(
        FlakyList(0, [mi("a", "nvidia-t4"), mi("f", "metax-c550", "Failed"), mi("x", "ascend-910b")]), rec, tmp_path
    )
    r.on_change(change("nvidia-t4"))
    assert rec.calls == ["a", "f"]
    rec.calls.clear()
    r.on_change(Change(None, None, frozenset(), "d2", everything=True))  # type: ignore[arg-type]
    assert rec.calls == ["a", "f", "x"]
