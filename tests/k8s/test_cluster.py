"""The test cluster itself behaves like a real one: scheduling on extended resources, kwok-run pods,
garbage collection, RBAC. Runs unchanged against any cluster given by $KUBECONFIG that has nodes
advertising huawei.com/Ascend910: 8 (hack/cluster/kwok-nodes.yaml)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

ASCEND = "huawei.com/Ascend910"


def wait_until(what: str, fn: Callable[[], Any], timeout: float = 60, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def deployment(name: str, chips: int) -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "containers": [
                            {
                                "name": "engine",
                                "image": "registry.invalid/engine:none",
                                "resources": {
                                    "limits": {ASCEND: str(chips)},
                                    "requests": {"cpu": "1", "memory": "1Gi"},
                                },
                            }
                        ]
                    },
                },
            },
        }
    )


def pods(cluster: Any, ns: str, selector: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def condition(pod: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in pod.get("status", {}).get("conditions", []) or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def test_nodes_advertise_accelerators(cluster: Any) -> None:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    ascend = [n for n in nodes if n["status"].get("allocatable", {}).get(ASCEND) == "8"]
    assert len(ascend) >= 2, [n["metadata"]["name"] for n in nodes]
    for n in ascend:
        assert condition(n, "Ready").get("status") == "True", n["metadata"]["name"]


def test_pod_fitting_ascend_is_scheduled_and_ready(cluster: Any, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=deployment("fits", 4))

    def ready_pod() -> Any:
        for p in pods(cluster, namespace, "app=fits"):
            if condition(p, "Ready").get("status") == "True":
                return p
        return None

    pod = wait_until("pod Ready", ready_pod, timeout=90)
    node = json.loads(cluster.kubectl("get", "node", pod["spec"]["nodeName"], "-o", "json").stdout)
    assert node["status"]["allocatable"].get(ASCEND) == "8"
    assert pod["status"]["phase"] == "Running"


def test_pod_not_fitting_stays_pending_with_scheduler_reason(cluster: Any, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=deployment("too-big", 16))

    def unschedulable() -> Any:
        for p in pods(cluster, namespace, "app=too-big"):
            c = condition(p, "PodScheduled")
            if c.get("status") == "False" and c.get("reason") == "Unschedulable":
                return p, c
        return None

    pod, cond = wait_until("PodScheduled=False", unschedulable, timeout=90)
    assert f"Insufficient {ASCEND}" in cond["message"], cond
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")


def test_garbage_collector_deletes_owned_objects(cluster: Any, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    uid = cluster.kubectl("get", "configmap", "owner", "-n", namespace, "-o", "jsonpath={.metadata.uid}").stdout
    owned = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "owned",
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
        },
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(owned))
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)

    def gone() -> Any:
        proc = cluster.kubectl("get", "configmap", "owned", "-n", namespace, check=False)
        return proc.returncode != 0 and "NotFound" in proc.stderr

    wait_until("owned ConfigMap garbage-collected", gone, timeout=60)


def test_rbac_is_enforced_for_service_accounts(cluster: Any, namespace: str) -> None:
    wait_until(
        "default ServiceAccount",
        lambda: cluster.kubectl("get", "sa", "default", "-n", namespace, check=False).returncode == 0,
    )
    sa = f"system:serviceaccount:{namespace}:default"
    out = cluster.kubectl("auth", "can-i", "create", "pods", "-n", namespace, f"--as={sa}", check=False)
    assert out.stdout.strip() == "no", out
    cluster.kubectl("create", "role", "pod-reader", "--verb=get,list", "--resource=pods", "-n", namespace)
    cluster.kubectl(
        "create",
        "rolebinding",
        "rb",
        "--role=pod-reader",
        f"--serviceaccount={namespace}:default",
        "-n",
        namespace,
    )
    assert cluster.kubectl("auth", "can-i", "list", "pods", "-n", namespace, f"--as={sa}").stdout.strip() == "yes"


def test_audit_log_records_writes_at_metadata_level(cluster: Any, namespace: str) -> None:
    if not cluster.audit_log:
        pytest.skip("audit log path is only known for the local cluster (hack/cluster.sh)")
    cluster.kubectl("create", "configmap", "audited", "-n", namespace)
    cluster.kubectl("get", "configmap", "audited", "-n", namespace)

    def entries() -> Any:
        found = []
        with open(cluster.audit_log, encoding="utf-8") as f:
            for line in f:
                if namespace not in line:
                    continue
                e = json.loads(line)
                ref = e.get("objectRef", {})
                if ref.get("namespace") == namespace and ref.get("name") == "audited":
                    found.append(e)
        return found

    found = wait_until("audit entry for configmap audited", entries, timeout=10)
    assert {e["verb"] for e in found} == {"create"}, "reads must not be logged"
    assert found[0]["level"] == "Metadata"
    assert found[0]["user"]["username"] == "xw-admin"
    assert "requestObject" not in found[0]
