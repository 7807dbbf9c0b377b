"""Multi-node instances on the real LeaderWorkerSet controller (hack/cluster.sh up runs it with its
webhooks) + the real scheduler + kwok's six simulated Ascend 910 nodes (8 NPUs each, three per rack; the
tests also pass next to the demo's instances)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from operator_fixture import REPO, SHIPPED_DEVICES, OperatorProcess
from test_operator import wait_for as operator_wait_for

from xw_operator.engines import FIELD_REFS

pytestmark = pytest.mark.usefixtures("operator_log_on_failure")

ROLE = "xw.dev/role"
GROUP_INDEX = "leaderworkerset.sigs.k8s.io/group-index"


@pytest.fixture(autouse=True)
def needs_lws(xw_operator: OperatorProcess) -> None:
    if not xw_operator.multi_node:
        pytest.skip("the cluster has no LeaderWorkerSet CRD (hack/cluster.sh up installs it)")


def instance(name: str, nodes: int, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "xw.dev/v1alpha1",
        "kind": "ModelInstance",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "name": "deepseek-ai/DeepSeek-R1",
                "source": {"huggingFace": {"repo": "deepseek-ai/DeepSeek-R1"}},
            },
            "engine": {"name": "vllm", "args": ["--max-model-len=32768"]},
            "devices": {"chip": "ascend-910b", "count": 8, "nodes": nodes},
            **spec,
        },
    }


def kubectl_json(cluster: Any, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def pods_of(cluster: Any, ns: str, name: str, *, terminating: bool = False) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl_json(cluster, "get", "pods", "-n", ns, "-l", f"xw.dev/model-instance={name}")[
        "items"
    ]
    return [p for p in items if terminating or not p["metadata"].get("deletionTimestamp")]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90.0, cluster: Any = None) -> Any:
    """test_operator's wait_for, plus what the scheduler saw (every pod, all namespaces) on a timeout."""
    try:
        return operator_wait_for(what, check, timeout)
    except AssertionError as exc:
        if cluster is None:
            raise
        pods = cluster.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
        raise AssertionError(f"{exc}\npods:\n{pods}") from None


def status(cluster: Any, ns: str, name: str) -> dict[str, Any]:
    proc = cluster.kubectl("get", "mi", name, "-n", ns, "-o", "json", check=False)
    return dict(json.loads(proc.stdout).get("status") or {}) if proc.returncode == 0 else {}


def ready(cluster: Any, ns: str, name: str, replicas: int, nodes: int) -> bool:
    s = status(cluster, ns, name)
    running = [p for p in pods_of(cluster, ns, name) if p["status"].get("phase") == "Running"]
    return s.get("phase") == "Ready" and s.get("readyReplicas") == replicas and len(running) == replicas * nodes


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_two_nodes_of_eight_npus_run_as_one_group_scale_by_groups_and_are_removed_with_the_instance(
    cluster: Any, namespace: str
) -> None:
    name = "dsr1"
    doc = instance(name, nodes=2)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
    wait_for("the instance Ready with one group", lambda: ready(cluster, namespace, name, 1, 2), cluster=cluster)

    lws = kubectl_json(cluster, "get", "leaderworkerset", f"{name}-lws", "-n", namespace)
    assert lws["spec"]["replicas"] == 1 and lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    assert lws["metadata"]["ownerReferences"][0]["kind"] == "ModelInstance"
    pods = pods_of(cluster, namespace, name)
    roles = {p["metadata"]["labels"][ROLE]: p for p in pods}
    assert set(roles) == {"leader", "worker"}
    leader, worker = roles["leader"], roles["worker"]
    assert leader["metadata"]["name"] == f"{name}-lws-0" and worker["metadata"]["name"] == f"{name}-lws-0-1"
    nodes = {p["spec"]["nodeName"] for p in pods}
    assert len(nodes) == 2 and all(n.startswith("kwok-ascend910-") for n in nodes), nodes

    for pod in pods:
        c = pod["spec"]["containers"][0]
        assert str(c["resources"]["limits"]["huawei.com/Ascend910"]) == "8"
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/dev/shm", "/usr/local/Ascend/driver/lib64/", "/usr/local/dcmi"} <= mounts
        env = env_of(c)
        # injected by the real LWS pod webhook, placed first so $(LWS_LEADER_ADDRESS) would expand
        assert env["LWS_LEADER_ADDRESS"] == f"{name}-lws-0.{name}-lws.{namespace}"
        assert env["LWS_GROUP_SIZE"] == "2"
        assert env["HCCL_IF_IP"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}
    lc, wc = leader["spec"]["containers"][0], worker["spec"]["containers"][0]
    assert "ray start --head" in lc["command"][2] and lc["command"][4:] == ["vllm", "serve", "deepseek-ai/DeepSeek-R1"]
    assert lc["args"][lc["args"].index("--tensor-parallel-size") + 1] == "8"
    assert lc["args"][lc["args"].index("--pipeline-parallel-size") + 1] == "2"
    assert "--distributed-executor-backend" in lc["args"]
    assert '--address="${LWS_LEADER_ADDRESS}:6379"' in wc["command"][2] and "ports" not in wc

    # the instance's Service reaches the leader only (the EndpointSlice controller agrees)
    slices = kubectl_json(cluster, "get", "endpointslices", "-n", namespace, "-l", f"kubernetes.io/service-name={name}")
    targets = [e["targetRef"]["name"] for s in slices["items"] for e in s.get("endpoints") or []]
    assert targets == [leader["metadata"]["name"]]

    # scaling replicas adds a group: two more pods, on two more nodes
    cluster.kubectl("patch", "mi", name, "-n", namespace, "--type=merge", "-p", '{"spec":{"replicas":2}}')
    wait_for("two groups Ready", lambda: ready(cluster, namespace, name, 2, 2), cluster=cluster)
    pods = pods_of(cluster, namespace, name)
    assert len({p["spec"]["nodeName"] for p in pods}) == 4
    assert sorted(p["metadata"]["labels"][GROUP_INDEX] for p in pods) == ["0", "0", "1", "1"]
    assert kubectl_json(cluster, "get", "leaderworkerset", f"{name}-lws", "-n", namespace)["spec"]["replicas"] == 2
    assert status(cluster, namespace, name)["readyReplicas"] == 2

    # deleting the instance removes everything: the set, its StatefulSets, pods and both Services
    cluster.kubectl("delete", "mi", name, "-n", namespace, "--wait=true", "--timeout=60s", timeout=90)

    def gone() -> bool:
        out = kubectl_json(cluster, "get", "leaderworkersets,statefulsets,services,pods", "-n", namespace)
        return not out["items"]

    wait_for("every child of the instance gone", gone, timeout=120)


def test_a_topology_key_keeps_the_group_in_one_rack(cluster: Any, namespace: str) -> None:
    doc = instance("racked", nodes=2)
    doc["spec"]["devices"]["topologyKey"] = "xw.dev/rack"
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
    wait_for("Ready", lambda: ready(cluster, namespace, "racked", 1, 2), cluster=cluster)
    nodes = {n["metadata"]["name"]: n["metadata"]["labels"] for n in kubectl_json(cluster, "get", "nodes")["items"]}
    racks = {nodes[p["spec"]["nodeName"]]["xw.dev/rack"] for p in pods_of(cluster, namespace, "racked")}
    assert len(racks) == 1, racks
    cluster.kubectl("delete", "mi", "racked", "-n", namespace, "--wait=true", "--timeout=60s", timeout=90)
    wait_for("its pods gone", lambda: not pods_of(cluster, namespace, "racked", terminating=True), timeout=120)


def test_more_nodes_than_exist_reports_the_schedulers_reason(cluster: Any, namespace: str) -> None:
    name = "toobig"
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(instance(name, nodes=7)))

    def unplaceable() -> str:
        message = str(status(cluster, namespace, name).get("message") or "")
        return message if "cannot be scheduled" in message else ""

    message = wait_for("the scheduler's reason in status", unplaceable, cluster=cluster)
    assert "group 0 needs 7 nodes with 8 free huawei.com/Ascend910" in message
    assert "nodes are available" in message  # the scheduler's own words follow
    s = status(cluster, namespace, name)
    assert s["phase"] == "Degraded" and s["readyReplicas"] == 0
    cluster.kubectl("delete", "mi", name, "-n", namespace, "--wait=true", "--timeout=60s", timeout=90)
    # gone, not just terminating: they hold six nodes' NPUs until then
    wait_for("its pods gone", lambda: not pods_of(cluster, namespace, name, terminating=True), timeout=120)


@pytest.mark.parametrize(
    ("devices", "parallelism", "message"),
    [
        ({"nodes": 2}, {"tensor": 8, "pipeline": 3}, "parallelism.tensor x parallelism.pipeline must equal"),
        ({"nodes": 1, "topologyKey": "xw.dev/rack"}, None, "devices.topologyKey applies to multi-node instances"),
        ({"nodes": 65}, None, "should be less than or equal to 64"),
    ],
)
def test_the_api_server_refuses_inconsistent_multi_node_specs(
    cluster: Any, namespace: str, devices: dict[str, Any], parallelism: dict[str, int] | None, message: str
) -> None:
    doc = instance("bad", nodes=1)
    doc["spec"]["devices"].update(devices)
    if parallelism:
        doc["spec"]["parallelism"] = parallelism
    proc = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def test_switching_between_single_and_multi_node_is_refused_in_place(cluster: Any, namespace: str) -> None:
    """A Deployment cannot become a LeaderWorkerSet in place: the API server's transition rule says so
    before the operator would leave the old workload holding its accelerators."""
    doc = instance("flip", nodes=1)
    doc["spec"]["replicas"] = 0  # nothing needs to run for this
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
    proc = cluster.kubectl(
        "patch", "mi", "flip", "-n", namespace, "--type=merge", "-p", '{"spec":{"devices":{"nodes":2}}}', check=False
    )
    assert proc.returncode != 0 and "devices.nodes cannot change between 1 and more than 1" in proc.stderr


def test_a_crashing_worker_makes_the_instance_degraded_naming_its_group(cluster: Any, namespace: str) -> None:
    """kwok's test stage (hack/cluster/kwok-stages.yaml) keeps the worker's container in CrashLoopBackOff."""
    doc = instance("crash", nodes=2)
    doc["spec"]["engine"]["env"] = [{"name": "XW_KWOK_CRASH", "value": "worker"}]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))

    def degraded() -> dict[str, Any]:
        s = status(cluster, namespace, "crash")
        return s if s.get("phase") == "Degraded" else {}

    s = wait_for("Degraded", degraded, cluster=cluster)
    assert s["readyReplicas"] == 0
    assert "group 0: pod crash-lws-0-1 container engine: CrashLoopBackOff" in s["message"], s["message"]
    cluster.kubectl("delete", "mi", "crash", "-n", namespace, "--wait=true", "--timeout=60s", timeout=90)
    wait_for("its pods gone", lambda: not pods_of(cluster, namespace, "crash", terminating=True), timeout=120)


def test_revocation_scales_the_leaderworkerset_to_zero_and_restoring_brings_it_back(
    cluster: Any, namespace: str, xw_operator: OperatorProcess
) -> None:
    """An image the administrator stops allowing withdraws a multi-node instance's pods too."""
    shipped = SHIPPED_DEVICES.read_text(encoding="utf-8")
    allowing = shipped.replace("allowed_image_prefixes: []", "allowed_image_prefixes: [quay.io/ascend]")
    assert allowing != shipped
    doc = instance("revoked", nodes=2)
    doc["spec"]["engine"]["image"] = "quay.io/ascend/vllm-ascend:custom"
    try:
        xw_operator.write_devices(allowing)
        time.sleep(2)  # the operator polls its devices.yaml every second
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
        wait_for("Ready", lambda: ready(cluster, namespace, "revoked", 1, 2), cluster=cluster)

        xw_operator.write_devices(shipped)
        wait_for(
            "withdrawn",
            lambda: (
                not pods_of(cluster, namespace, "revoked", terminating=True)
                and status(cluster, namespace, "revoked").get("phase") == "Failed"
            ),
            cluster=cluster,
        )
        lws = kubectl_json(cluster, "get", "leaderworkerset", "revoked-lws", "-n", namespace)
        assert lws["spec"]["replicas"] == 0
        assert "ImageNotAllowed" in json.dumps(status(cluster, namespace, "revoked")["conditions"])

        xw_operator.write_devices(allowing)
        wait_for("Ready again", lambda: ready(cluster, namespace, "revoked", 1, 2), cluster=cluster)
    finally:
        xw_operator.restore_devices()
    cluster.kubectl("delete", "mi", "revoked", "-n", namespace, "--wait=true", "--timeout=60s", timeout=90)
    wait_for("its pods gone", lambda: not pods_of(cluster, namespace, "revoked", terminating=True), timeout=120)


def test_an_admins_contract_in_devices_yaml_reaches_the_leaderworkerset_without_a_release(
    cluster: Any, namespace: str, xw_operator: OperatorProcess
) -> None:
    """devices.yaml `engines:` overrides the shipped vllm definition with its own multi-node contract (the
    operator reloads it, no new image); the LeaderWorkerSet the real controller runs carries it, the API
    server accepts every downward-API field the contract format allows, and restoring the shipped file
    brings the shipped contract back to the running instance."""
    shipped_engines = yaml.safe_load((REPO / "configs" / "engines.yaml").read_text(encoding="utf-8"))["engines"]
    vllm = shipped_engines["vllm"]
    huawei = vllm["multi_node"]["vendors"]["huawei"]
    huawei["leader"]["wrap"] = ["/bin/sh", "-c", 'admin-ray-head --npus={device_count} && exec "$@"', "xw-leader"]
    huawei["env"]["HCCL_CONNECT_TIMEOUT"] = "600"
    fields = {f"XW_FIELD_{i}": {"fieldRef": f} for i, f in enumerate(FIELD_REFS)}
    vllm["multi_node"]["env"].update({"ADMIN_CONTRACT": "{nodes}x{device_count}", **fields})
    admin = SHIPPED_DEVICES.read_text(encoding="utf-8") + "\n" + yaml.safe_dump({"engines": {"vllm": vllm}})
    name = "admin"

    def leader_container() -> dict[str, Any]:
        proc = cluster.kubectl("get", "leaderworkerset", f"{name}-lws", "-n", namespace, "-o", "json", check=False)
        if proc.returncode != 0:
            return {}
        template = json.loads(proc.stdout)["spec"]["leaderWorkerTemplate"]["leaderTemplate"]
        return dict(template["spec"]["containers"][0])

    try:
        xw_operator.write_devices(admin)
        time.sleep(2)  # the operator polls its devices.yaml every second
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(instance(name, nodes=2)))
        wait_for("the instance Ready with one group", lambda: ready(cluster, namespace, name, 1, 2), cluster=cluster)

        lc = leader_container()
        assert lc["command"] == [
            "/bin/sh", "-c", 'admin-ray-head --npus=8 && exec "$@"', "xw-leader",
            "vllm", "serve", "deepseek-ai/DeepSeek-R1",
        ]  # fmt: skip
        variables = env_of(lc)
        assert variables["ADMIN_CONTRACT"] == "2x8" and variables["HCCL_CONNECT_TIMEOUT"] == "600"
        assert variables["HCCL_IF_IP"]["fieldRef"]["fieldPath"] == "status.podIP"
        # Every allowed pod field is one the API server takes: both pods of the group exist and carry them.
        for pod in pods_of(cluster, namespace, name):
            pod_env = env_of(pod["spec"]["containers"][0])
            assert {k: pod_env[k]["fieldRef"]["fieldPath"] for k in fields} == {
                k: v["fieldRef"] for k, v in fields.items()
            }
            assert pod_env["ADMIN_CONTRACT"] == "2x8"

        xw_operator.restore_devices()
        wait_for(
            "the shipped contract back on the LeaderWorkerSet",
            lambda: leader_container().get("command", [""] * 3)[2].startswith("ray start --head"),
            cluster=cluster,
        )
        assert "ADMIN_CONTRACT" not in env_of(leader_container())
    finally:
        xw_operator.restore_devices()
    cluster.kubectl("delete", "mi", name, "-n", namespace, "--wait=true", "--timeout=60s", timeout=90)
    wait_for("its pods gone", lambda: not pods_of(cluster, namespace, name, terminating=True), timeout=120)
