"""The chart installed into a real cluster, and the operator run with exactly the chart's identity.

The operator runs on the host (kwok has no container runtime) but authenticates with a token minted for
the chart's ServiceAccount (TokenRequest, like the kubelet's projected token), with the args the installed
Deployment carries. Any RBAC rule the chart lacks shows up as a 403 in its log or in the API server's audit
log, and fails the test. What the ServiceAccount must not do is checked with ``kubectl auth can-i --as``.

The release watches one fresh namespace, so a parallel test session on the same cluster is not disturbed.
The cluster-wide variant is installed too, and checked for its rights (not run: a cluster-wide operator
would reconcile other sessions' instances).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import (
    CHART,
    REPO,
    OperatorProcess,
    apply_sample,
    audit_denials,
    can_i,
    forbidden_lines,
    free_port,
    get_json,
    helm,
    http_status,
    service_account_token,
    short_id,
    wait_deleted,
    wait_for,
    wait_ready,
    write_token_kubeconfig,
)
from operator_fixture import session_operator_stopped

CRD_NAME = "modelinstances.xw.dev"


@dataclass
class Release:
    name: str
    namespace: str  # where the chart's objects live
    watched: str  # a namespace the operator serves
    watched2: str  # another one: several --namespace flags reach kopf
    home: Path  # helm's config/cache dirs

    @property
    def fullname(self) -> str:
        return f"{self.name}-xw-operator"

    @property
    def configmap(self) -> str:
        return f"{self.fullname}-devices"

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}"


@pytest.fixture(scope="module", autouse=True)
def session_operator_paused(request: pytest.FixtureRequest) -> Iterator[None]:
    """The session's operator watches every namespace with its own devices.yaml; next to this module's
    operators (the chart's ConfigMap, an upgraded image) both would reconcile the same instances and
    revert each other's Deployments. It is paused for this module and started again afterwards."""
    with session_operator_stopped(request):
        yield


@pytest.fixture(scope="module")
def release(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    rid = short_id()
    rel = Release(f"xwop-{rid}", f"xw-system-{rid}", f"t-helm-{rid}", f"t-helm2-{rid}", tmp_path_factory.mktemp("helm"))
    for ns in (rel.watched, rel.watched2):
        cluster.kubectl("create", "namespace", ns)
        cluster.kubectl("label", "namespace", ns, "xw.dev/test=true")
    try:
        # --take-ownership: the CRD is cluster-wide and may already exist (applied by another test session
        # or release); the release adopts it. --wait: the chart's Deployment must become available.
        helm(
            cluster, rel.home,
            "install", rel.name, str(CHART), "--namespace", rel.namespace, "--create-namespace",
            "--set", f"watchNamespaces={{{rel.watched},{rel.watched2}}}", "--set", "installCRDs=true",
            "--take-ownership", "--wait", "--timeout", "180s",
        )  # fmt: skip
        yield rel
    finally:
        helm(cluster, rel.home, "uninstall", rel.name, "--namespace", rel.namespace, "--wait", check=False)
        for ns in (rel.watched, rel.watched2, rel.namespace):
            cluster.kubectl("delete", "modelinstances", "--all", "-n", ns, "--wait=false", check=False)
            cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


@dataclass
class RunningOperator:
    process: OperatorProcess
    liveness_url: str
    args: list[str]


@pytest.fixture(scope="module")
def operator(cluster: Any, release: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningOperator]:
    """``xw operator`` with the installed Deployment's args, authenticated as the chart's ServiceAccount."""
    tmp = tmp_path_factory.mktemp("operator")
    dep = get_json(cluster, "deployment", release.fullname, "-n", release.namespace)
    assert dep is not None
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == release.fullname
    args = list(pod["containers"][0]["args"])
    port = free_port()
    # The pod serves liveness on 0.0.0.0; on the host only loopback, on a free port.
    args = [f"--liveness=http://127.0.0.1:{port}/healthz" if a.startswith("--liveness=") else a for a in args]
    args = [a for a in args if not a.startswith("--metrics-")] + [f"--metrics-port={free_port()}"]
    args.append("--metrics-address=127.0.0.1")
    token = service_account_token(cluster, release.namespace, release.fullname)
    kubeconfig = write_token_kubeconfig(cluster, tmp / "sa.kubeconfig", token, release.namespace)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE_")}
    env.update(KUBECONFIG=str(kubeconfig), XW_CONFIG_POLL_SECONDS="1", POD_NAMESPACE=release.namespace)
    proc = OperatorProcess([sys.executable, "-m", "xw_operator", "operator", *args], env, tmp / "operator.log")
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        try:
            wait_for("operator liveness endpoint", lambda: proc.proc.poll() is not None or http_status(url) == 200, 60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{proc.logs()}") from None
        assert proc.proc.poll() is None, f"operator exited:\n{proc.logs()}"
        yield RunningOperator(proc, url, args)
    finally:
        rc = proc.stop()
        sys.stderr.write(f"\n[helm install test] operator exit code {rc}; log {proc.log_path}\n")


def assert_no_denials(cluster: Any, release: Release, op: RunningOperator) -> None:
    logs = op.process.logs()
    assert not forbidden_lines(logs), "the operator hit a permission the chart does not grant:\n" + "\n".join(
        forbidden_lines(logs)
    )
    denied = audit_denials(cluster.audit_log, release.user)
    assert not denied, f"the API server refused writes of {release.user}: {denied}"


# ---------------------------------------------------------------------------------------------- install


def test_install_creates_every_chart_object(cluster: Any, release: Release) -> None:
    manifest = helm(cluster, release.home, "get", "manifest", release.name, "-n", release.namespace).stdout
    objects = [o for o in yaml.safe_load_all(manifest) if o]
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        [
            "CustomResourceDefinition",
            "ServiceAccount",
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "Service",
        ]  # Service: metrics; 2nd ConfigMap: last good
        + ["Role", "RoleBinding"] * 3  # one per watched namespace, and the release namespace's ConfigMap reader
        + ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]  # the cluster serves the API (1.34)
        + ["ClusterRole", "ClusterRoleBinding"]  # reading nodes (accelerator health)
    )
    for obj in objects:
        ns = obj["metadata"].get("namespace")
        live = get_json(cluster, obj["kind"].lower(), obj["metadata"]["name"], *(["-n", ns] if ns else []))
        assert live is not None, f"{obj['kind']} {obj['metadata']['name']} missing after helm install"
        assert live["metadata"]["annotations"]["meta.helm.sh/release-name"] == release.name
    crd = get_json(cluster, "crd", CRD_NAME)
    assert crd is not None and crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    dep = get_json(cluster, "deployment", release.fullname, "-n", release.namespace)
    assert dep is not None and dep["status"].get("availableReplicas") == 1
    notes = helm(cluster, release.home, "get", "notes", release.name, "-n", release.namespace).stdout
    assert f"kubectl apply -n {release.watched} -f -" in notes and "kind: ModelInstance" in notes


def test_service_account_may_do_what_the_operator_needs(cluster: Any, release: Release) -> None:
    user, ns = release.user, release.watched
    allowed = [
        ("list", "modelinstances.xw.dev", ns),
        ("watch", "modelinstances.xw.dev", ns),
        ("patch", "modelinstances.xw.dev:status", ns),
        ("create", "deployments.apps", ns),
        ("patch", "deployments.apps", ns),
        ("watch", "pods", ns),
        ("create", "services", ns),
        ("patch", "services", ns),
        ("create", "events", ns),
        ("get", f"configmap/{release.configmap}", release.namespace),
        ("create", "events", release.namespace),
        ("update", f"lease/{release.fullname}", release.namespace),
        ("patch", f"configmap/{release.fullname}-last-good", release.namespace),
        ("delete", "pods", ns),
        ("update", "deployments.apps", ns),
        ("watch", "nodes", None),
        ("watch", "modelinstances.xw.dev", release.watched2),
        ("create", "deployments.apps", release.watched2),
    ]
    for verb, resource, namespace in allowed:
        assert can_i(cluster, user, verb, resource, namespace), f"{user} cannot {verb} {resource} in {namespace}"


def test_service_account_may_not_do_anything_else(cluster: Any, release: Release) -> None:
    user, ns = release.user, release.watched
    denied = [
        ("get", "secrets", ns),
        ("list", "secrets", None),
        ("get", "secrets", release.namespace),
        ("create", "pods", ns),
        ("delete", "pods", "default"),
        ("update", "lease/other", release.namespace),
        ("patch", "configmap/other", release.namespace),
        ("create", "pods:exec", ns),
        ("update", "modelinstances.xw.dev:status", ns),  # merge patch only
        ("delete", "deployments.apps", ns),
        ("delete", "modelinstances.xw.dev", ns),
        ("update", "modelinstances.xw.dev", ns),
        ("list", "modelinstances.xw.dev", None),  # namespaced release: nothing cluster-wide
        ("list", "modelinstances.xw.dev", "default"),
        ("patch", "deployments.apps", "default"),
        ("list", "configmaps", release.namespace),  # only its own ConfigMap, by name
        ("get", "configmap/kube-root-ca.crt", release.namespace),
        ("get", "configmaps", ns),
        ("create", "customresourcedefinitions.apiextensions.k8s.io", None),
        ("patch", "nodes", None),
        ("create", "rolebindings.rbac.authorization.k8s.io", ns),
        ("create", "serviceaccounts:token", release.namespace),
    ]
    for verb, resource, namespace in denied:
        assert not can_i(cluster, user, verb, resource, namespace), f"{user} can {verb} {resource} in {namespace}"


# --------------------------------------------------------------------------------------- the operator


def test_operator_with_chart_identity_reconciles_create_ready_delete(
    cluster: Any, release: Release, operator: RunningOperator
) -> None:
    ns, name = release.watched, "qwen3-8b"
    apply_sample(cluster, ns, name)
    wait_ready(cluster, ns, name, operator.process.logs)
    dep = get_json(cluster, "deployment", name, "-n", ns)
    assert dep is not None
    assert dep["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "xw-operator"
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "ModelInstance"
    assert get_json(cluster, "service", name, "-n", ns) is not None
    assert http_status(operator.liveness_url) == 200
    wait_deleted(cluster, ns, name)
    assert operator.process.proc.poll() is None, operator.process.logs()
    assert_no_denials(cluster, release, operator)


def test_admission_policy_confines_the_service_account_to_its_own_objects(cluster: Any, release: Release) -> None:
    """The chart's ValidatingAdmissionPolicy, in the real API server: as the operator's ServiceAccount
    (impersonated), a write to anything but an xw-operator-labelled, ModelInstance-controlled object is
    denied even where RBAC allows it. Server-side dry runs: admission runs, nothing is stored."""
    user, ns = release.user, release.watched
    label = {"app.kubernetes.io/managed-by": "xw-operator"}
    owner = [
        {"apiVersion": "xw.dev/v1alpha1", "kind": "ModelInstance", "name": "x", "uid": "0" * 8, "controller": True}
    ]

    def service(name: str, labels: dict[str, str], owners: list[dict[str, Any]]) -> str:
        meta = {"name": name, "namespace": ns, "labels": labels, "ownerReferences": owners}
        return json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {"ports": [{"port": 80}]}})

    def as_operator(*args: str, doc: str | None = None) -> Any:
        return cluster.kubectl(*args, "-n", ns, "--as", user, "--dry-run=server", input=doc, check=False)

    allowed = as_operator("create", "-f", "-", doc=service("ours", label, owner))
    assert allowed.returncode == 0, allowed.stderr
    unlabelled = as_operator("create", "-f", "-", doc=service("plain", {}, owner))
    assert unlabelled.returncode != 0 and "labelled app.kubernetes.io/managed-by: xw-operator" in unlabelled.stderr
    unowned = as_operator("create", "-f", "-", doc=service("loose", label, []))
    assert unowned.returncode != 0 and "controlled by a ModelInstance" in unowned.stderr
    # Someone else's Service: adding our label to take it over is denied, and so is deleting it.
    cluster.kubectl("create", "-f", "-", input=service("foreign", {"app": "payments"}, []))
    relabel = as_operator("label", "service", "foreign", "app.kubernetes.io/managed-by=xw-operator")
    assert relabel.returncode != 0 and "ValidatingAdmissionPolicy" in relabel.stderr, relabel.stderr
    cluster.kubectl("delete", "service", "foreign", "-n", ns)


def _container_image(cluster: Any, ns: str, name: str) -> str | None:
    dep = get_json(cluster, "deployment", name, "-n", ns)
    return None if dep is None else str(dep["spec"]["template"]["spec"]["containers"][0]["image"])


def test_helm_upgrade_of_devices_config_reaches_the_running_operator(
    cluster: Any, release: Release, operator: RunningOperator, tmp_path: Path
) -> None:
    ns, name = release.watched2, "qwen-upgrade"
    apply_sample(cluster, ns, name)
    wait_ready(cluster, ns, name, operator.process.logs)
    old_image = _container_image(cluster, ns, name)
    assert old_image == "quay.io/ascend/vllm-ascend:v0.11.0rc0"
    chart_dep = get_json(cluster, "deployment", release.fullname, "-n", release.namespace)
    assert chart_dep is not None

    new_image = "quay.io/ascend/vllm-ascend:v0.11.0rc1-upgrade-test"
    shipped = (REPO / "configs" / "devices.yaml").read_text()
    assert old_image in shipped
    devices = tmp_path / "devices.yaml"
    devices.write_text(shipped.replace(old_image, new_image))
    helm(
        cluster, release.home,
        "upgrade", release.name, str(CHART), "-n", release.namespace, "--reuse-values",
        "--set-file", f"devicesConfig={devices}", "--wait", "--timeout", "120s",
    )  # fmt: skip

    cm = get_json(cluster, "configmap", release.configmap, "-n", release.namespace)
    assert cm is not None and new_image in cm["data"]["devices.yaml"]
    wait_for(
        "the running operator to re-render the instance with the new image",
        lambda: _container_image(cluster, ns, name) == new_image,
        90,
    )
    assert "devices config reloaded" in operator.process.logs()
    # Picked up live: the operator's own Deployment was not rolled (no restart needed).
    after = get_json(cluster, "deployment", release.fullname, "-n", release.namespace)
    assert after is not None and after["metadata"]["generation"] == chart_dep["metadata"]["generation"]
    wait_ready(cluster, ns, name, operator.process.logs)

    # A broken devicesConfig never reaches the cluster: the chart refuses it, the ConfigMap keeps its text.
    bad = helm(
        cluster, release.home,
        "upgrade", release.name, str(CHART), "-n", release.namespace, "--reuse-values",
        "--set", "devicesConfig=vendors: [unclosed",
        check=False,
    )  # fmt: skip
    assert bad.returncode != 0 and "values.devicesConfig is not a YAML mapping" in bad.stderr, bad.stderr
    cm_after = get_json(cluster, "configmap", release.configmap, "-n", release.namespace)
    assert cm_after is not None and cm_after["data"] == cm["data"]

    wait_deleted(cluster, ns, name)
    assert_no_denials(cluster, release, operator)


def test_uninstall_keeps_the_crd_and_users_instances(cluster: Any, release: Release, operator: RunningOperator) -> None:
    ns, name = release.watched, "survivor"
    apply_sample(cluster, ns, name)
    wait_ready(cluster, ns, name, operator.process.logs)
    assert_no_denials(cluster, release, operator)
    helm(cluster, release.home, "uninstall", release.name, "-n", release.namespace, "--wait")
    assert get_json(cluster, "crd", CRD_NAME) is not None, "helm uninstall deleted the CRD (and every instance)"
    assert get_json(cluster, "modelinstance", name, "-n", ns) is not None
    assert get_json(cluster, "serviceaccount", release.fullname, "-n", release.namespace) is None
    assert get_json(cluster, "role", release.fullname, "-n", ns) is None


# ------------------------------------------------------------------------------------ cluster-wide RBAC


def test_clusterwide_release_grants_workload_rights_everywhere_but_no_secrets(
    cluster: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    rid = short_id()
    name, namespace = f"xwcw-{rid}", f"xw-cw-{rid}"
    # installCRDs=false: the CRD belongs to whichever release/kubectl apply made it; this one must not fight.
    helm(
        cluster, tmp_path,
        "install", name, str(CHART), "-n", namespace, "--create-namespace", "--set", "installCRDs=false",
    )  # fmt: skip

    def cleanup() -> None:
        helm(cluster, tmp_path, "uninstall", name, "-n", namespace, "--wait", check=False)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False)

    request.addfinalizer(cleanup)
    user = f"system:serviceaccount:{namespace}:{name}-xw-operator"
    role = get_json(cluster, "clusterrole", f"{name}-xw-operator")
    assert role is not None, "cluster-wide release without a ClusterRole"
    dep = get_json(cluster, "deployment", f"{name}-xw-operator", "-n", namespace)
    assert dep is not None and "--all-namespaces" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    for verb, resource, ns in [
        ("list", "modelinstances.xw.dev", None),
        ("watch", "deployments.apps", None),
        ("patch", "services", "default"),
        ("get", f"configmap/{name}-xw-operator-devices", namespace),
    ]:
        assert can_i(cluster, user, verb, resource, ns), f"{user} cannot {verb} {resource} in {ns or 'all'}"
    for verb, resource, ns in [
        ("list", "secrets", None),
        ("get", "secrets", "kube-system"),
        ("create", "pods", "default"),
        ("get", "configmaps", "kube-system"),
        ("delete", "services", "default"),
        ("list", "namespaces", None),
    ]:
        assert not can_i(cluster, user, verb, resource, ns), f"{user} can {verb} {resource} in {ns or 'all'}"
    assert json.dumps(role["rules"]).count("secrets") == 0


def test_multi_node_release_serves_a_group_with_exactly_the_charts_rights(
    cluster: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """multiNode.enabled: the operator (the chart's args, its ServiceAccount's token) applies and watches a
    LeaderWorkerSet without a single 403; without the value the same ServiceAccount has no such right."""
    if get_json(cluster, "crd", "leaderworkersets.leaderworkerset.x-k8s.io") is None:
        pytest.skip("the cluster has no LeaderWorkerSet CRD (hack/cluster.sh up installs it)")
    rid = short_id()
    name, namespace, watched = f"xwmn-{rid}", f"xw-mn-{rid}", f"t-helm-mn-{rid}"
    cluster.kubectl("create", "namespace", watched)

    def cleanup() -> None:
        helm(cluster, tmp_path, "uninstall", name, "-n", namespace, "--wait", check=False)
        for ns in (watched, namespace):
            cluster.kubectl("delete", "modelinstances", "--all", "-n", ns, "--wait=false", check=False)
            cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)

    request.addfinalizer(cleanup)
    if get_json(cluster, "crd", CRD_NAME) is None:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds" / f"{CRD_NAME}.yaml"))
    helm(
        cluster, tmp_path,
        "install", name, str(CHART), "-n", namespace, "--create-namespace", "--set", "installCRDs=false",
        "--set", f"watchNamespaces={{{watched}}}", "--set", "multiNode.enabled=true", "--wait", "--timeout", "180s",
    )  # fmt: skip
    fullname = f"{name}-xw-operator"
    user = f"system:serviceaccount:{namespace}:{fullname}"
    assert can_i(cluster, user, "patch", "leaderworkersets.leaderworkerset.x-k8s.io", watched)
    assert not can_i(cluster, user, "delete", "leaderworkersets.leaderworkerset.x-k8s.io", watched)
    assert not can_i(cluster, user, "list", "leaderworkersets.leaderworkerset.x-k8s.io", "default")

    dep = get_json(cluster, "deployment", fullname, "-n", namespace)
    assert dep is not None
    args = list(dep["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "--multi-node" in args
    port = free_port()
    args = [f"--liveness=http://127.0.0.1:{port}/healthz" if a.startswith("--liveness=") else a for a in args]
    token = service_account_token(cluster, namespace, fullname)
    kubeconfig = write_token_kubeconfig(cluster, tmp_path / "sa.kubeconfig", token, namespace)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE_")}
    env.update(KUBECONFIG=str(kubeconfig), XW_CONFIG_POLL_SECONDS="1", POD_NAMESPACE=namespace)
    proc = OperatorProcess([sys.executable, "-m", "xw_operator", "operator", *args], env, tmp_path / "operator.log")
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        wait_for("operator liveness endpoint", lambda: proc.proc.poll() is not None or http_status(url) == 200, 60)
        assert proc.proc.poll() is None, f"operator exited:\n{proc.logs()}"
        sample = REPO / "configs" / "samples" / "multi-node" / "deepseek-r1-ascend.yaml"
        cluster.kubectl("apply", "-n", watched, "-f", str(sample))
        wait_ready(cluster, watched, "deepseek-r1", proc.logs)
        assert get_json(cluster, "leaderworkerset", "deepseek-r1-lws", "-n", watched) is not None
        wait_deleted(cluster, watched, "deepseek-r1")
        assert not forbidden_lines(proc.logs()), proc.logs()
        assert not audit_denials(cluster.audit_log, user)
    finally:
        proc.stop()
