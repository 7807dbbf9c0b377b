"""A reconcile handed an instance body older than the cluster's (kopf's event, saving a GET) changes
nothing that a newer one already settled: neither the children's spec nor status nor Events.

The Reconciler runs in this process against the real API server, with the session operator paused, so
the order of reads and writes is the test's.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from operator_fixture import SHIPPED_DEVICES, session_operator_stopped

import builders
from xw_operator.devices import DevicesConfig, parse_devices_config
from xw_operator.k8s.client import KubeApi, object_path
from xw_operator.k8s.reconcile import Reconciler, instance_path


@pytest.fixture(scope="module", autouse=True)
def session_operator_paused(request: pytest.FixtureRequest) -> Iterator[None]:
    """The session operator would reconcile the same instance in between the test's steps."""
    with session_operator_stopped(request):
        yield


class Config:
    def __init__(self) -> None:
        self.current: DevicesConfig = parse_devices_config(
            SHIPPED_DEVICES.read_text(encoding="utf-8"), source=str(SHIPPED_DEVICES)
        )


@pytest.fixture
def api(cluster: Any) -> KubeApi:
    configuration = k8s_client.Configuration()
    k8s_config.load_kube_config(config_file=cluster.kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
    return KubeApi(k8s_client.ApiClient(configuration))


def create_instance(api: KubeApi, namespace: str, args: list[str]) -> dict[str, Any]:
    # Zero replicas: the Deployment's status settles at once (no pods), so every later status change
    # in this test would be one the reconciler made up.
    doc = builders.instance_doc(
        "ascend-910b",
        4,
        name="stale",
        namespace=namespace,
        source={"huggingFace": {"repo": "Qwen/Qwen3-8B"}},
        engine={"name": "vllm", "args": args},
        replicas=0,
    )
    return api.create(object_path("xw.dev/v1alpha1", "modelinstances", namespace), doc)


def settled(api: KubeApi, reconciler: Reconciler, namespace: str) -> Callable[[], dict[str, Any]]:
    """Reconcile (fresh reads) until a reconcile writes nothing; returns a snapshot function."""

    def snapshot() -> dict[str, Any]:
        mi = api.get(instance_path(namespace, "stale")) or {}
        dep = api.get(object_path("apps/v1", "deployments", namespace, "stale")) or {}
        events = api.list(object_path("v1", "events", namespace), field_selector="involvedObject.name=stale")
        return {
            "mi": (mi["metadata"]["resourceVersion"], mi.get("status")),
            "deployment": (dep["metadata"]["resourceVersion"], dep["spec"]["template"]["spec"]["containers"][0]),
            "events": sorted((e["reason"], e["message"]) for e in events),
        }

    before: dict[str, Any] | None = None
    for _ in range(20):
        reconciler.reconcile(namespace, "stale")
        now = snapshot()
        if now == before:
            return snapshot
        before = now
        time.sleep(0.5)
    raise AssertionError(f"the instance never settled: {before}")


def test_an_older_generation_never_rolls_the_children_back(api: KubeApi, namespace: str) -> None:
    reconciler = Reconciler(api, Config())
    old = create_instance(api, namespace, ["--max-model-len=4096"])
    reconciler.reconcile(namespace, "stale")
    api.merge_patch(instance_path(namespace, "stale"), {"spec": {"engine": {"args": ["--max-model-len=8192"]}}})
    snapshot = settled(api, reconciler, namespace)
    before = snapshot()
    assert "--max-model-len=8192" in before["deployment"][1]["args"]

    reconciler.reconcile(namespace, "stale", body=copy.deepcopy(old))  # generation 1 after generation 2

    assert snapshot() == before


def test_a_status_written_since_the_body_was_read_is_not_written_or_announced_again(
    api: KubeApi, namespace: str
) -> None:
    reconciler = Reconciler(api, Config())
    stale = create_instance(api, namespace, [])  # no status yet
    snapshot = settled(api, reconciler, namespace)
    before = snapshot()
    assert before["mi"][1] and before["events"], before

    reconciler.reconcile(namespace, "stale", body=copy.deepcopy(stale))  # same generation, older status

    assert snapshot() == before
