"""The operator against a real control plane + kwok, driven with kubectl exactly as a user would.

Every test uses a fresh namespace; one operator (session fixture) watches them all.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from audit_support import AuditWindow
from operator_fixture import SHIPPED_DEVICES, OperatorProcess

import builders

pytestmark = pytest.mark.usefixtures("operator_log_on_failure")

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "configs" / "samples"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def instance(*, name: str, **kwargs: Any) -> dict[str, Any]:
    """A Hugging Face source (the shipped policy allows no hostPath on Kubernetes) and one real engine flag."""
    source = {"huggingFace": {"repo": f"org/{name}"}}
    engine = {"name": "vllm", "args": ["--max-model-len=8192"]}
    return builders.instance_doc(name=name, source=source, engine=engine, **kwargs)


def apply(cluster: Any, ns: str, *docs: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs))


def get(cluster: Any, ns: str, kind: str, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    if proc.returncode != 0:
        assert "NotFound" in proc.stderr, proc.stderr
        return None
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def wait_for(what: str, check: Callable[[], Any], timeout: float = 45.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def condition(mi: dict[str, Any] | None, ctype: str) -> dict[str, Any]:
    for cond in ((mi or {}).get("status") or {}).get("conditions", []):
        if cond["type"] == ctype:
            return dict(cond)
    return {}


def wait_ready(cluster: Any, ns: str, name: str, timeout: int = 60) -> dict[str, Any]:
    cluster.kubectl(
        "wait", "--for=condition=Ready", f"mi/{name}", "-n", ns, f"--timeout={timeout}s", timeout=timeout + 10
    )
    mi = get(cluster, ns, "mi", name)
    assert mi is not None
    return mi


def engine_container(dep: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = dep["spec"]["template"]["spec"]["containers"]
    return containers[0]


def events_for(cluster: Any, ns: str, name: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}", "-o", "json")
    items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    return items


def resource_versions(cluster: Any, ns: str) -> dict[str, str]:
    out = cluster.kubectl("get", "deployments,services,modelinstances", "-n", ns, "-o", "json")
    return {
        f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"]
        for i in json.loads(out.stdout)["items"]
    }


def test_sample_instance_becomes_ready_with_device_resources_and_endpoint(
    cluster: Any, namespace: str, xw_operator: OperatorProcess
) -> None:
    audit = AuditWindow(cluster.audit_log) if cluster.audit_log else None
    cluster.kubectl("apply", "-n", namespace, "-f", str(SAMPLES / "qwen3-8b-ascend.yaml"))
    mi = wait_ready(cluster, namespace, "qwen3-8b")
    if audit is not None:
        # The user's object is the user's: the operator writes its status, never its metadata or spec
        # (kopf's record of the handled spec stays in the operator's memory: k8s/handled.py).
        writes = audit.writes(namespace, resources={"modelinstances"})
        assert not [w for w in writes if not w.startswith(("create ", "patch modelinstances/status/"))], writes
    status = mi["status"]
    assert status["phase"] == "Ready"
    assert status["readyReplicas"] == 1
    assert status["observedGeneration"] == mi["metadata"]["generation"]
    assert status["endpoint"] == f"http://qwen3-8b.{namespace}.svc:8000/v1"
    assert status["image"]
    assert condition(mi, "Progressing")["status"] == "False"
    assert condition(mi, "Degraded")["status"] == "False"
    assert not mi["metadata"].get("finalizers")

    dep = get(cluster, namespace, "deployment", "qwen3-8b")
    svc = get(cluster, namespace, "service", "qwen3-8b")
    assert dep is not None and svc is not None
    assert str(engine_container(dep)["resources"]["limits"]["huawei.com/Ascend910"]) == "4"
    for child in (dep, svc):
        labels = child["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "xw-operator"
        assert labels["app.kubernetes.io/instance"] == "qwen3-8b"
        assert labels["xw.dev/model-instance"] == "qwen3-8b"
        owner = child["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("ModelInstance", mi["metadata"]["uid"], True)
        for meta in (child["metadata"], child["spec"].get("template", {}).get("metadata", {})):
            bookkeeping = [
                k for k in meta.get("annotations") or {} if k.startswith(("kopf.", "kubectl.kubernetes.io/"))
            ]
            bookkeeping += [k for k in meta.get("annotations") or {} if k.startswith("xw.dev/last-handled")]
            assert not bookkeeping, f"{child['kind']} copied bookkeeping annotations {bookkeeping}"
    pods = json.loads(
        cluster.kubectl("get", "pods", "-n", namespace, "-l", "xw.dev/model-instance=qwen3-8b", "-o", "json").stdout
    )["items"]
    assert [p["status"]["phase"] for p in pods] == ["Running"]
    assert pods[0]["spec"]["nodeName"].startswith("kwok-ascend910-")
    assert any(e["reason"] == "AllReplicasReady" for e in events_for(cluster, namespace, "qwen3-8b"))


def test_manual_edit_of_a_deployment_is_reverted_without_a_write_loop(
    cluster: Any, namespace: str, xw_operator: OperatorProcess
) -> None:
    apply(cluster, namespace, instance(name="drift", chip="nvidia-t4", count=1))
    wait_ready(cluster, namespace, "drift")
    dep = get(cluster, namespace, "deployment", "drift")
    assert dep is not None
    image = engine_container(dep)["image"]
    cluster.kubectl("set", "image", "-n", namespace, "deployment/drift", "engine=example.org/not-ours:1")

    def reverted() -> dict[str, Any] | None:
        live = get(cluster, namespace, "deployment", "drift")
        return live if live and engine_container(live)["image"] == image else None

    wait_for("the operator to put the image back", reverted)
    if not cluster.audit_log:
        pytest.skip("reverted; the no-write-loop half needs the local cluster's audit log")
    time.sleep(2)  # the revert's own watch event arrives and must not cause another write
    audit = Path(cluster.audit_log)
    offset = audit.stat().st_size
    time.sleep(4)
    with audit.open("rb") as fh:
        fh.seek(offset)
        entries = [json.loads(line) for line in fh.read().decode().splitlines() if line.strip()]
    writes = [
        e
        for e in entries
        if e["verb"] in WRITE_VERBS
        and e["objectRef"].get("namespace") == namespace
        and e["objectRef"].get("resource") == "deployments"
    ]
    assert writes == [], "the operator keeps rewriting the Deployment"


def test_children_deleted_by_hand_are_recreated(cluster: Any, namespace: str, xw_operator: OperatorProcess) -> None:
    apply(cluster, namespace, instance(name="phoenix", chip="metax-c550", count=1))
    wait_ready(cluster, namespace, "phoenix")
    old = {kind: get(cluster, namespace, kind, "phoenix") for kind in ("deployment", "service")}
    cluster.kubectl("delete", "-n", namespace, "deployment/phoenix", "service/phoenix", "--wait=true")

    def recreated() -> dict[str, Any] | None:
        new = {kind: get(cluster, namespace, kind, "phoenix") for kind in ("deployment", "service")}
        fresh = all(
            new[k] is not None and new[k]["metadata"]["uid"] != old[k]["metadata"]["uid"]  # type: ignore[index]
            for k in new
        )
        return new if fresh else None

    wait_for("the operator to re-create the deleted children", recreated)
    wait_ready(cluster, namespace, "phoenix")


def test_editing_engine_args_rolls_out_a_new_generation(
    cluster: Any, namespace: str, xw_operator: OperatorProcess
) -> None:
    apply(cluster, namespace, instance(name="edit", chip="nvidia-t4", count=1))
    first = wait_ready(cluster, namespace, "edit")
    cluster.kubectl(
        "patch",
        "mi",
        "edit",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"engine": {"args": ["--max-model-len=4096"]}}}),
    )

    def rolled_out() -> dict[str, Any] | None:
        mi = get(cluster, namespace, "mi", "edit")
        gen = mi["metadata"]["generation"] if mi else 0
        ok = mi and gen > first["metadata"]["generation"] and mi["status"].get("observedGeneration") == gen
        return mi if ok and condition(mi, "Ready").get("status") == "True" else None

    mi = wait_for("new generation Ready", rolled_out)
    dep = get(cluster, namespace, "deployment", "edit")
    assert dep is not None
    assert "--max-model-len=4096" in engine_container(dep)["args"]
    assert "--max-model-len=8192" not in engine_container(dep)["args"]
    assert condition(mi, "Ready")["observedGeneration"] == mi["metadata"]["generation"]


def test_scaling_replicas_is_followed_by_ready_replicas(
    cluster: Any, namespace: str, xw_operator: OperatorProcess
) -> None:
    apply(cluster, namespace, instance(name="scale", chip="ascend-910b", count=2))
    wait_ready(cluster, namespace, "scale")
    cluster.kubectl("patch", "mi", "scale", "-n", namespace, "--type=merge", "-p", '{"spec":{"replicas":3}}')
    mi = wait_for(
        "3 ready replicas",
        lambda: (m := get(cluster, namespace, "mi", "scale")) and m["status"].get("readyReplicas") == 3 and m,
    )
    assert mi["status"]["phase"] == "Ready"
    dep = get(cluster, namespace, "deployment", "scale")
    assert dep is not None and dep["spec"]["replicas"] == 3


def test_too_many_devices_is_unschedulable_with_the_scheduler_message_then_recovers(
    cluster: Any, namespace: str, xw_operator: OperatorProcess
) -> None:
    # Ascend 910C hosts have 16 chips; the kwok Ascend nodes advertise 8: no node can take the pod.
    apply(cluster, namespace, instance(name="big", chip="ascend-910c", count=16))

    def unschedulable() -> dict[str, Any] | None:
        mi = get(cluster, namespace, "mi", "big")
        return mi if condition(mi, "Degraded").get("reason") == "Unschedulable" else None

    mi = wait_for("Unschedulable condition", unschedulable)
    assert mi["status"]["phase"] == "Degraded"
    ready = condition(mi, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "Unschedulable"
    assert "Insufficient huawei.com/Ascend910" in ready["message"]
    assert "0/" in ready["message"] and "nodes are available" in ready["message"]
    assert any(e["reason"] == "Unschedulable" and e["type"] == "Warning" for e in events_for(cluster, namespace, "big"))

    cluster.kubectl("patch", "mi", "big", "-n", namespace, "--type=merge", "-p", '{"spec":{"devices":{"count":4}}}')
    mi = wait_ready(cluster, namespace, "big")
    assert condition(mi, "Degraded")["status"] == "False"


def test_unknown_chip_fails_without_children_and_a_fix_recovers(
    cluster: Any, namespace: str, xw_operator: OperatorProcess
) -> None:
    apply(cluster, namespace, instance(name="wrong", chip="tpu-v9", count=1))
    mi = wait_for(
        "Failed",
        lambda: (
            (m := get(cluster, namespace, "mi", "wrong")) and (m.get("status") or {}).get("phase") == "Failed" and m
        ),
    )
    ready = condition(mi, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "UnknownChip"
    assert "tpu-v9" in ready["message"] and "known chips" in ready["message"]
    assert mi["status"]["observedGeneration"] == mi["metadata"]["generation"]
    assert get(cluster, namespace, "deployment", "wrong") is None
    assert get(cluster, namespace, "service", "wrong") is None
    warnings = [e for e in events_for(cluster, namespace, "wrong") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["UnknownChip"]
    # No retry loop: nothing more is written while the spec stays wrong.
    rv = mi["metadata"]["resourceVersion"]
    time.sleep(5)
    again = get(cluster, namespace, "mi", "wrong")
    assert again is not None and again["metadata"]["resourceVersion"] == rv
    assert len(events_for(cluster, namespace, "wrong")) == len(warnings)

    cluster.kubectl(
        "patch", "mi", "wrong", "-n", namespace, "--type=merge", "-p", '{"spec":{"devices":{"chip":"nvidia-t4"}}}'
    )
    mi = wait_ready(cluster, namespace, "wrong")
    assert get(cluster, namespace, "deployment", "wrong") is not None


def test_count_above_chip_capacity_fails(cluster: Any, namespace: str, xw_operator: OperatorProcess) -> None:
    apply(cluster, namespace, instance(name="huge", chip="nvidia-t4", count=9))
    mi = wait_for(
        "Failed",
        lambda: (m := get(cluster, namespace, "mi", "huge")) and (m.get("status") or {}).get("phase") == "Failed" and m,
    )
    assert "spec.devices.count is 9" in condition(mi, "Ready")["message"]
    assert get(cluster, namespace, "deployment", "huge") is None


def test_delete_removes_children_and_leaves_no_finalizer(
    cluster: Any, namespace: str, xw_operator: OperatorProcess
) -> None:
    apply(cluster, namespace, instance(name="gone", chip="nvidia-t4", count=1))
    mi = wait_ready(cluster, namespace, "gone")
    assert not mi["metadata"].get("finalizers")
    cluster.kubectl("delete", "mi", "gone", "-n", namespace, "--wait=true", "--timeout=30s")
    wait_for(
        "children garbage-collected",
        lambda: (
            get(cluster, namespace, "deployment", "gone") is None and get(cluster, namespace, "service", "gone") is None
        ),
    )


def test_restart_with_ten_instances_writes_nothing(cluster: Any, namespace: str, xw_operator: OperatorProcess) -> None:
    if not cluster.audit_log:
        pytest.skip("needs the local cluster's audit log")
    chips = ["ascend-910b", "ascend-910c", "ascend-310p", "nvidia-t4", "metax-c550"]
    docs = [instance(name=f"inst-{i}", chip=chips[i % len(chips)], count=1) for i in range(10)]
    apply(cluster, namespace, *docs)
    for doc in docs:
        wait_ready(cluster, namespace, doc["metadata"]["name"])
    time.sleep(2)  # let trailing status/pod events settle
    before = resource_versions(cluster, namespace)
    audit = Path(cluster.audit_log)
    offset = audit.stat().st_size

    xw_operator.restart()
    # Every instance is reconciled at start-up (kopf's record of handled specs is in memory, so after a
    # restart each counts as new: "Creation is processed"); wait until all ten were.
    # (Other tests' instances are reconciled too, so at least ten.)
    wait_for(
        "start-up reconcile of 10 instances",
        lambda: sum(xw_operator.current_log().count(f"{c} is processed") for c in ("Creation", "Resuming")) >= 10,
    )
    time.sleep(3)

    with audit.open("rb") as fh:
        fh.seek(offset)
        entries = [json.loads(line) for line in fh.read().decode().splitlines() if line.strip()]
    writes = [
        f"{e['verb']} {e['objectRef'].get('resource')}/{e['objectRef'].get('name')}"
        for e in entries
        if e["verb"] in WRITE_VERBS and e["objectRef"].get("namespace") == namespace
    ]
    print(f"no-write check: {len(docs)} instances, {len(before)} objects, {len(writes)} writes after restart")
    assert writes == []
    assert resource_versions(cluster, namespace) == before


def nvidia_shm(gb: float | str) -> str:
    """The shipped devices.yaml with the nvidia-t4 vLLM sandbox's shm size changed."""
    data = builders.devices_doc(SHIPPED_DEVICES)
    builders.chip_doc(data, "nvidia-t4")["ext_sandboxes"]["vllm"]["shm_size_gb"] = gb
    return builders.devices_text(data)


def restore_shipped_devices(op: OperatorProcess) -> None:
    """Put the shipped devices.yaml back and wait until it is in force (the health probe caches 10 s)."""
    op.restore_devices()
    digest = hashlib.sha256(SHIPPED_DEVICES.read_bytes()).hexdigest()[:16]

    def back() -> bool:
        state = op.health()["devicesConfig"]
        return bool(state["digest"] == digest and state["lastError"] is None)

    wait_for("shipped devices.yaml in force", back)


def shm_limit(dep: dict[str, Any]) -> str:
    for volume in dep["spec"]["template"]["spec"]["volumes"]:
        if volume["name"] == "shm":
            return str(volume["emptyDir"]["sizeLimit"])
    raise AssertionError("no shm volume")


def test_devices_config_change_updates_only_affected_deployments(
    cluster: Any, namespace: str, xw_operator: OperatorProcess
) -> None:
    apply(
        cluster,
        namespace,
        instance(name="gpu", chip="nvidia-t4", count=1),
        instance(name="npu", chip="ascend-910b", count=1),
    )
    wait_ready(cluster, namespace, "gpu")
    wait_ready(cluster, namespace, "npu")
    npu_rv = get(cluster, namespace, "deployment", "npu")["metadata"]["resourceVersion"]  # type: ignore[index]
    old_limit = shm_limit(get(cluster, namespace, "deployment", "gpu"))  # type: ignore[arg-type]
    try:
        xw_operator.write_devices(nvidia_shm(48))
        dep = wait_for(
            "gpu Deployment re-rendered",
            lambda: (d := get(cluster, namespace, "deployment", "gpu")) and shm_limit(d) != old_limit and d,
        )
        assert shm_limit(dep) == "48Gi"
        npu = get(cluster, namespace, "deployment", "npu")
        assert npu is not None and npu["metadata"]["resourceVersion"] == npu_rv
        wait_ready(cluster, namespace, "gpu")
    finally:
        restore_shipped_devices(xw_operator)


def settled_versions(cluster: Any, namespace: str, timeout: float = 30) -> dict[str, str]:
    """Resource versions once nothing has moved for 2 s: Ready can come a moment before the Deployment
    controller's last status update, which the operator's status then follows."""
    deadline = time.monotonic() + timeout
    versions = resource_versions(cluster, namespace)
    while True:
        time.sleep(2)
        now = resource_versions(cluster, namespace)
        if now == versions:
            return now
        assert time.monotonic() < deadline, f"objects in {namespace} never settled: {versions} -> {now}"
        versions = now


def test_invalid_devices_config_is_refused_and_changes_nothing(
    cluster: Any, namespace: str, xw_operator: OperatorProcess
) -> None:
    apply(cluster, namespace, instance(name="keep", chip="nvidia-t4", count=1))
    wait_ready(cluster, namespace, "keep")
    before = settled_versions(cluster, namespace)
    digest = xw_operator.health()["devicesConfig"]["digest"]
    try:
        xw_operator.write_devices(nvidia_shm("lots"))
        health = wait_for(
            "refusal on /healthz", lambda: (h := xw_operator.health()["devicesConfig"])["lastError"] and h
        )
        assert "shm_size_gb" in health["lastError"]
        assert health["digest"] == digest
        time.sleep(2)
        assert resource_versions(cluster, namespace) == before
        assert "devices config refused" in xw_operator.log_text()
    finally:
        restore_shipped_devices(xw_operator)


def test_catalog_instance_gets_its_recipe_and_an_unsupported_chip_fails(
    cluster: Any, namespace: str, xw_operator: OperatorProcess
) -> None:
    """models.yaml and runtime_params.yaml put beside the operator's devices.yaml are picked up live."""
    beside = [xw_operator.devices_path.parent / name for name in ("models.yaml", "runtime_params.yaml")]
    digest = xw_operator.health()["devicesConfig"]["digest"]
    try:
        for path in beside:
            path.write_text((REPO / "configs" / path.name).read_text(encoding="utf-8"), encoding="utf-8")
        wait_for("recipes loaded", lambda: xw_operator.health()["devicesConfig"]["digest"] != digest)
        catalog = {"model": {"catalog": "qwen3-8b"}, "devices": {"chip": "ascend-910b"}}
        doc = {"apiVersion": "xw.dev/v1alpha1", "kind": "ModelInstance", "metadata": {"name": "cat"}, "spec": catalog}
        apply(cluster, namespace, doc)
        wait_ready(cluster, namespace, "cat")
        dep = get(cluster, namespace, "deployment", "cat")
        assert dep is not None
        container = engine_container(dep)
        # The shipped 910B image is upstream vLLM: tuned parameters become flags of `vllm serve`.
        assert container["command"] == ["vllm", "serve", "Qwen/Qwen3-8B"]
        assert "--gpu-memory-utilization=0.9" in container["args"] and "--max-model-len=32768" in container["args"]
        assert "--reasoning-parser" in container["args"]
        assert str(container["resources"]["limits"]["huawei.com/Ascend910"]) == "1"  # the recipe's world_size
        doc["metadata"]["name"] = "cat-intel"
        doc["spec"] = {**catalog, "devices": {"chip": "intel-gpu"}}
        apply(cluster, namespace, doc)
        mi = wait_for(
            "Failed",
            lambda: (
                (m := get(cluster, namespace, "mi", "cat-intel"))
                and (m.get("status") or {}).get("phase") == "Failed"
                and m
            ),
        )
        message = condition(mi, "Ready")["message"]
        assert "model qwen3-8b does not support chip intel-gpu; supported: ascend-910b" in message
        assert get(cluster, namespace, "deployment", "cat-intel") is None
    finally:
        for path in beside:
            path.unlink(missing_ok=True)
