"""The fault suite (issue 11): what the operator does when things break, on the real control plane.

Marked ``faults`` (part of ``make test``; ``pytest -m "not faults"`` skips it). Lean on purpose: a handful
of instances per scenario, waits only as long as a proof needs (one 60 s idle window, for drift).

Scenarios and their documented outcomes (README "Failure semantics"):
- operator SIGKILLed at random points of a burst of creates and updates -> converges: one Deployment and
  one Service per instance, no orphan, observedGeneration current, then no write;
- kube-apiserver and etcd restarted -> the operator reconnects by itself and converges;
- ownerReference removed, Service port edited, env and a hostPath volume added -> put back, then no write;
- chip removed from devices.yaml -> its instances Failed (UnknownChip), their running children left alone;
  restored -> Ready again;
- operator restarted with an invalid devices.yaml -> runs on the persisted last good one; never a good one
  -> stays up, reconciles nothing, says why, and starts reconciling once one is valid;
- two replicas, leader SIGKILLed -> the standby takes over (Lease) and reconciles; the standby never wrote;
- a node loses accelerators or goes NotReady -> Degraded naming node and devices, pod rescheduled.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from audit_support import AuditWindow
from chart_support import service_account_token, write_token_kubeconfig
from operator_fixture import OPERATOR_NAMESPACE, SHIPPED_DEVICES, OperatorProcess
from test_operator import apply, condition, events_for, get, restore_shipped_devices, wait_for, wait_ready
from test_operator import instance as _instance

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("operator_log_on_failure")]


def instance(name: str, **kwargs: Any) -> dict[str, Any]:
    """test_operator's builder, with the name first (as these tests were written)."""
    return _instance(name=name, **kwargs)


REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "hack" / "cluster.sh"


def items(cluster: Any, ns: str, kind: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(cluster.kubectl("get", kind, "-n", ns, "-o", "json").stdout)["items"]
    return out


def converged(cluster: Any, ns: str, names: list[str]) -> bool:
    """Every instance Ready at its current generation; exactly one Deployment and Service each, owned by it."""
    mis = {m["metadata"]["name"]: m for m in items(cluster, ns, "modelinstances")}
    if sorted(mis) != sorted(names):
        return False
    for mi in mis.values():
        st = mi.get("status") or {}
        if st.get("phase") != "Ready" or st.get("observedGeneration") != mi["metadata"]["generation"]:
            return False
    for kind in ("deployments", "services"):
        children = items(cluster, ns, kind)
        if sorted(c["metadata"]["name"] for c in children) != sorted(names):
            return False
        for child in children:
            owners = [o for o in child["metadata"].get("ownerReferences") or [] if o.get("controller")]
            mi = mis[child["metadata"]["name"]]
            if [o["uid"] for o in owners] != [mi["metadata"]["uid"]]:
                return False
    return True


def assert_idle(cluster: Any, ns: str, seconds: float, what: str) -> None:
    if not cluster.audit_log:
        return
    window = AuditWindow(cluster.audit_log)
    time.sleep(seconds)
    writes = window.writes(ns)
    print(f"idle check ({what}): {len(writes)} writes in {seconds:.0f}s")
    assert writes == [], f"{what}: writes while nothing changed: {writes}"


def cluster_sh(*args: str, timeout: float = 180) -> None:
    subprocess.run(["bash", str(CLUSTER_SH), *args], check=True, timeout=timeout)


def local_only(cluster: Any) -> None:
    if not cluster.audit_log:
        pytest.skip("needs the local cluster (audit log, component restarts)")


# ------------------------------------------------------------------------------------- operator crashes


def test_operator_sigkilled_during_a_burst_converges_without_orphans(
    cluster: Any, namespace: str, xw_operator: OperatorProcess
) -> None:
    local_only(cluster)
    rng = random.Random(11)
    chips = ["nvidia-t4", "metax-c550", "ascend-910b", "ascend-310p"]
    names = [f"burst-{i}" for i in range(10)]
    kills = 0
    for i, name in enumerate(names):
        apply(cluster, namespace, instance(name, chip=chips[i % len(chips)], count=1))
        if i % 3 == 2:  # kill at a random point while handlers are in flight, start again at once
            time.sleep(rng.uniform(0.0, 1.5))
            xw_operator.kill()
            kills += 1
            xw_operator.start()
    for name in names[:6]:  # updates, with two more kills in between
        cluster.kubectl(
            "patch", "mi", name, "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"engine": {"args": ["--max-model-len=4096"]}}}),
        )  # fmt: skip
        if name in ("burst-1", "burst-4"):
            time.sleep(rng.uniform(0.0, 1.0))
            xw_operator.kill()
            kills += 1
            xw_operator.start()
    print(f"burst: {len(names)} creates, 6 updates, {kills} SIGKILLs")
    wait_for("convergence after the burst", lambda: converged(cluster, namespace, names), timeout=120)
    dep = get(cluster, namespace, "deployment", "burst-0")  # nvidia-t4: engine args are container args
    assert dep is not None
    engine = dep["spec"]["template"]["spec"]["containers"][0]
    assert "--max-model-len=4096" in " ".join([*engine.get("command", []), *engine.get("args", [])])
    time.sleep(2)  # trailing pod/status events
    assert_idle(cluster, namespace, 8, "after the burst")


# ------------------------------------------------------------------------------- control plane restarts


@pytest.mark.parametrize(("component", "down"), [("kube-apiserver", 5), ("etcd", 5)])
def test_control_plane_restart_is_survived(
    cluster: Any, namespace: str, xw_operator: OperatorProcess, component: str, down: int
) -> None:
    local_only(cluster)
    apply(cluster, namespace, instance("before", chip="nvidia-t4", count=1))
    wait_ready(cluster, namespace, "before")
    cluster_sh("restart", component, str(down))
    assert xw_operator.alive, xw_operator.current_log()[-3000:]
    # Reconnected by itself: a new instance and an edit of the old one are both handled.
    apply(cluster, namespace, instance("after", chip="metax-c550", count=1))
    cluster.kubectl("patch", "mi", "before", "-n", namespace, "--type=merge", "-p", '{"spec":{"replicas":2}}')
    wait_for("convergence after the restart", lambda: converged(cluster, namespace, ["before", "after"]), 120)
    assert xw_operator.alive


# ------------------------------------------------------------------------------------------------ drift


def test_foreign_changes_to_children_are_put_back_then_nothing_is_written_for_60s(
    cluster: Any, namespace: str, xw_operator: OperatorProcess
) -> None:
    apply(cluster, namespace, instance("drift", chip="nvidia-t4", count=1))
    wait_ready(cluster, namespace, "drift")
    dep = get(cluster, namespace, "deployment", "drift")
    svc = get(cluster, namespace, "service", "drift")
    assert dep is not None and svc is not None
    want_dep, want_svc = dep["spec"]["template"]["spec"], svc["spec"]["ports"]

    # Fields *added* by others: an env var and a hostPath volume with its mount.
    cluster.kubectl("set", "env", "-n", namespace, "deployment/drift", "INJECTED=1")
    patch = [
        {"op": "add", "path": "/spec/template/spec/volumes/-", "value": {"name": "host", "hostPath": {"path": "/"}}},
        {
            "op": "add",
            "path": "/spec/template/spec/containers/0/volumeMounts/-",
            "value": {"name": "host", "mountPath": "/host"},
        },
    ]
    cluster.kubectl("patch", "-n", namespace, "deployment/drift", "--type=json", "-p", json.dumps(patch))
    # A Service port edited, and the Deployment's ownerReference removed.
    port = [{"op": "replace", "path": "/spec/ports/0/port", "value": 9999}]
    cluster.kubectl("patch", "-n", namespace, "service/drift", "--type=json", "-p", json.dumps(port))
    orphan = [{"op": "remove", "path": "/metadata/ownerReferences"}]
    cluster.kubectl("patch", "-n", namespace, "deployment/drift", "--type=json", "-p", json.dumps(orphan))

    def restored() -> bool:
        d = get(cluster, namespace, "deployment", "drift")
        s = get(cluster, namespace, "service", "drift")
        if d is None or s is None:
            return False
        pod = d["spec"]["template"]["spec"]
        env = [e["name"] for e in pod["containers"][0].get("env") or []]
        owned = any(o.get("controller") for o in d["metadata"].get("ownerReferences") or [])
        return (
            "INJECTED" not in env
            and pod.get("volumes") == want_dep.get("volumes")
            and pod["containers"][0].get("volumeMounts") == want_dep["containers"][0].get("volumeMounts")
            and s["spec"]["ports"] == want_svc
            and owned
        )

    wait_for("every foreign change put back", restored, timeout=60)
    d = json.loads(
        cluster.kubectl("get", "deployment", "drift", "-n", namespace, "-o", "json", "--show-managed-fields").stdout
    )
    managers = sorted({(m["manager"], m.get("subresource", "")) for m in d["metadata"]["managedFields"]})
    assert [m for m in managers if m[0].startswith("kubectl") or m[0] == "before-first-apply"] == [], managers
    assert ("xw-operator", "") in managers
    wait_ready(cluster, namespace, "drift")
    time.sleep(3)  # the rollout the revert caused settles (status only)
    assert_idle(cluster, namespace, 60, "after drift was corrected")


# ------------------------------------------------------------------------------------------ devices.yaml


def test_chip_removed_from_devices_yaml_fails_its_instances_and_restoring_heals_them(
    cluster: Any, namespace: str, xw_operator: OperatorProcess
) -> None:
    apply(cluster, namespace, instance("metax", chip="metax-c550", count=1), instance("t4", chip="nvidia-t4", count=1))
    wait_ready(cluster, namespace, "metax")
    wait_ready(cluster, namespace, "t4")
    t4_rv = get(cluster, namespace, "deployment", "t4")["metadata"]["resourceVersion"]  # type: ignore[index]
    doc = yaml.safe_load(SHIPPED_DEVICES.read_text(encoding="utf-8"))
    doc["vendors"] = [v for v in doc["vendors"] if "metax" not in json.dumps(v).lower()]
    try:
        xw_operator.write_devices(yaml.safe_dump(doc, sort_keys=False))
        mi = wait_for(
            "metax Failed",
            lambda: (
                (m := get(cluster, namespace, "mi", "metax")) and (m.get("status") or {}).get("phase") == "Failed" and m
            ),
        )
        assert condition(mi, "Ready")["reason"] == "UnknownChip"
        # Documented: the running children of the last valid rendering are left alone; others untouched.
        assert get(cluster, namespace, "deployment", "metax") is not None
        assert get(cluster, namespace, "deployment", "t4")["metadata"]["resourceVersion"] == t4_rv  # type: ignore[index]
    finally:
        restore_shipped_devices(xw_operator)
    wait_ready(cluster, namespace, "metax")


def test_restart_with_an_invalid_devices_yaml_runs_on_the_persisted_last_good_one(
    cluster: Any, namespace: str, xw_operator: OperatorProcess
) -> None:
    good_digest = xw_operator.health()["devicesConfig"]["digest"]
    cm = json.loads(
        cluster.kubectl("get", "configmap", "xw-operator-last-good", "-n", OPERATOR_NAMESPACE, "-o", "json").stdout
    )
    assert cm["metadata"]["annotations"]["xw.dev/devices-digest"] == good_digest
    try:
        xw_operator.write_devices(
            SHIPPED_DEVICES.read_text(encoding="utf-8").replace("shm_size_gb: 32", "shm_size_gb: x")
        )
        xw_operator.restart()  # used to exit with code 2 on every start
        health = xw_operator.health()["devicesConfig"]
        assert health["inForce"] == "last-good" and health["digest"] == good_digest, health
        assert "shm_size_gb" in health["lastError"] and health["reconciling"] is True
        apply(cluster, namespace, instance("on-last-good", chip="nvidia-t4", count=1))
        wait_ready(cluster, namespace, "on-last-good")
        reasons = [e["reason"] for e in events_for(cluster, OPERATOR_NAMESPACE, "xw-operator-last-good")]
        assert "InvalidDevicesConfig" in reasons, reasons
    finally:
        restore_shipped_devices(xw_operator)
    assert xw_operator.health()["devicesConfig"]["inForce"] == "source"


@pytest.fixture
def session_operator_paused(xw_operator: OperatorProcess) -> Iterator[OperatorProcess]:
    """Stop the shared operator for a test that runs its own (two would both reconcile); start it after."""
    xw_operator.stop()
    try:
        yield xw_operator
    finally:
        xw_operator.start()


def test_without_any_good_devices_yaml_it_stays_up_reconciles_nothing_then_recovers(
    cluster: Any, namespace: str, session_operator_paused: OperatorProcess, tmp_path: Path
) -> None:
    cm = f"never-good-{namespace[-6:]}"
    op = OperatorProcess(
        cluster,
        tmp_path,
        args=["--namespace", namespace, "--last-good-configmap", f"{namespace}/{cm}", "--no-watch-nodes"],
        devices_text="version: 1\nvendors: [{vendor_name: x}]\n",
    )
    op.start()  # used to exit with code 2
    try:
        health = op.health()["devicesConfig"]
        assert health["inForce"] == "none" and health["reconciling"] is False and "vendor_id" in health["why"]
        apply(cluster, namespace, instance("waiting", chip="nvidia-t4", count=1))
        time.sleep(4)
        mi = get(cluster, namespace, "mi", "waiting")
        assert mi is not None and not mi.get("status"), op.log_text()[-4000:]
        assert get(cluster, namespace, "deployment", "waiting") is None
        assert op.alive
        assert "NoDevicesConfig" in [e["reason"] for e in events_for(cluster, namespace, cm)]
        op.restore_devices()  # the first valid version: every instance is reconciled
        wait_ready(cluster, namespace, "waiting")
        persisted = json.loads(cluster.kubectl("get", "configmap", cm, "-n", namespace, "-o", "json").stdout)
        assert "vendors" in persisted["data"]["devices.yaml"]
    finally:
        op.stop()


# ---------------------------------------------------------------------------------------------------- HA


def _lease(cluster: Any, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(
        cluster.kubectl("get", "lease", name, "-n", OPERATOR_NAMESPACE, "-o", "json").stdout
    )["spec"]
    return out


def _leads(op: OperatorProcess) -> bool:
    """The process says it leads (its /healthz moves from the standby server to kopf's: briefly none)."""
    try:
        return bool(op.health().get("leaderElection", {}).get("leader"))
    except OSError:
        return False


def _micro(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")


def test_two_replicas_one_leads_the_standby_takes_over_after_a_sigkill(
    cluster: Any, namespace: str, session_operator_paused: OperatorProcess, tmp_path: Path
) -> None:
    local_only(cluster)
    lease = f"ha-{namespace[-6:]}"
    ops: dict[str, OperatorProcess] = {}
    users = {}
    for who in ("a", "b"):
        sa = f"op-{who}"
        cluster.kubectl("create", "serviceaccount", sa, "-n", namespace)
        cluster.kubectl(
            "create",
            "clusterrolebinding",
            f"{namespace}-{sa}",
            "--clusterrole=cluster-admin",
            f"--serviceaccount={namespace}:{sa}",
        )
        kubeconfig = write_token_kubeconfig(
            cluster, tmp_path / f"{sa}.kubeconfig", service_account_token(cluster, namespace, sa), namespace
        )
        (tmp_path / who).mkdir()
        ops[who] = OperatorProcess(
            cluster,
            tmp_path / who,
            args=[
                "--namespace",
                namespace,
                "--leader-election-lease",
                f"{OPERATOR_NAMESPACE}/{lease}",
                "--no-watch-nodes",
            ],
            env={"KUBECONFIG": str(kubeconfig)},
        )
        users[who] = f"system:serviceaccount:{namespace}:{sa}"
    window = AuditWindow(cluster.audit_log)
    try:
        ops["a"].start()
        wait_for("a leads", lambda: _leads(ops["a"]))
        ops["b"].start()  # answers /healthz as a standby
        assert ops["b"].health()["leaderElection"]["leader"] is False
        apply(cluster, namespace, instance("ha-1", chip="nvidia-t4", count=1))
        wait_ready(cluster, namespace, "ha-1")
        assert window.writes(namespace, user=users["b"]) == [], "the standby wrote"

        before = _lease(cluster, lease)
        last_renew = _micro(before["renewTime"])
        ops["a"].kill()
        spec = wait_for(
            "b takes over",
            lambda: (s := _lease(cluster, lease)).get("holderIdentity") not in (None, before["holderIdentity"]) and s,
            60,
        )
        takeover = (_micro(spec["acquireTime"]) - last_renew).total_seconds()
        print(f"failover: Lease taken over {takeover:.1f}s after the dead leader's last renewal")
        assert takeover <= 15, f"standby took over {takeover:.1f}s after the leader's last renewal"
        assert spec["leaseTransitions"] >= 1
        wait_for("b's /healthz says it leads", lambda: _leads(ops["b"]), 30)
        apply(cluster, namespace, instance("ha-2", chip="metax-c550", count=1))
        wait_ready(cluster, namespace, "ha-2")
        assert window.writes(namespace, user=users["b"]), "the new leader reconciled nothing"
    finally:
        for op in ops.values():
            op.stop()
        for who in ("a", "b"):
            cluster.kubectl("delete", "clusterrolebinding", f"{namespace}-op-{who}", check=False)


# -------------------------------------------------------------------------------------- accelerator health


@pytest.fixture
def ascend_node(cluster: Any) -> Iterator[str]:
    """kwok-ascend910-1, put back exactly as it was (allocatable, kwok management, Ready) afterwards.
    Any other Ascend 910 node than -0 and -1 is cordoned meanwhile, so pods land where the test says."""
    name = "kwok-ascend910-1"
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    bystanders = [
        n["metadata"]["name"]
        for n in nodes
        if "huawei.com/Ascend910" in (n["status"].get("allocatable") or {})
        and n["metadata"]["name"] not in (name, "kwok-ascend910-0")
    ]
    for other in bystanders:
        cluster.kubectl("cordon", other)
    try:
        yield name
    finally:
        for other in bystanders:
            cluster.kubectl("uncordon", other, check=False)
    node = json.loads(cluster.kubectl("get", "node", name, "-o", "json").stdout)
    capacity = node["status"]["capacity"]
    patch = {"status": {"allocatable": {"huawei.com/Ascend910": capacity["huawei.com/Ascend910"]}}}
    cluster.kubectl("patch", "node", name, "--subresource=status", "--type=merge", "-p", json.dumps(patch))
    cluster.kubectl("annotate", "node", name, "kwok.x-k8s.io/node=fake", "--overwrite")
    cluster.kubectl("uncordon", name)
    wait_for("node Ready again", lambda: _node_ready(cluster, name), 60)


def test_withdrawn_devices_and_not_ready_nodes_show_and_reschedule(
    cluster: Any, namespace: str, xw_operator: OperatorProcess, ascend_node: str
) -> None:
    other = "kwok-ascend910-0"
    # Pin the instance to the node under test, then release the pin so a replacement may go elsewhere.
    cluster.kubectl("cordon", other)
    try:
        apply(cluster, namespace, instance("npu", chip="ascend-910b", count=4))
        wait_ready(cluster, namespace, "npu")
    finally:
        cluster.kubectl("uncordon", other)
    pods = items(cluster, namespace, "pods")
    assert [p["spec"]["nodeName"] for p in pods] == [ascend_node]
    first = pods[0]["metadata"]["name"]

    # The device plugin withdraws 6 of 8 chips: 4 requested, 2 left -> 2 missing.
    cluster.kubectl("cordon", ascend_node)  # the replacement must land on healthy devices elsewhere
    patch = {"status": {"allocatable": {"huawei.com/Ascend910": "2"}}}
    cluster.kubectl("patch", "node", ascend_node, "--subresource=status", "--type=merge", "-p", json.dumps(patch))

    # Status moves on as soon as the pod is replaced, so the proof is the transition Event it posted.
    def event(reason: str) -> dict[str, Any] | None:
        found = [e for e in events_for(cluster, namespace, "npu") if e["reason"] == reason]
        return found[-1] if found else None

    shown = wait_for("DevicesUnavailable naming the node", lambda: event("DevicesUnavailable"), 30)
    assert shown["type"] == "Warning"
    assert ascend_node in shown["message"] and "2 huawei.com/Ascend910 device(s) missing" in shown["message"]
    assert first in shown["message"], shown["message"]
    # ...and the pod is rescheduled onto healthy devices.
    wait_for(
        "replacement pod on the other node",
        lambda: (
            [
                p["spec"].get("nodeName")
                for p in items(cluster, namespace, "pods")
                if not p["metadata"].get("deletionTimestamp")
            ]
            == [other]
        ),
        60,
    )
    wait_ready(cluster, namespace, "npu")
    assert first in wait_for("PodRescheduled event", lambda: event("PodRescheduled"), 10)["message"]

    # The node that now runs it goes NotReady (kwok stops managing it, so its heartbeat cannot undo it).
    cluster.kubectl("annotate", "node", other, "kwok.x-k8s.io/node-")
    try:
        node = json.loads(cluster.kubectl("get", "node", other, "-o", "json").stdout)
        conds = [
            {**c, "status": "False", "reason": "KubeletNotReady", "message": "simulated"} if c["type"] == "Ready" else c
            for c in node["status"]["conditions"]
        ]
        cluster.kubectl(
            "patch",
            "node",
            other,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"conditions": conds}}),
        )
        down = wait_for("NodeNotReady naming the node", lambda: event("NodeNotReady"), 30)
        assert other in down["message"] and "huawei.com/Ascend910 x4" in down["message"], down["message"]
    finally:
        cluster.kubectl("annotate", "node", other, "kwok.x-k8s.io/node=fake", "--overwrite")
    wait_for("node Ready again", lambda: _node_ready(cluster, other), 60)


def _node_ready(cluster: Any, name: str) -> bool:
    node = json.loads(cluster.kubectl("get", "node", name, "-o", "json").stdout)
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions") or [])
