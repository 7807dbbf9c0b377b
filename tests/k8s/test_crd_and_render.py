"""The CRD and the rendered objects against a real API server.

The CRD is installed with server-side apply; ModelInstances are created for real (so owner references
carry a real uid and the CRD's defaults are applied), read back, parsed with the Python model, resolved,
rendered, and the Deployment + Service are accepted by ``kubectl apply --dry-run=server``. Invalid
ModelInstances are refused by the API server itself with a message naming the field.
"""

from __future__ import annotations

import functools
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_fixture import wait_for_crd

import builders
from xw_operator.devices import DevicesConfig, load_devices_config, packaged_devices_config_path
from xw_operator.instance import parse_instance
from xw_operator.plan import resolve
from xw_operator.render_kubernetes import render_kubernetes

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "modelinstances.xw.dev.yaml"
HOST_DEVICE_CONFIG = REPO / "tests" / "golden" / "host-device-devices.yaml"


@pytest.fixture(scope="module")
def crd(cluster: Any) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=xw-crd-tests", "-f", str(CRD_FILE))
    wait_for_crd(cluster)


manifest = builders.document
# Every case serves "org/model" with one engine argument and one variable, so both reach the objects.
spec_for = functools.partial(
    builders.spec_doc,
    model_name="org/model",
    engine={"name": "vllm", "args": ["--max-model-len=8192"], "env": [{"name": "LOG", "value": "debug"}]},
)


CASES = [
    ("ascend-910b-x4", spec_for("ascend-910b", 4, source={"hostPath": "/data/models/qwen"}), "shipped"),
    (
        "ascend-310p-x2",
        spec_for("ascend-310p", 2, source={"pvc": {"claimName": "models", "subPath": "qwen"}}),
        "shipped",
    ),
    (
        "metax-x1",
        spec_for("metax-c550", 1, source={"huggingFace": {"repo": "Qwen/Qwen3-8B", "tokenSecretRef": {"name": "hf"}}}),
        "shipped",
    ),
    (
        "nvidia-x2",
        spec_for(
            "nvidia-t4",
            2,
            source={"huggingFace": {"repo": "meta-llama/Llama-3.1-8B", "revision": "main"}},
            apiKeySecretRef={"name": "llm-key"},
            strategy="RollingUpdate",
            replicas=2,
            resources={"limits": {"cpu": "8", "memory": "32Gi"}, "requests": {"cpu": 4}},
            tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            affinity={
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 1,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": {"xw.dev/model-instance": "nvidia-x2"}},
                            },
                        }
                    ]
                }
            },
        ),
        "shipped",
    ),
    ("host-device-x2", spec_for("acme-npu", 2, source={"hostPath": "/data/models/acme"}), "host-device"),
    # A catalog model (models.yaml) with no source: the recipe fills source, engine, count and tuning.
    ("catalog-qwen3-8b", {"model": {"catalog": "qwen3-8b"}, "devices": {"chip": "ascend-910b"}}, "shipped"),
]


def configs() -> dict[str, DevicesConfig]:
    shipped = load_devices_config(packaged_devices_config_path())
    # The shipped policy allows no hostPath model on Kubernetes; these cases mount /data/models/... and /m.
    policy = shipped.policy.model_copy(update={"model_host_path_prefixes": ["/data/models", "/m"]})
    return {
        "shipped": shipped.model_copy(update={"policy": policy}),
        "host-device": load_devices_config(HOST_DEVICE_CONFIG),
    }


@pytest.mark.parametrize(("name", "spec", "config"), CASES, ids=[c[0] for c in CASES])
def test_rendered_objects_are_accepted_by_the_api_server(
    cluster: Any, crd: None, namespace: str, name: str, spec: dict[str, Any], config: str
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest(name, spec)))
    stored = json.loads(cluster.kubectl("get", "modelinstance", name, "-n", namespace, "-o", "json").stdout)
    instance = parse_instance(stored, "API server")
    assert instance.metadata.uid, "the stored object has a uid"
    objects = render_kubernetes(instance, resolve(instance, configs()[config]).bind())
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == instance.metadata.uid for o in objects)

    proc = cluster.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects), check=False
    )
    assert proc.returncode == 0, proc.stderr
    # "configured" when an operator running in the same session already made the children.
    for kind in ("deployment.apps", "service"):
        assert re.search(rf"^{kind}/{name} (created|configured|unchanged) \(server dry run\)$", proc.stdout, re.M), (
            proc.stdout
        )


def test_crd_defaults_match_the_python_model(cluster: Any, crd: None, namespace: str) -> None:
    minimal = {"model": {"source": {"hostPath": "/m"}}, "devices": {"chip": "ascend-910b"}, "engine": {}}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest("minimal", minimal)))
    stored = json.loads(cluster.kubectl("get", "mi", "minimal", "-n", namespace, "-o", "json").stdout)["spec"]
    local = parse_instance(manifest("minimal", minimal)).spec
    assert stored["replicas"] == local.replicas == 1
    assert stored["port"] == local.port == 8000
    assert stored["strategy"] == local.strategy == "Recreate"
    assert stored["devices"]["count"] == local.devices.count == 1
    assert stored["engine"]["name"] == local.engine.name == "vllm"


def test_printer_columns_and_status_subresource(cluster: Any, crd: None, namespace: str) -> None:
    spec = spec_for("ascend-910b", 4, source={"hostPath": "/m"})
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest("cols", spec)))
    status = {
        "phase": "Ready",
        "readyReplicas": 1,
        "endpoint": f"http://cols.{namespace}.svc:8000/v1",
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "AllReady", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ],
        "notInSchema": "pruned",
    }
    patched = json.loads(
        cluster.kubectl(
            "patch", "mi", "cols", "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}), "-o", "json",
        ).stdout
    )  # fmt: skip
    assert patched["status"]["phase"] == "Ready" and patched["status"]["readyReplicas"] == 1
    assert "notInSchema" not in patched["status"]  # the status schema is structural: unknown keys pruned
    assert patched["spec"]["replicas"] == 1  # the status subresource leaves the spec alone
    assert parse_instance(patched).status is not None

    # An operator watching every namespace (tests/k8s/operator_fixture.py) may rewrite the status at any
    # time, so compare the table with the object read around it at an unchanged resourceVersion.
    def read() -> dict[str, Any]:
        return dict(json.loads(cluster.kubectl("get", "mi", "cols", "-n", namespace, "-o", "json").stdout))

    for _ in range(20):
        before = read()
        table = cluster.kubectl("get", "mi", "-n", namespace).stdout.splitlines()
        after = read()
        if before["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the ModelInstance kept changing while its table was read")
    assert table[0].split() == ["NAME", "CHIP", "DEVICES", "REPLICAS", "READY", "PHASE", "ENDPOINT", "AGE"]
    st = after.get("status", {})
    expected = ["cols", "ascend-910b", "4", "1"]
    expected += [str(st.get(k, "<none>")) for k in ("readyReplicas", "phase", "endpoint")]
    assert table[1].split()[:7] == expected


def _spec(**changes: Any) -> dict[str, Any]:
    spec = spec_for("ascend-910b", 1, source={"hostPath": "/m"})
    spec.update(changes)
    return spec


INVALID = [
    (
        "two-sources",
        _spec(model={"source": {"hostPath": "/m", "pvc": {"claimName": "c"}}}),
        ["spec.model.source", "exactly one of hostPath, pvc, huggingFace must be set"],
    ),
    ("no-source", _spec(model={"source": {}}), ["spec.model.source", "exactly one of hostPath, pvc, huggingFace"]),
    (
        "count-zero",
        _spec(devices={"chip": "ascend-910b", "count": 0}),
        ["spec.devices.count", "greater than or equal to 1"],
    ),
    ("bad-port", _spec(port=70000), ["spec.port", "less than or equal to 65535"]),
    ("port-zero", _spec(port=0), ["spec.port", "greater than or equal to 1"]),
    ("negative-replicas", _spec(replicas=-1), ["spec.replicas", "greater than or equal to 0"]),
    ("unknown-field", _spec(bogus=1), ['unknown field "spec.bogus"']),
    ("args-not-strings", _spec(engine={"args": [8192]}), ["spec.engine.args[0]", "string"]),
    ("bad-chip-name", _spec(devices={"chip": "Ascend_910B", "count": 1}), ["spec.devices.chip", "should match"]),
    (
        "indices-count",
        _spec(devices={"chip": "ascend-910b", "count": 2, "indices": [1]}),
        ["spec.devices.indices", "indices must have exactly count entries"],
    ),
    ("indices-repeat", _spec(devices={"chip": "ascend-910b", "count": 2, "indices": [1, 1]}), ["spec.devices.indices"]),
    (
        "backtracking-host-path",
        _spec(model={"source": {"hostPath": "/data/../etc"}}),
        ["spec.model.source.hostPath", "'..'"],
    ),
    (
        "accelerator-in-resources",
        _spec(resources={"limits": {"huawei.com/Ascend910": 8}}),
        ["spec.resources.limits", "only cpu, memory, ephemeral-storage and hugepages-* may be set"],
    ),
    ("missing-devices", {"model": {"source": {"hostPath": "/m"}}}, ["spec.devices", "Required value"]),
    (
        "no-source-no-catalog",
        _spec(model={"name": "x"}),
        ["spec.model", "set model.source (hostPath, pvc or huggingFace) or model.catalog"],
    ),
    ("bad-catalog-id", _spec(model={"catalog": "../x"}), ["spec.model.catalog", "should match"]),
    # spec.affinity is the typed core/v1 schema: the API server refuses what the Deployment would be refused for.
    (
        "affinity-string-for-list",
        _spec(affinity={"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": "oops"}}),
        ["spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution", "array"],
    ),
    (
        "affinity-bad-operator",
        _spec(
            affinity={
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": "k", "operator": "Is"}]}]
                    }
                }
            }
        ),
        ["operator", "Unsupported value", '"Is"'],
    ),
    (
        "affinity-no-topology-key",
        _spec(affinity={"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"namespaces": ["a"]}]}}),
        ["topologyKey", "Required value"],
    ),
    ("affinity-unknown-field", _spec(affinity={"nodeAfinity": {}}), ['unknown field "spec.affinity.nodeAfinity"']),
]


@pytest.mark.parametrize(("name", "spec", "expected"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_instances_are_rejected_naming_the_field(
    cluster: Any, crd: None, namespace: str, name: str, spec: dict[str, Any], expected: list[str]
) -> None:
    proc = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest(name, spec)), check=False)
    assert proc.returncode != 0, f"accepted: {proc.stdout}"
    for text in expected:
        assert text in proc.stderr, proc.stderr
    assert cluster.kubectl("get", "mi", "-n", namespace, "-o", "name").stdout.strip() == ""


def test_name_that_cannot_be_a_service_is_rejected(cluster: Any, crd: None, namespace: str) -> None:
    proc = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest("3b", _spec())), check=False
    )
    assert proc.returncode != 0
    assert "metadata.name must be a DNS-1035 label" in proc.stderr, proc.stderr


def test_unknown_field_is_pruned_when_field_validation_is_off(cluster: Any, crd: None, namespace: str) -> None:
    """What a client that skips strict validation gets: the field is silently dropped, not stored."""
    proc = cluster.kubectl(
        "create", "--validate=false", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest("lax", _spec(bogus=1)))
    )
    assert "created" in proc.stdout
    stored = json.loads(cluster.kubectl("get", "mi", "lax", "-n", namespace, "-o", "json").stdout)
    assert "bogus" not in stored["spec"]


SCHEDULING = [
    ("ascend-910b", 4, "kwok-ascend910-", "arm64"),
    ("ascend-310p", 2, "kwok-ascend310p-", "arm64"),
    ("metax-c550", 1, "kwok-metax-", "amd64"),
    ("nvidia-t4", 2, "kwok-nvidia-", "amd64"),
]


@pytest.mark.parametrize(("chip", "count", "node_prefix", "arch"), SCHEDULING, ids=[s[0] for s in SCHEDULING])
def test_rendered_pods_schedule_onto_a_node_with_the_chip(
    cluster: Any, namespace: str, chip: str, count: int, node_prefix: str, arch: str
) -> None:
    """Resource request, arch pin and the profile's node selector lead the scheduler to the right node.

    Rendered without an owner (no uid), so only the scheduler and kwok act on these objects.
    """
    name = f"sched-{chip}"
    doc = manifest(name, spec_for(chip, count, source={"hostPath": "/m"}))
    doc["metadata"]["namespace"] = namespace
    instance = parse_instance(doc)
    objects = render_kubernetes(instance, resolve(instance, configs()["shipped"]).bind())
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects))
    cluster.kubectl("rollout", "status", f"deployment/{name}", "-n", namespace, "--timeout=120s", timeout=150)
    pods = json.loads(
        cluster.kubectl("get", "pods", "-n", namespace, "-l", f"xw.dev/model-instance={name}", "-o", "json").stdout
    )["items"]
    assert len(pods) == 1
    node_name = pods[0]["spec"]["nodeName"]
    assert node_name.startswith(node_prefix), node_name
    node = json.loads(cluster.kubectl("get", "node", node_name, "-o", "json").stdout)
    assert node["metadata"]["labels"]["kubernetes.io/arch"] == arch


def test_host_device_pods_never_share_a_node(cluster: Any, namespace: str) -> None:
    """Without a device plugin nothing allocates chips between pods: a second one must not land beside the
    first. The acme profile is pinned to the single NVIDIA kwok node here (it has no node of its own)."""
    names = ["hostdev-a", "hostdev-b"]
    for name in names:
        spec = spec_for(
            "acme-npu", 1, source={"hostPath": "/m"}, nodeSelector={"kubernetes.io/hostname": "kwok-nvidia-0"}
        )
        doc = manifest(name, spec)
        doc["metadata"]["namespace"] = namespace
        instance = parse_instance(doc)
        config = configs()["host-device"]
        objects = render_kubernetes(instance, resolve(instance, config).bind())
        # The acme profile's own selector/toleration would match no kwok node; keep the hostname pin only.
        pod_spec = objects[0]["spec"]["template"]["spec"]
        pod_spec["nodeSelector"] = {"kubernetes.io/hostname": "kwok-nvidia-0"}
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects))
    cluster.kubectl("rollout", "status", "deployment/hostdev-a", "-n", namespace, "--timeout=120s", timeout=150)

    def pending_b() -> dict[str, Any] | None:
        pods = json.loads(
            cluster.kubectl(
                "get", "pods", "-n", namespace, "-l", "xw.dev/model-instance=hostdev-b", "-o", "json"
            ).stdout
        )["items"]
        for p in pods:
            for c in p.get("status", {}).get("conditions") or []:
                if c["type"] == "PodScheduled" and c["status"] == "False" and "anti-affinity" in c.get("message", ""):
                    return dict(p)
        return None

    deadline = time.monotonic() + 60
    while (pod := pending_b()) is None:
        assert time.monotonic() < deadline, "hostdev-b was not held back by the anti-affinity"
        time.sleep(1)
    assert "nodeName" not in pod["spec"]
