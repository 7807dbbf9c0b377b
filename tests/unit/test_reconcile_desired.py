"""The pure half of reconcile: rendering with a spec hash, currency checks, bad input classification."""

from __future__ import annotations

import copy
import functools
from typing import Any

import pytest

import builders
from xw_operator.devices import DevicesConfig
from xw_operator.k8s.reconcile import (
    SPEC_HASH_ANNOTATION,
    InvalidSpec,
    desired_state,
    is_current,
    normalise_status,
    spec_hash,
    stamp,
    workload_fingerprint,
)

# A stored custom resource: uid, generation and the bookkeeping annotations kopf and kubectl leave.
body = functools.partial(
    builders.instance_doc,
    name="qwen",
    namespace="llm",
    uid="uid-1",
    metadata={
        "generation": 3,
        "annotations": {
            "kopf.zalando.org/last-handled-configuration": "{}",
            "xw.dev/last-handled-configuration": "{}",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
        },
    },
    source={"hostPath": "/data/qwen"},
    engine={"name": "vllm", "args": ["--max-model-len=8192"]},
)


def test_children_are_a_deployment_and_a_service_each_with_a_spec_hash(shipped_config: DevicesConfig) -> None:
    d = desired_state(body(), shipped_config)
    assert [c["kind"] for c in d.children] == ["Deployment", "Service"]
    for child in d.children:
        assert child["metadata"]["annotations"][SPEC_HASH_ANNOTATION] == spec_hash(child)
        owner = child["metadata"]["ownerReferences"][0]
        assert owner["uid"] == "uid-1" and owner["kind"] == "ModelInstance" and owner["controller"] is True
    assert d.endpoint == "http://qwen.llm.svc:8000/v1"


def test_children_never_carry_kopf_or_kubectl_bookkeeping(shipped_config: DevicesConfig) -> None:
    for child in desired_state(body(), shipped_config).children:
        metas = [child["metadata"], child.get("spec", {}).get("template", {}).get("metadata", {})]
        for meta in metas:
            for key in meta.get("annotations") or {}:
                assert key == SPEC_HASH_ANNOTATION, key


def test_stamp_strips_bookkeeping_annotations_given_by_any_renderer() -> None:
    obj = {
        "kind": "Service",
        "metadata": {
            "name": "x",
            "annotations": {
                "kopf.zalando.org/x": "1",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "xw.dev/last-handled-configuration": "{}",
                "team": "a",
            },
        },
    }
    out = stamp(obj)
    assert set(out["metadata"]["annotations"]) == {"team", SPEC_HASH_ANNOTATION}


def test_hash_ignores_key_order_and_follows_content(shipped_config: DevicesConfig) -> None:
    a = desired_state(body(), shipped_config).deployment
    reordered = dict(reversed(list(copy.deepcopy(a).items())))
    assert spec_hash(reordered) == spec_hash(a)
    edited = desired_state(body(engine={"name": "vllm", "args": ["--max-model-len=4096"]}), shipped_config)
    assert spec_hash(edited.deployment) != spec_hash(a)


def test_live_child_with_the_same_hash_is_current(shipped_config: DevicesConfig) -> None:
    want = desired_state(body(), shipped_config).deployment
    live = copy.deepcopy(want)
    live["metadata"]["resourceVersion"] = "42"
    live["status"] = {"readyReplicas": 1}
    assert is_current(want, live)
    assert not is_current(want, None)
    other_hash = copy.deepcopy(live)
    other_hash["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = "old"
    assert not is_current(want, other_hash)
    orphan = copy.deepcopy(live)
    orphan["metadata"]["ownerReferences"] = []
    assert not is_current(want, orphan)
    deleting = copy.deepcopy(live)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert not is_current(want, deleting)


@pytest.mark.parametrize(
    ("spec", "reason", "fragment"),
    [
        ({"devices": {"chip": "tpu-v9", "count": 1}}, "UnknownChip", "tpu-v9"),
        ({"devices": {"chip": "ascend-910b", "count": 16}}, "InvalidSpec", "16"),
        ({"engine": {"name": "sglang"}}, "NoSandbox", "sglang"),
    ],
)
def test_bad_input_is_invalid_spec_with_a_reason(
    shipped_config: DevicesConfig, spec: dict[str, Any], reason: str, fragment: str
) -> None:
    with pytest.raises(InvalidSpec) as err:
        desired_state(body(**spec), shipped_config)
    assert err.value.failure.reason == reason
    assert fragment in err.value.failure.message


def test_no_image_for_any_architecture_names_the_field(shipped_config: DevicesConfig) -> None:
    data = builders.devices_doc()
    builders.chip_doc(data, "ascend-910b")["runtime_images"]["vllm"]["arm64"] = "NONE"
    data["policy"]["model_host_path_prefixes"] = ["/data"]  # the instance's hostPath source
    config = builders.devices_config(data)
    with pytest.raises(InvalidSpec) as err:
        desired_state(body(), config)
    assert "runtime_images.vllm" in err.value.failure.message


def test_status_is_normalised_like_the_crd_prunes_it() -> None:
    stored = normalise_status({"phase": "Ready", "kopf": {"progress": {}}, "readyReplicas": 1})
    assert stored == {"phase": "Ready", "readyReplicas": 1, "conditions": []}


def test_a_workload_fingerprint_moves_with_what_status_reads_and_only_that() -> None:
    deployment: dict[str, Any] = {
        "kind": "Deployment",
        "metadata": {
            "name": "qwen",
            "namespace": "llm",
            "generation": 2,
            "resourceVersion": "100",
            "annotations": {SPEC_HASH_ANNOTATION: "abc", "deployment.kubernetes.io/revision": "2"},
            "labels": {"app.kubernetes.io/managed-by": "xw-operator"},
            "ownerReferences": [{"uid": "uid-1", "controller": True}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}],
        },
        "status": {"observedGeneration": 2, "replicas": 1, "availableReplicas": 0},
    }
    base = workload_fingerprint(deployment)
    bookkeeping = copy.deepcopy(deployment)
    bookkeeping["metadata"]["resourceVersion"] = "101"
    bookkeeping["metadata"]["managedFields"].append({"manager": "kubectl", "operation": "Update"})
    assert workload_fingerprint(bookkeeping) == base
    for path, value in [
        (("status", "availableReplicas"), 1),
        (("metadata", "generation"), 3),
        (("metadata", "deletionTimestamp"), "2026-11-26T00:00:00Z"),
        (("metadata", "labels"), {}),
        (("metadata", "ownerReferences"), []),
    ]:
        changed = copy.deepcopy(deployment)
        changed[path[0]][path[1]] = value
        assert workload_fingerprint(changed) != base, path
    rehashed = copy.deepcopy(deployment)
    rehashed["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = "def"
    assert workload_fingerprint(rehashed) != base
