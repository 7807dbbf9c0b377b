"""Day-2 operations against the real control plane: the scale subresource (kubectl scale, an HPA run by
the real kube-controller-manager), the operator's /metrics, GitOps health of real statuses (Argo CD's
health.lua in gopher-lua, Flux's kstatus), and ``kubectl diff --server-side`` of the samples.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_fixture import OperatorProcess
from test_operator import SAMPLES, apply, get, instance, wait_for, wait_ready

pytestmark = pytest.mark.usefixtures("operator_log_on_failure")

REPO = Path(__file__).resolve().parents[2]
HEALTH_LUA = REPO / "charts" / "xw-operator" / "argocd" / "health.lua"
DASHBOARD = REPO / "charts" / "xw-operator" / "dashboards" / "xw-operator.json"
GITOPS_HEALTH = REPO / "hack" / "gitops-health.sh"
HPA_EXAMPLE = REPO / "configs" / "examples" / "hpa-queue-length.yaml"


def deployment_replicas(cluster: Any, ns: str, name: str) -> int | None:
    dep = get(cluster, ns, "deployment", name)
    return None if dep is None else int(dep["spec"]["replicas"])


# ------------------------------------------------------------------------------------------ scale


def test_kubectl_scale_moves_the_deployment(cluster: Any, namespace: str, xw_operator: OperatorProcess) -> None:
    apply(cluster, namespace, instance(name="scaled", chip="nvidia-t4", count=1))
    wait_ready(cluster, namespace, "scaled")
    scale = json.loads(
        cluster.kubectl(
            "get", "--raw", f"/apis/xw.dev/v1alpha1/namespaces/{namespace}/modelinstances/scaled/scale"
        ).stdout
    )
    assert scale["kind"] == "Scale"
    assert (scale["spec"]["replicas"], scale["status"]["replicas"]) == (1, 1)
    assert scale["status"]["selector"] == "xw.dev/model-instance=scaled"

    cluster.kubectl("scale", "-n", namespace, "mi/scaled", "--replicas=3")
    wait_for("the Deployment to follow kubectl scale", lambda: deployment_replicas(cluster, namespace, "scaled") == 3)
    mi = wait_ready(cluster, namespace, "scaled")
    assert (mi["status"]["replicas"], mi["status"]["readyReplicas"]) == (3, 3)

    cluster.kubectl("scale", "-n", namespace, "mi/scaled", "--replicas=0")
    wait_for("the Deployment to scale to zero", lambda: deployment_replicas(cluster, namespace, "scaled") == 0)
    mi = wait_ready(cluster, namespace, "scaled")
    ready = next(c for c in mi["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ScaledToZero"


def test_an_hpa_targeting_a_model_instance_moves_its_deployment(
    cluster: Any, namespace: str, xw_operator: OperatorProcess
) -> None:
    """kube-controller-manager's HPA controller enforces minReplicas through /scale before it needs any
    metric (this cluster has no custom metrics API: the HPA reports it cannot compute the metric, and still
    moves the target into [min, max])."""
    apply(cluster, namespace, instance(name="auto", chip="nvidia-t4", count=1))
    wait_ready(cluster, namespace, "auto")
    # The shipped example (custom metric vllm_num_requests_waiting), pointed at this instance.
    hpa = yaml.safe_load(HPA_EXAMPLE.read_text(encoding="utf-8"))
    hpa["metadata"]["name"] = hpa["spec"]["scaleTargetRef"]["name"] = "auto"
    hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"] = 2, 3
    apply(cluster, namespace, hpa)
    # The HPA controller syncs every 15 s.
    wait_for("the HPA to scale the ModelInstance to minReplicas", lambda: mi_replicas(cluster, namespace) == 2, 90)
    wait_for("the Deployment to follow", lambda: deployment_replicas(cluster, namespace, "auto") == 2)
    wait_ready(cluster, namespace, "auto")
    status = (get(cluster, namespace, "hpa", "auto") or {}).get("status", {})
    assert status.get("desiredReplicas") == 2, status


def mi_replicas(cluster: Any, ns: str) -> int | None:
    mi = get(cluster, ns, "mi", "auto")
    return None if mi is None else int(mi["spec"]["replicas"])


# ------------------------------------------------------------------------------------------ metrics


def test_metrics_move_as_instances_are_created_fail_and_recover(
    cluster: Any, namespace: str, xw_operator: OperatorProcess
) -> None:
    def value(metrics: dict[str, float], key: str) -> float:
        return metrics.get(key, 0.0)

    applied = 'xw_operator_reconciles_total{kind="spec",result="applied"}'
    invalid = 'xw_operator_reconciles_total{kind="spec",result="invalid"}'
    dep_writes = 'xw_operator_api_writes_total{kind="Deployment",verb="patch"}'
    status_writes = 'xw_operator_api_writes_total{kind="ModelInstance/status",verb="patch"}'
    failed = 'xw_operator_instances{phase="Failed"}'
    before = xw_operator.metrics()

    apply(
        cluster, namespace, instance(name="counted", chip="nvidia-t4", count=1), instance(name="broken", chip="tpu-v9")
    )
    wait_ready(cluster, namespace, "counted")
    wait_for(
        "broken to fail",
        lambda: ((get(cluster, namespace, "mi", "broken") or {}).get("status") or {}).get("phase") == "Failed",
    )
    after = wait_for(
        "the phase gauge to count the Failed instance",
        lambda: (m := xw_operator.metrics()) and value(m, failed) >= value(before, failed) + 1 and m,
    )
    assert value(after, applied) >= value(before, applied) + 1
    assert value(after, invalid) >= value(before, invalid) + 1
    assert value(after, dep_writes) >= value(before, dep_writes) + 1
    assert value(after, status_writes) >= value(before, status_writes) + 2
    assert after['xw_operator_instances{phase="Ready"}'] >= 1
    assert value(after, 'xw_operator_reconcile_duration_seconds_count{kind="spec",result="applied"}') >= 1
    assert after["process_resident_memory_bytes"] > 0

    # Recovery: the spec is fixed; the Failed count goes back down.
    cluster.kubectl(
        "patch",
        "-n",
        namespace,
        "mi/broken",
        "--type=merge",
        "-p",
        '{"spec":{"devices":{"chip":"nvidia-t4","count":1}}}',
    )
    wait_ready(cluster, namespace, "broken")
    recovered = wait_for(
        "the phase gauge to drop the recovered instance",
        lambda: (m := xw_operator.metrics()) and value(m, failed) == value(after, failed) - 1 and m,
    )
    assert value(recovered, applied) >= value(after, applied) + 1

    # devices.yaml: a refused version, then an accepted one.
    original = xw_operator.devices_path.read_text(encoding="utf-8")
    rejections = "xw_operator_devices_config_rejections_total"
    reloads = "xw_operator_devices_config_reloads_total"
    try:
        xw_operator.write_devices("version: [not valid\n")
        refused = wait_for(
            "a counted rejection",
            lambda: (m := xw_operator.metrics()) and value(m, rejections) == value(recovered, rejections) + 1 and m,
        )
        assert refused["xw_operator_devices_config_valid"] == 0
        xw_operator.write_devices(original + "\n# a comment: a new version, no chip changed\n")
        accepted = wait_for(
            "a counted reload",
            lambda: (m := xw_operator.metrics()) and value(m, reloads) == value(recovered, reloads) + 1 and m,
        )
        assert accepted["xw_operator_devices_config_valid"] == 1
    finally:
        xw_operator.restore_devices()

    # Every operator metric the shipped Grafana dashboard queries exists.
    names = {re.sub(r"\{.*", "", key) for key in accepted}
    queried = set(re.findall(r"xw_operator_[a-z_]+", DASHBOARD.read_text(encoding="utf-8")))
    assert queried and queried <= names, f"dashboard queries unknown metrics: {sorted(queried - names)}"


# ------------------------------------------------------------------------------------------ GitOps


class Recorder:
    """Every version of the namespace's ModelInstances the API server serves, from a real watch."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        cmd = [cluster.kubectl_path, "--kubeconfig", cluster.kubeconfig, "get", "mi", "-n", namespace]
        cmd += ["--watch", "--output-watch-events", "-o", "json"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.objects: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        decoder, buffer = json.JSONDecoder(), ""
        for line in self.proc.stdout:
            buffer += line
            try:
                event, end = decoder.raw_decode(buffer.lstrip())
            except json.JSONDecodeError:
                continue
            buffer = buffer.lstrip()[end:]
            self.objects.append(event["object"])

    def stop(self) -> list[dict[str, Any]]:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.thread.join(timeout=10)
        return self.objects


def state_of(mi: dict[str, Any]) -> str:
    """A name for what a recorded object shows (the cases Argo CD and Flux must tell apart)."""
    status = mi.get("status") or {}
    generation = mi["metadata"].get("generation")
    if not status.get("phase"):
        return "no-status"
    if status.get("observedGeneration") != generation:
        return "generation-lag"
    ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
    if status["phase"] == "Ready" and ready.get("reason") == "ScaledToZero":
        return "scaled-to-zero"
    return f"{mi['metadata']['name']}:{status['phase']}"


EXPECTED = {
    # state: (Argo CD health.lua, kstatus)
    "ready:Ready": ("Healthy", "Current"),
    "ready:Progressing": ("Progressing", "InProgress"),
    "generation-lag": ("Progressing", "InProgress"),
    "unschedulable:Degraded": ("Degraded", "Failed"),
    "unknown-chip:Failed": ("Degraded", "Failed"),
    "scaled-to-zero": ("Healthy", "Current"),
    # Only recorded when the watch lists the instance before the operator's first status write (usually
    # well under a second). kstatus calls an object without status or conditions Current: a documented
    # limitation of kstatus for any custom resource (docs/gitops.md).
    "no-status": ("Progressing", "Current"),
}
REQUIRED = set(EXPECTED) - {"no-status"}


def gitops_health(*args: str, objects: list[dict[str, Any]]) -> list[str]:
    proc = subprocess.run(
        ["bash", str(GITOPS_HEALTH), *args], input=json.dumps(objects), capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stderr
    return [a["status"] for a in json.loads(proc.stdout)]


def test_gitops_health_of_real_statuses(cluster: Any, namespace: str, xw_operator: OperatorProcess) -> None:
    """Record what the running operator really writes (a watch on the namespace), then judge every recorded
    object with Argo CD's health.lua in gopher-lua and with Flux's kstatus."""
    recorder = Recorder(cluster, namespace)
    try:
        apply(
            cluster,
            namespace,
            instance(name="ready", chip="nvidia-t4", count=1),
            # One metax node with 8 chips: the second replica of 8 chips can never be scheduled.
            instance(name="unschedulable", chip="metax-c550", count=8, replicas=2),
            instance(name="unknown-chip", chip="tpu-v9"),
            instance(name="zero", chip="nvidia-t4", count=1, replicas=0),
        )
        wait_ready(cluster, namespace, "ready")
        wait_ready(cluster, namespace, "zero")
        # A new generation: recorded first with the old status (observedGeneration behind), then rolling out.
        patch = '{"spec":{"engine":{"args":["--max-model-len=4096"]}}}'
        cluster.kubectl("patch", "-n", namespace, "mi/ready", "--type=merge", "-p", patch)

        def seen() -> set[str]:
            return {state_of(o) for o in recorder.objects}

        wait_for(f"every state to be recorded (have {sorted(seen())})", lambda: seen() >= REQUIRED, 90)
        wait_ready(cluster, namespace, "ready")
    finally:
        objects = recorder.stop()
    judged = [o for o in objects if state_of(o) in EXPECTED]
    states = [state_of(o) for o in judged]
    argocd = gitops_health("argocd-lua", str(HEALTH_LUA), objects=judged)
    kstatus = gitops_health("kstatus", objects=judged)
    got = sorted({(s, a, k) for s, a, k in zip(states, argocd, kstatus, strict=True)})
    want = sorted({(s, *EXPECTED[s]) for s in states})
    assert got == want
    print("\n".join(f"{s:>24}  argocd={a:<12} kstatus={k}" for s, a, k in got))


# ------------------------------------------------------------------------------------------ GitOps drift


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("*.yaml")))
def test_server_side_diff_of_a_reconciled_sample_is_empty(
    cluster: Any, namespace: str, xw_operator: OperatorProcess, sample: str
) -> None:
    """Nothing the operator (status, kopf's annotations) or the API server (defaults) writes makes a GitOps
    tool's server-side diff report drift."""
    path = SAMPLES / sample
    cluster.kubectl("apply", "--server-side", "--field-manager=gitops", "-n", namespace, "-f", str(path))
    name = yaml.safe_load(path.read_text(encoding="utf-8"))["metadata"]["name"]
    wait_ready(cluster, namespace, name)
    diff = cluster.kubectl(
        "diff", "--server-side", "--field-manager=gitops", "-n", namespace, "-f", str(path), check=False
    )
    assert (diff.returncode, diff.stdout) == (0, ""), diff.stdout + diff.stderr
