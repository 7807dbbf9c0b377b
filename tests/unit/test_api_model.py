"""The ModelInstance API model: defaults, every rejection with the field named, status round-trip."""

from __future__ import annotations

import functools
from typing import Any

import pytest

import builders
from xw_operator.errors import ManifestError
from xw_operator.instance import (
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    ModelInstance,
    ModelInstanceStatus,
    parse_instance,
)

# Only what the API requires, so the defaults tests see the API's own defaults.
doc = functools.partial(builders.instance_doc, name="m1", count=None, source={"hostPath": "/models/m1"})


def test_public_names() -> None:
    assert (GROUP, VERSION, PLURAL, KIND) == ("xw.dev", "v1alpha1", "modelinstances", "ModelInstance")


def test_defaults() -> None:
    inst = parse_instance(doc())
    assert isinstance(inst, ModelInstance)
    assert inst.name == "m1"
    assert inst.served_model_name == "m1"
    spec = inst.spec
    assert (spec.engine.name, spec.devices.count, spec.replicas, spec.port, spec.strategy) == (
        "vllm",
        1,
        1,
        8000,
        "Recreate",
    )
    assert spec.probes.startup_timeout_seconds >= 30 * 60
    assert inst.status is None


def test_full_spec_parses_camel_case() -> None:
    inst = parse_instance(
        doc(
            model={"name": "Qwen/Qwen3-8B", "source": {"pvc": {"claimName": "models", "subPath": "qwen"}}},
            engine={"name": "vllm", "image": "me/vllm:1", "args": ["--x=1"], "env": [{"name": "A", "value": "b"}]},
            devices={"chip": "ascend-910b", "count": 4, "indices": [0, 1, 2, 3]},
            replicas=0,
            port=9000,
            resources={"limits": {"cpu": 8, "memory": "64Gi"}, "requests": {"hugepages-2Mi": "1Gi"}},
            nodeSelector={"zone": "a"},
            tolerations=[{"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5}],
            affinity={"nodeAffinity": {}},
            apiKeySecretRef={"name": "s"},
            probes={"startupTimeoutSeconds": 600},
        )
    )
    assert inst.served_model_name == "Qwen/Qwen3-8B"
    assert inst.spec.model.source.kind == "pvc"
    assert inst.spec.api_key_secret_ref is not None and inst.spec.api_key_secret_ref.key == "api-key"
    assert inst.spec.tolerations[0].toleration_seconds == 5


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"model": {"source": {"hostPath": "/m", "pvc": {"claimName": "c"}}}},
            "spec.model.source: exactly one of hostPath, pvc, huggingFace must be set (got hostPath, pvc)",
        ),
        ({"model": {"source": {}}}, "spec.model.source: exactly one of hostPath, pvc, huggingFace must be set"),
        (
            {"devices": {"chip": "ascend-910b", "count": 0}},
            "spec.devices.count: Input should be greater than or equal to 1",
        ),
        ({"replicas": -1}, "spec.replicas: Input should be greater than or equal to 0"),
        ({"port": 0}, "spec.port: Input should be greater than or equal to 1"),
        ({"port": 65536}, "spec.port: Input should be less than or equal to 65535"),
        ({"bogus": 1}, "spec.bogus: unknown field"),
        ({"engine": {"args": [1]}}, "spec.engine.args[0]: Input should be a valid string"),
        ({"devices": {"chip": "Ascend_910B"}}, "spec.devices.chip: String should match pattern"),
        ({"devices": {"chip": "ascend-910b", "count": 2, "indices": [1]}}, "indices has 1 entries but count is 2"),
        ({"devices": {"chip": "ascend-910b", "count": 2, "indices": [1, 1]}}, "repeat a device"),
        ({"model": {"source": {"hostPath": "models"}}}, "spec.model.source.hostPath: String should match pattern"),
        ({"model": {"source": {"hostPath": "/data/../etc"}}}, "hostPath must not contain a '..' path element"),
        (
            {"model": {"source": {"pvc": {"claimName": "c", "subPath": "/abs"}}}},
            "subPath must be a relative path without '..' elements",
        ),
        ({"resources": {"limits": {"nvidia.com/gpu": 8}}}, "nvidia.com/gpu: only cpu, memory"),
        ({"resources": {"limits": {"memory": "lots"}}}, "'lots' is not a quantity"),
        (
            {"engine": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}},
            "spec.engine.env: Value error, A set more than once",
        ),
        ({"tolerations": [{"operator": "Maybe"}]}, "spec.tolerations[0].operator"),
        ({"strategy": "BlueGreen"}, "spec.strategy"),
        ({"probes": {"startupTimeoutSeconds": 5}}, "spec.probes.startupTimeoutSeconds"),
    ],
)
def test_invalid_specs_name_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError) as exc:
        parse_instance(doc(**spec))
    assert message.replace("Value error, ", "") in str(exc.value)
    assert "ModelInstance m1" in str(exc.value)


@pytest.mark.parametrize("name", ["3b", "Qwen", "a_b", "-a", "a" * 64])
def test_name_must_be_a_dns_1035_label(name: str) -> None:
    with pytest.raises(ManifestError, match="must be a DNS-1035 label"):
        parse_instance(doc(name=name))


def test_status_round_trips_in_camel_case_and_ignores_unknown_keys() -> None:
    stored = {
        "phase": "Ready",
        "observedGeneration": 3,
        "readyReplicas": 1,
        "endpoint": "http://m1.llm.svc:8000/v1",
        "image": "vllm/vllm-openai:v0.11.0",
        "conditions": [{"type": "Ready", "status": "True", "reason": "AllReplicasReady", "message": "1/1"}],
        "kopf": {"progress": {}},
    }
    status = ModelInstanceStatus.model_validate(stored)
    assert status.ready_replicas == 1 and status.conditions[0].status == "True"
    dumped = status.model_dump(by_alias=True, exclude_none=True)
    assert "kopf" not in dumped
    assert dumped["observedGeneration"] == 3 and dumped["readyReplicas"] == 1
    inst = parse_instance({**doc(), "status": stored})
    assert inst.status is not None and inst.status.phase == "Ready"


def test_status_phase_is_one_of_the_documented_values() -> None:
    with pytest.raises(ValueError, match="phase"):
        ModelInstanceStatus.model_validate({"phase": "Happy"})
