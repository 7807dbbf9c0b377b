"""A namespace user gains nothing through a ModelInstance (issue 10), against the real control plane.

The user ``tenant-alice`` is bound only to a Role allowing ModelInstance get/list/watch/create/update/patch/
delete in one namespace and acts through impersonation (``kubectl --as``). Every attempt must be refused
by the API server (RBAC, schema, CEL) or by the operator (status Failed with a reason); the test prints
each attempt and its outcome, then checks every pod the cluster holds. Further: a name clash leaves the
foreign object byte-for-byte unchanged, revocation stops and restores workloads, and writable caches are
private to a namespace.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from operator_fixture import SHIPPED_DEVICES, OperatorProcess
from test_operator import wait_for

USER = "tenant-alice"
MODELS = "/data/models"
# The shipped chip profiles' grants (configs/devices.yaml): what a tenant's pod may carry at most.
GRANTED_CAPS = {"SYS_ADMIN", "SYS_RAWIO", "IPC_LOCK", "SYS_RESOURCE", "NET_ADMIN"}
DRIVER_PATHS = {
    "/usr/local/dcmi",
    "/usr/local/bin/npu-smi",
    "/usr/local/Ascend/driver/lib64/",
    "/usr/local/Ascend/driver/version.info",
    "/etc/ascend_install.info",
}
NEVER_MOUNTED = ["/", "/etc", "/var/lib/kubelet", "/run/containerd", "/var/run", "/root", "/root/.cache", "/proc"]


def with_model_dirs(text: str, dirs: str) -> str:
    marker = "model_host_path_prefixes: []"
    assert marker in text
    return text.replace(marker, f"model_host_path_prefixes: {dirs}")


def get(cluster: Any, ns: str, kind: str, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    if proc.returncode != 0:
        assert "NotFound" in proc.stderr, proc.stderr
        return None
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def instance(name: str, chip: str = "ascend-910b", count: int = 1, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"source": {"huggingFace": {"repo": f"org/{name[:40]}"}}},
        "engine": {"name": "vllm"},
        "devices": {"chip": chip, "count": count},
    }
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return {"apiVersion": "xw.dev/v1alpha1", "kind": "ModelInstance", "metadata": {"name": name}, "spec": body}


def status_of(cluster: Any, ns: str, name: str) -> tuple[str | None, str | None, str]:
    mi = get(cluster, ns, "mi", name) or {}
    status = mi.get("status") or {}
    ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
    return status.get("phase"), ready.get("reason"), str(ready.get("message") or status.get("message") or "")


def set_devices(op: OperatorProcess, text: str) -> None:
    """Write devices.yaml and wait until the operator has it in force (its health probe caches ~10 s)."""
    op.write_devices(text)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    wait_for("devices.yaml in force", lambda: op.health()["devicesConfig"]["digest"] == digest, 60)


@pytest.fixture
def models_allowed(xw_operator: OperatorProcess) -> Iterator[OperatorProcess]:
    """The operator with an administrator allowing hostPath models under /data/models; shipped after."""
    set_devices(xw_operator, with_model_dirs(SHIPPED_DEVICES.read_text(encoding="utf-8"), f"[{MODELS}]"))
    try:
        yield xw_operator
    finally:
        set_devices(xw_operator, SHIPPED_DEVICES.read_text(encoding="utf-8"))


@pytest.fixture
def tenant(cluster: Any, namespace: str) -> str:
    """``tenant-alice`` may only read and write ModelInstances in ``namespace``."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "mi-editor", "namespace": namespace},
        "rules": [
            {
                "apiGroups": ["xw.dev"],
                "resources": ["modelinstances"],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "mi-editor", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "mi-editor"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}],
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([role, binding]))
    return namespace


@dataclass
class Attempt:
    what: str
    doc: dict[str, Any] | None = None  # applied as the tenant; None: ``command`` is run instead
    command: tuple[str, ...] = ()
    refused_by: str = "operator"  # "api" or "operator"
    reasons: tuple[str, ...] = ()  # the operator's status reason(s) expected
    outcome: str = ""
    refused: bool = False


def attempts() -> list[Attempt]:
    long = "a" + "b" * 62  # 63 characters: the limit
    ctrl = "node-role.kubernetes.io/control-plane"
    hp = ("HostPathNotAllowed",)
    aff = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "accelerator", "operator": "NotIn", "values": ["huawei-Ascend910"]}]}
                ]
            }
        }
    }
    return [
        Attempt("hostPath / (the node's root)", instance("hp-root", model={"source": {"hostPath": "/"}}), reasons=hp),
        Attempt("hostPath /etc", instance("hp-etc", model={"source": {"hostPath": "/etc"}}), reasons=hp),
        Attempt(
            "hostPath /var/lib/kubelet",
            instance("hp-kubelet", model={"source": {"hostPath": "/var/lib/kubelet"}}),
            reasons=hp,
        ),
        Attempt(
            "hostPath /run/containerd",
            instance("hp-cri", model={"source": {"hostPath": "/run/containerd"}}),
            reasons=hp,
        ),
        Attempt(
            "hostPath with '..'",
            instance("hp-dots", model={"source": {"hostPath": f"{MODELS}/../../etc"}}),
            refused_by="api",
        ),
        Attempt(
            "hostPath prefix look-alike",
            instance("hp-alike", model={"source": {"hostPath": f"{MODELS}-evil/q"}}),
            reasons=hp,
        ),
        Attempt(
            "hostPath with '//' (look-alike)",
            instance("hp-slashes", model={"source": {"hostPath": "/data//models/q"}}),
            reasons=hp,
        ),
        Attempt(
            "hostPath the parent of the allowed dir",
            instance("hp-parent", model={"source": {"hostPath": "/data"}}),
            reasons=hp,
        ),
        Attempt(
            "unlisted image",
            instance("img-evil", engine={"image": "evil.example/miner:1"}),
            reasons=("ImageNotAllowed",),
        ),
        Attempt(
            "image under a registry look-alike",
            instance("img-alike", engine={"image": "quay.io/ascend-evil/vllm:1"}),
            reasons=("ImageNotAllowed",),
        ),
        Attempt(
            "another chip's image",
            instance("img-other", engine={"image": "vllm/vllm-openai:v0.11.0"}),
            reasons=("ImageNotAllowed",),
        ),
        Attempt("name clash with a foreign Service", instance("victim"), reasons=("NameConflict",)),
        Attempt(
            "toleration Exists without key", instance("tol-all", tolerations=[{"operator": "Exists"}]), refused_by="api"
        ),
        Attempt(
            "toleration for the control-plane taint",
            instance("tol-cp", tolerations=[{"key": ctrl, "operator": "Exists"}]),
            refused_by="api",
        ),
        Attempt("control-plane node selector", instance("sel-cp", nodeSelector={ctrl: ""}), refused_by="api"),
        Attempt(
            "node selector contradicting the chip",
            instance("sel-other", nodeSelector={"accelerator": "nvidia-gpu"}),
            reasons=("PlacementNotAllowed",),
        ),
        Attempt(
            "node affinity contradicting the chip",
            instance("aff-other", affinity=aff),
            reasons=("PlacementNotAllowed",),
        ),
        Attempt(
            "env valueFrom a Secret in kube-system",
            instance(
                "env-secret",
                engine={
                    "env": [
                        {
                            "name": "T",
                            "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "namespace": "kube-system"}},
                        }
                    ]
                },
            ),
            refused_by="api",
        ),
        Attempt(
            "apiKeySecretRef into another namespace",
            instance("key-ns", apiKeySecretRef={"name": "s", "namespace": "kube-system"}),
            refused_by="api",
        ),
        Attempt(
            "accelerators requested in resources",
            instance("res-npu", resources={"limits": {"huawei.com/Ascend910": 8}}),
            refused_by="api",
        ),
        Attempt("hostNetwork", instance("host-net", hostNetwork=True), refused_by="api"),
        Attempt("hostPID", instance("host-pid", hostPID=True), refused_by="api"),
        Attempt(
            "securityContext privileged", instance("sec-priv", securityContext={"privileged": True}), refused_by="api"
        ),
        Attempt(
            "extra hostPath volume",
            instance("vol-host", volumes=[{"name": "r", "hostPath": {"path": "/"}}]),
            refused_by="api",
        ),
        Attempt(
            "visibility variable in env",
            instance("env-vis", engine={"env": [{"name": "ASCEND_VISIBLE_DEVICES", "value": "0,1,2,3,4,5,6,7"}]}),
            reasons=("InvalidSpec",),
        ),
        Attempt("unknown field spec.privileged", instance("unk-priv", privileged=True), refused_by="api"),
        Attempt("huge device count (1e6)", instance("count-huge", count=1000000), refused_by="api"),
        Attempt("device count above the chip's capacity", instance("count-64", count=64), reasons=("InvalidSpec",)),
        Attempt("name over 63 characters", instance(long + "c"), refused_by="api"),
        Attempt(
            "a Deployment directly",
            command=("create", "deployment", "direct", "--image=evil.example/x:1"),
            refused_by="api",
        ),
        Attempt(
            "writing ModelInstance status",
            command=("patch", "mi", "ok", "--subresource=status", "--type=merge", "-p", '{"status":{"phase":"Ready"}}'),
            refused_by="api",
        ),
        Attempt("reading Secrets", command=("get", "secrets"), refused_by="api"),
    ]


def test_a_namespace_user_gains_nothing_through_a_model_instance(
    cluster: Any, tenant: str, models_allowed: OperatorProcess, operator_log_on_failure: Any
) -> None:
    ns = tenant
    # A Service the operator does not own, as another tool (or team member) made it.
    victim = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "victim", "namespace": ns, "labels": {"app": "payments"}},
        "spec": {"selector": {"app": "payments"}, "ports": [{"port": 443}]},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(victim))
    before = get(cluster, ns, "service", "victim")
    # Legitimate instances: one allowed hostPath model, one at the name length limit.
    baseline = [
        instance("ok", model={"source": {"hostPath": f"{MODELS}/qwen"}}),
        instance("a" + "b" * 62, chip="nvidia-t4"),
    ]
    cluster.kubectl("apply", "-n", ns, "--as", USER, "-f", "-", input=yaml.safe_dump_all(baseline))

    tried = attempts()
    assert len(tried) >= 20
    for a in tried:
        if a.doc is not None:
            proc = cluster.kubectl("apply", "-n", ns, "--as", USER, "-f", "-", input=yaml.safe_dump(a.doc), check=False)
        else:
            proc = cluster.kubectl(*a.command, "-n", ns, "--as", USER, check=False)
        if proc.returncode != 0:
            a.refused = True
            a.outcome = "API server: " + " ".join(proc.stderr.split())[:220]
        elif a.refused_by == "api":
            a.outcome = "ACCEPTED by the API server"

    def settled() -> bool:
        for a in tried:
            if a.refused or a.doc is None or a.refused_by == "api":
                continue
            phase, reason, message = status_of(cluster, ns, a.doc["metadata"]["name"])
            if phase != "Failed":
                a.outcome = f"status phase {phase} (not refused yet)"
                return False
            a.refused = reason in a.reasons
            a.outcome = f"operator: Failed, reason {reason}: {message[:200]}"
        return True

    try:
        wait_for("every operator-side refusal in status", settled, 60)
    finally:
        print(f"\n{len(tried)} escalation attempts by {USER} in {ns}:")
        for i, a in enumerate(tried, 1):
            print(f"  {i:2}. [{'refused' if a.refused else 'NOT REFUSED'}] {a.what}: {a.outcome}")

    assert all(a.refused for a in tried), [a.what for a in tried if not a.refused]
    for a in tried:
        if a.doc is not None and a.refused_by == "operator":
            dep = get(cluster, ns, "deployment", a.doc["metadata"]["name"])
            assert dep is None or a.doc["metadata"]["name"] == "victim", f"{a.what}: a Deployment exists"
    assert get(cluster, ns, "deployment", "victim") is None
    after = get(cluster, ns, "service", "victim")
    assert after == before, "the foreign Service was changed"

    # The legitimate instances run, and every pod in the namespace carries only what the admin granted.
    for name in ("ok", "a" + "b" * 62):
        cluster.kubectl("wait", "--for=condition=Ready", f"mi/{name}", "-n", ns, "--timeout=60s", timeout=70)
    pods = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
    assert len(pods) == 2, [p["metadata"]["name"] for p in pods]
    for pod in pods:
        assert_only_granted(pod, ns)
    assert_no_pod_in_the_cluster_mounts_forbidden_paths(cluster)


def assert_only_granted(pod: dict[str, Any], ns: str) -> None:
    spec = pod["spec"]
    name = pod["metadata"]["name"]
    assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), name
    assert spec.get("automountServiceAccountToken") is False, name
    for toleration in spec.get("tolerations") or []:
        assert toleration.get("key"), f"{name}: tolerates every taint"
    allowed_paths = DRIVER_PATHS | {f"/root/.cache/xw-namespaces/{ns}"}
    for volume in spec.get("volumes") or []:
        path = (volume.get("hostPath") or {}).get("path")
        if path is not None:
            assert path in allowed_paths or path.startswith(MODELS + "/"), f"{name}: hostPath {path}"
    for container in spec["containers"] + spec.get("initContainers", []):
        security = container.get("securityContext") or {}
        assert security.get("privileged") is False, f"{name}: privileged"
        assert security.get("allowPrivilegeEscalation") is False, name
        assert security.get("seccompProfile") == {"type": "RuntimeDefault"}, name
        caps = security.get("capabilities") or {}
        assert caps.get("drop") == ["ALL"], name
        assert set(caps.get("add") or []) <= GRANTED_CAPS, f"{name}: capabilities {caps}"


def assert_no_pod_in_the_cluster_mounts_forbidden_paths(cluster: Any) -> None:
    pods = json.loads(cluster.kubectl("get", "pods", "-A", "-o", "json").stdout)["items"]
    for pod in pods:
        for volume in pod["spec"].get("volumes") or []:
            path = (volume.get("hostPath") or {}).get("path")
            if path is not None:
                assert path.rstrip("/") not in [p.rstrip("/") for p in NEVER_MOUNTED], (pod["metadata"], path)


def test_name_clash_leaves_the_foreign_object_byte_for_byte_unchanged(
    cluster: Any, namespace: str, xw_operator: OperatorProcess, operator_log_on_failure: Any
) -> None:
    ns = namespace
    foreign = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "billing", "namespace": ns, "labels": {"app": "billing"}},
        "spec": {
            "replicas": 0,  # no pods: its status settles, so its resourceVersion changes only on a write
            "selector": {"matchLabels": {"app": "billing"}},
            "template": {
                "metadata": {"labels": {"app": "billing"}},
                "spec": {"containers": [{"name": "c", "image": "registry.example/billing:1"}]},
            },
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(foreign))

    def settled() -> dict[str, Any] | None:
        dep = get(cluster, ns, "deployment", "billing")
        return dep if dep and (dep.get("status") or {}).get("observedGeneration") == 1 else None

    before = wait_for("the foreign Deployment's status to settle", settled)
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(instance("billing")))
    wait_for("NameConflict in status", lambda: status_of(cluster, ns, "billing")[1] == "NameConflict")
    phase, _, message = status_of(cluster, ns, "billing")
    assert phase == "Failed" and f"Deployment {ns}/billing" in message, message
    events = json.loads(
        cluster.kubectl(
            "get", "events", "-n", ns, "--field-selector", "involvedObject.kind=ModelInstance", "-o", "json"
        ).stdout
    )["items"]
    assert any(e["reason"] == "NameConflict" and f"Deployment {ns}/billing" in e["message"] for e in events), events
    # No Service was created beside it either: every name is checked before the first write.
    assert get(cluster, ns, "service", "billing") is None
    after = get(cluster, ns, "deployment", "billing")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    for key in ("ownerReferences", "labels", "annotations"):
        assert after["metadata"].get(key) == before["metadata"].get(key), key
    assert after["spec"] == before["spec"]
    assert not [m for m in after["metadata"].get("managedFields", []) if m.get("manager") == "xw-operator"]


def pods_of(cluster: Any, ns: str, name: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-n", ns, "-l", f"xw.dev/model-instance={name}", "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def test_revocation_stops_the_workload_and_restoring_brings_it_back(
    cluster: Any, namespace: str, models_allowed: OperatorProcess, operator_log_on_failure: Any
) -> None:
    ns, op = namespace, models_allowed
    shipped = SHIPPED_DEVICES.read_text(encoding="utf-8")
    allowed = with_model_dirs(shipped, f"[{MODELS}]")
    docs = [
        instance("weights", model={"source": {"hostPath": f"{MODELS}/qwen"}}),
        instance("gpu", chip="nvidia-t4"),
        instance("bystander", chip="ascend-310p"),
    ]
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs))
    for name in ("weights", "gpu", "bystander"):
        cluster.kubectl("wait", "--for=condition=Ready", f"mi/{name}", "-n", ns, "--timeout=60s", timeout=70)

    def operator_writes(name: str) -> tuple[Any, ...]:
        """generation + the operator's field-manager entries: change only when the operator writes (a
        resourceVersion also moves with status updates of the Deployment controller)."""
        dep = get(cluster, ns, "deployment", name)
        assert dep is not None
        mine = [m for m in dep["metadata"].get("managedFields", []) if m.get("manager") == "xw-operator"]
        return dep["metadata"]["generation"], json.dumps(mine, sort_keys=True)

    bystander = operator_writes("bystander")

    # 1. The administrator stops allowing hostPath models.
    print("\npolicy tightened: model_host_path_prefixes: []")
    op.write_devices(shipped)
    wait_for(
        "weights withdrawn",
        lambda: not pods_of(cluster, ns, "weights") and status_of(cluster, ns, "weights")[1] == "HostPathNotAllowed",
    )
    dep = get(cluster, ns, "deployment", "weights")
    assert dep is not None and dep["spec"]["replicas"] == 0
    assert "no engine pod runs until" in status_of(cluster, ns, "weights")[2]
    assert pods_of(cluster, ns, "gpu"), "an unaffected instance lost its pods"

    # 2. ... and removes the nvidia-t4 profile.
    print("chip profile nvidia-t4 removed")
    start = shipped.index("  - vendor_name: NVIDIA")
    op.write_devices(shipped[:start])
    wait_for(
        "gpu withdrawn", lambda: not pods_of(cluster, ns, "gpu") and status_of(cluster, ns, "gpu")[1] == "UnknownChip"
    )

    # 3. Restoring both brings both back; the bystander was never written to.
    print("policy and profile restored")
    op.write_devices(allowed)
    for name in ("weights", "gpu"):
        cluster.kubectl("wait", "--for=condition=Ready", f"mi/{name}", "-n", ns, "--timeout=60s", timeout=70)
        assert pods_of(cluster, ns, name)
    assert operator_writes("bystander") == bystander, "the operator wrote to an instance that still passes"


def test_writable_caches_are_private_to_a_namespace(
    cluster: Any, namespace: str, xw_operator: OperatorProcess, operator_log_on_failure: Any
) -> None:
    other = f"{namespace}-b"[:63]
    cluster.kubectl("create", "namespace", other)
    cluster.kubectl("label", "namespace", other, "xw.dev/test=true")
    try:
        for ns in (namespace, other):
            cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(instance("hf", count=1)))
        caches = {}
        for ns in (namespace, other):
            cluster.kubectl("wait", "--for=condition=Ready", "mi/hf", "-n", ns, "--timeout=60s", timeout=70)
            (pod,) = pods_of(cluster, ns, "hf")
            mount = next(m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["mountPath"] == "/root/.cache")
            volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
            caches[ns] = volume["hostPath"]["path"]
            assert volume["hostPath"]["type"] == "DirectoryOrCreate"
        print(f"\nHugging Face caches: {caches}")
        assert caches[namespace] != caches[other]
        # No pod outside a namespace mounts that namespace's cache directory or any directory above it.
        all_pods = json.loads(cluster.kubectl("get", "pods", "-A", "-o", "json").stdout)["items"]
        for ns, cache in caches.items():
            for pod in all_pods:
                if pod["metadata"]["namespace"] == ns:
                    continue
                for volume in pod["spec"].get("volumes") or []:
                    path = (volume.get("hostPath") or {}).get("path", "").rstrip("/")
                    if path:
                        assert not (cache == path or cache.startswith(path + "/")), (pod["metadata"]["name"], path)
    finally:
        cluster.kubectl("delete", "mi", "--all", "-n", other, "--wait=true", "--timeout=60s", check=False, timeout=90)
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)
