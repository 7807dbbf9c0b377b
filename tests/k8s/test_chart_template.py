"""The Helm chart, rendered and linted (no cluster needed, only the ``helm`` binary the cluster build makes).

These pin the chart's contract: the RBAC rule table (least privilege), the pod's security settings, how
values map to operator flags, that ``values.schema.json`` refuses wrong values with a message naming the
value, and that the chart's copies of ``crds/`` and ``configs/devices.yaml`` never drift from the sources.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from xw_operator.devices import parse_devices_config
from xw_operator.recipes import parse_recipes

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "xw-operator"
RELEASE = "xwop"
NAMESPACE = "xw-system"

# The RBAC the operator needs (see charts/xw-operator/templates/rbac.yaml for why each rule exists).
# tests/k8s/test_helm_install.py proves it is sufficient by running the operator with exactly these rights.
WORKLOAD_RULES = [
    {"apiGroups": ["xw.dev"], "resources": ["modelinstances"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["xw.dev"], "resources": ["modelinstances/status"], "verbs": ["patch"]},
    {"apiGroups": ["xw.dev"], "resources": ["modelinstances/finalizers"], "verbs": ["update"]},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "list", "watch", "create", "patch", "update"],
    },
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch", "create", "patch", "update"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
LWS_RULE = {
    "apiGroups": ["leaderworkerset.x-k8s.io"],
    "resources": ["leaderworkersets"],
    "verbs": ["get", "list", "watch", "create", "patch"],
}
CONFIGMAP_NAME = f"{RELEASE}-xw-operator-devices"
LAST_GOOD_NAME = f"{RELEASE}-xw-operator-last-good"
LEASE_NAME = f"{RELEASE}-xw-operator"
CONFIG_RULES = [
    {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [CONFIGMAP_NAME], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [LAST_GOOD_NAME], "verbs": ["get", "patch"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": [LEASE_NAME],
        "verbs": ["get", "update"],
    },
]
NODE_RULES = [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]


def _find_helm() -> str:
    explicit = os.environ.get("XW_HELM")
    if explicit:
        return explicit
    bin_dir = subprocess.run(
        ["bash", str(REPO / "hack" / "cluster.sh"), "bin-dir"], capture_output=True, text=True, check=True
    ).stdout.strip()
    helm = Path(bin_dir) / "helm"
    if not helm.exists():
        # Builds (or reuses from the cache) the control-plane binaries, helm among them; no cluster starts.
        subprocess.run(["bash", str(REPO / "hack" / "cluster.sh"), "build"], check=True, timeout=3600)
    return str(helm)


@pytest.fixture(scope="session")
def helm() -> str:
    return _find_helm()


@pytest.fixture
def values_file(tmp_path: Path) -> Iterator[Any]:
    def write(values: dict[str, Any]) -> str:
        path = tmp_path / f"values-{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(yaml.safe_dump(values))
        return str(path)

    yield write


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    # HOME-independent: helm caches nothing we rely on, and no repository is contacted.
    env = dict(os.environ, HELM_CACHE_HOME="/tmp/xw-helm-cache", HELM_CONFIG_HOME="/tmp/xw-helm-config")
    return subprocess.run([helm, *args], capture_output=True, text=True, env=env, timeout=120)


def render(helm: str, *extra: str) -> list[dict[str, Any]]:
    proc = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", "1.34.0", *extra)
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def render_error(helm: str, *extra: str) -> str:
    proc = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", "1.34.0", *extra)
    assert proc.returncode != 0, f"helm template accepted {extra}:\n{proc.stdout[:2000]}"
    return proc.stderr


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["operator"]
    return dict(pod["containers"][0])


# ------------------------------------------------------------------------------------------------ lint


@pytest.mark.parametrize(
    "sets",
    [
        [],
        ["--set", "watchNamespaces={team-a,team-b}", "--set", "installCRDs=false", "--set", "logFormat=json"],
    ],
    ids=["defaults", "namespaced"],
)
def test_chart_lints_strictly(helm: str, sets: list[str]) -> None:
    proc = run_helm(helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *sets)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


# ------------------------------------------------------------------------------------------ defaults


def test_default_render_has_every_object_and_nothing_else(helm: str) -> None:
    objects = render(helm)
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    assert kinds == sorted(
        [
            ("ClusterRole", f"{RELEASE}-xw-operator"),
            ("ClusterRoleBinding", f"{RELEASE}-xw-operator"),
            ("ClusterRole", f"{RELEASE}-xw-operator-nodes"),
            ("ClusterRoleBinding", f"{RELEASE}-xw-operator-nodes"),
            ("ConfigMap", CONFIGMAP_NAME),
            ("ConfigMap", LAST_GOOD_NAME),
            ("CustomResourceDefinition", "modelinstances.xw.dev"),
            ("Deployment", f"{RELEASE}-xw-operator"),
            ("Role", f"{RELEASE}-xw-operator-devices-config"),
            ("RoleBinding", f"{RELEASE}-xw-operator-devices-config"),
            ("Service", f"{RELEASE}-xw-operator-metrics"),
            ("ServiceAccount", f"{RELEASE}-xw-operator"),
        ]
    )  # helm template offline: no ValidatingAdmissionPolicy API advertised, so none (see the next test)
    cluster_scoped = (
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    )
    for obj in objects:
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "xw-operator"


def test_deployment_is_one_recreated_replica_with_a_locked_down_pod(helm: str) -> None:
    objects = render(helm)
    dep = one(objects, "Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == f"{RELEASE}-xw-operator"
    assert pod["automountServiceAccountToken"] is True
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(objects)
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    # The only writable path is an emptyDir at /tmp.
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"][0]["name"] == "tmp" and "emptyDir" in pod["volumes"][0]
    assert c["resources"]["requests"] == {"cpu": "50m", "memory": "128Mi"}
    assert c["resources"]["limits"] == {"memory": "512Mi"}
    # Liveness probes the port the operator is told to serve its liveness endpoint on.
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert c["ports"] == [
        {"name": "liveness", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
    ]
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    assert c["image"] == "xw-operator:0.1.0"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert "command" not in c, "the image's ENTRYPOINT (xw operator) must stay in force"


def test_default_operator_args_serve_all_namespaces_from_the_configmap(helm: str) -> None:
    args = container(render(helm))["args"]
    assert args == [
        "--all-namespaces",
        f"--devices-configmap={NAMESPACE}/{CONFIGMAP_NAME}",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--metrics-port=9090",
        f"--leader-election-lease={NAMESPACE}/{LEASE_NAME}",
        f"--last-good-configmap={NAMESPACE}/{LAST_GOOD_NAME}",
    ]


def test_default_rbac_is_a_clusterrole_with_exactly_the_operator_rules(helm: str) -> None:
    objects = render(helm)
    assert one(objects, "ClusterRole", f"{RELEASE}-xw-operator")["rules"] == WORKLOAD_RULES
    assert one(objects, "ClusterRole", f"{RELEASE}-xw-operator-nodes")["rules"] == NODE_RULES
    binding = one(objects, "ClusterRoleBinding", f"{RELEASE}-xw-operator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": f"{RELEASE}-xw-operator",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{RELEASE}-xw-operator", "namespace": NAMESPACE}]
    role = one(objects, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == CONFIG_RULES


def test_rbac_never_grants_secrets_wildcards_pod_writes_or_deletes(helm: str) -> None:
    for sets in ([], ["--set", "watchNamespaces={a,b}"]):
        for role in [o for o in render(helm, *sets) if o["kind"] in ("Role", "ClusterRole")]:
            for rule in role["rules"]:
                assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
                assert "secrets" not in rule["resources"]
                assert "deletecollection" not in rule["verbs"]
                assert "delete" not in rule["verbs"] or rule["resources"] == ["pods"]  # rescheduling only
                if "pods" in rule["resources"]:
                    assert set(rule["verbs"]) <= {"get", "list", "watch", "delete"}
                if "configmaps" in rule["resources"]:
                    assert rule["resourceNames"] in ([CONFIGMAP_NAME], [LAST_GOOD_NAME]) and role["kind"] == "Role"
                if "nodes" in rule["resources"]:
                    assert set(rule["verbs"]) <= {"get", "list", "watch"}


VAP_API = ("--api-versions", "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy")


def test_admission_policy_binds_the_operator_service_account_and_can_be_switched_off(helm: str) -> None:
    assert not by_kind(render(helm), "ValidatingAdmissionPolicy")  # a cluster without the API (< 1.30)
    objects = render(helm, *VAP_API)
    policy = one(objects, "ValidatingAdmissionPolicy")
    user = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-xw-operator"
    assert policy["spec"]["matchConditions"][0]["expression"] == f"request.userInfo.username == '{user}'"
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert {r["resources"][0] for r in policy["spec"]["matchConstraints"]["resourceRules"]} == {
        "deployments",
        "services",
    }
    binding = one(objects, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    assert binding["metadata"]["name"] == f"{NAMESPACE}-{RELEASE}-xw-operator-managed-only"
    off = render(helm, *VAP_API, "--set", "admissionPolicy.enabled=false")
    assert not by_kind(off, "ValidatingAdmissionPolicy") and not by_kind(off, "ValidatingAdmissionPolicyBinding")


def test_configmap_defaults_to_the_shipped_devices_yaml(helm: str) -> None:
    cm = one(render(helm), "ConfigMap", CONFIGMAP_NAME)
    text = cm["data"]["devices.yaml"]
    shipped = (REPO / "configs" / "devices.yaml").read_text()
    assert text.rstrip("\n") == shipped.rstrip("\n")
    assert parse_devices_config(text).chip_keys == parse_devices_config(shipped).chip_keys


def test_configmap_carries_the_model_recipes(helm: str, tmp_path: Path) -> None:
    """models.yaml and runtime_params.yaml (xw-cli's format) sit beside devices.yaml in the ConfigMap."""
    data = one(render(helm), "ConfigMap", CONFIGMAP_NAME)["data"]
    for key in ("models.yaml", "runtime_params.yaml"):
        assert data[key].rstrip("\n") == (REPO / "configs" / key).read_text().rstrip("\n")
    recipes = parse_recipes(data["models.yaml"], data["runtime_params.yaml"])
    assert recipes.model("qwen3-8b") is not None
    older = REPO / "tests" / "fixtures" / "xw-cli" / "0.0.1" / "models.yaml"
    data = one(render(helm, "--set-file", f"modelsConfig={older}"), "ConfigMap", CONFIGMAP_NAME)["data"]
    assert data["models.yaml"].rstrip("\n") == older.read_text().rstrip("\n")


def test_crd_is_the_repository_crd_plus_keep_policy(helm: str) -> None:
    crd = one(render(helm), "CustomResourceDefinition")
    source = yaml.safe_load((REPO / "crds" / "modelinstances.xw.dev.yaml").read_text())
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["spec"] == source["spec"]
    assert crd["metadata"]["name"] == source["metadata"]["name"]
    for key, value in (source["metadata"].get("labels") or {}).items():
        assert crd["metadata"]["labels"][key] == value


# ------------------------------------------------------------------------------------------ drift


def test_chart_copy_of_the_crds_matches_crds_dir() -> None:
    sources = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    copies = sorted(p.name for p in (CHART / "files" / "crds").glob("*.yaml"))
    assert copies == sources, "run: bash hack/sync-chart-files.sh"
    for name in sources:
        assert (CHART / "files" / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), (
            f"charts/xw-operator/files/crds/{name} drifted from crds/{name}; run: bash hack/sync-chart-files.sh"
        )


def test_chart_copy_of_devices_yaml_matches_configs() -> None:
    assert (CHART / "files" / "devices.yaml").read_bytes() == (REPO / "configs" / "devices.yaml").read_bytes(), (
        "charts/xw-operator/files/devices.yaml drifted from configs/devices.yaml; run: bash hack/sync-chart-files.sh"
    )


def test_sync_script_check_mode_agrees() -> None:
    proc = subprocess.run(
        ["bash", str(REPO / "hack" / "sync-chart-files.sh"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------------------------------ non-defaults


def test_watch_namespaces_gives_one_role_per_namespace_and_no_cluster_rights(helm: str) -> None:
    objects = render(helm, "--set", "watchNamespaces={team-a,team-b}")
    # The only cluster-wide right: reading nodes (accelerator health).
    assert [r["rules"] for r in by_kind(objects, "ClusterRole")] == [NODE_RULES]
    assert [b["roleRef"]["name"] for b in by_kind(objects, "ClusterRoleBinding")] == [f"{RELEASE}-xw-operator-nodes"]
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in by_kind(objects, "Role")}
    assert set(roles) == {
        ("team-a", f"{RELEASE}-xw-operator"),
        ("team-b", f"{RELEASE}-xw-operator"),
        (NAMESPACE, f"{RELEASE}-xw-operator-devices-config"),
    }
    assert roles[("team-a", f"{RELEASE}-xw-operator")]["rules"] == WORKLOAD_RULES
    bindings = {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in by_kind(objects, "RoleBinding")}
    assert bindings == {
        ("team-a", f"{RELEASE}-xw-operator"),
        ("team-b", f"{RELEASE}-xw-operator"),
        (NAMESPACE, f"{RELEASE}-xw-operator-devices-config"),
    }
    for b in by_kind(objects, "RoleBinding"):
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": f"{RELEASE}-xw-operator", "namespace": NAMESPACE}]
    args = container(objects)["args"]
    assert "--all-namespaces" not in args
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]


def test_multi_node_adds_exactly_the_leaderworkerset_rule_and_the_flag(helm: str) -> None:
    """Least privilege: no rule on leaderworkersets (and no --multi-node) unless multiNode.enabled."""
    default = render(helm)
    assert "--multi-node" not in container(default)["args"]
    assert all(
        "leaderworkersets" not in r["resources"] for o in default if o["kind"].endswith("Role") for r in o["rules"]
    )
    enabled = render(helm, "--set", "multiNode.enabled=true")
    assert one(enabled, "ClusterRole", f"{RELEASE}-xw-operator")["rules"] == [*WORKLOAD_RULES, LWS_RULE]
    assert container(enabled)["args"][-1] == "--multi-node"
    scoped = render(helm, "--set", "multiNode.enabled=true", "--set", "watchNamespaces={team-a}")
    role = next(r for r in by_kind(scoped, "Role") if r["metadata"]["namespace"] == "team-a")
    assert role["rules"] == [*WORKLOAD_RULES, LWS_RULE]
    assert [r["rules"] for r in by_kind(scoped, "ClusterRole")] == [NODE_RULES]  # reading nodes only
    # the admission policy guards the operator's LeaderWorkerSet writes like its Deployments
    policy = one(render(helm, *VAP_API, "--set", "multiNode.enabled=true"), "ValidatingAdmissionPolicy")
    rules = policy["spec"]["matchConstraints"]["resourceRules"]
    assert {r["resources"][0] for r in rules} == {"deployments", "services", "leaderworkersets"}


def test_install_crds_false_renders_no_crd(helm: str) -> None:
    assert by_kind(render(helm, "--set", "installCRDs=false"), "CustomResourceDefinition") == []


def test_image_scheduling_and_extra_args_values_reach_the_pod(helm: str, values_file: Any) -> None:
    values = {
        "image": {"repository": "registry.example/xw/operator", "tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "nodeSelector": {"kubernetes.io/os": "linux", "node-role": "infra"},
        "tolerations": [{"key": "infra", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}
                    ]
                }
            }
        },
        "extraArgs": ["--verbose"],
        "extraEnv": [{"name": "XW_MAX_WORKERS", "value": "4"}],
        "logFormat": "json",
        "livenessPort": 9090,
        "terminationGracePeriodSeconds": 120,
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        "podAnnotations": {"example.com/team": "ml"},
        "serviceAccount": {"name": "xw-op", "annotations": {"example.com/role": "operator"}},
    }
    objects = render(helm, "-f", values_file(values))
    dep = one(objects, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = container(objects)
    assert c["image"] == "registry.example/xw/operator:1.2.3"
    assert c["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == values["nodeSelector"]
    assert pod["tolerations"] == values["tolerations"]
    assert pod["affinity"] == values["affinity"]
    assert pod["terminationGracePeriodSeconds"] == 120
    assert pod["serviceAccountName"] == "xw-op"
    assert one(objects, "ServiceAccount")["metadata"] == {
        "name": "xw-op",
        "namespace": NAMESPACE,
        "labels": one(objects, "ServiceAccount")["metadata"]["labels"],
        "annotations": {"example.com/role": "operator"},
    }
    assert c["args"][-2:] == ["--json-logs", "--verbose"]
    assert "--liveness=http://0.0.0.0:9090/healthz" in c["args"]
    assert c["ports"][0]["containerPort"] == 9090
    assert {"name": "XW_MAX_WORKERS", "value": "4"} in c["env"]
    assert c["resources"] == values["resources"]
    assert dep["spec"]["template"]["metadata"]["annotations"] == {"example.com/team": "ml"}
    # Selector labels stay the stable pair, whatever else changes.
    assert dep["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "xw-operator",
        "app.kubernetes.io/instance": RELEASE,
    }


def test_devices_config_from_a_file_reaches_the_configmap_verbatim(helm: str, tmp_path: Path) -> None:
    shipped = (REPO / "configs" / "devices.yaml").read_text()
    custom = shipped.replace("config_key: ascend-910b\n", "config_key: ascend-910b-custom\n", 1)
    assert custom != shipped
    path = tmp_path / "devices.yaml"
    path.write_text(custom)
    text = one(render(helm, "--set-file", f"devicesConfig={path}"), "ConfigMap", CONFIGMAP_NAME)["data"]["devices.yaml"]
    assert text.rstrip("\n") == custom.rstrip("\n")
    assert "ascend-910b-custom" in parse_devices_config(text).chip_keys


def test_devices_config_as_a_mapping_is_rendered_to_yaml(helm: str, values_file: Any) -> None:
    mapping = yaml.safe_load((REPO / "configs" / "devices.yaml").read_text())
    mapping["vendors"] = mapping["vendors"][:1]
    text = one(render(helm, "-f", values_file({"devicesConfig": mapping})), "ConfigMap", CONFIGMAP_NAME)["data"][
        "devices.yaml"
    ]
    config = parse_devices_config(text)
    assert config.chip_keys and all(config.find_chip(k) is not None for k in config.chip_keys)
    assert yaml.safe_load(text) == mapping


def test_external_service_account_is_used_without_creating_one(helm: str) -> None:
    objects = render(helm, "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=existing")
    assert by_kind(objects, "ServiceAccount") == []
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "existing"
    for binding in by_kind(objects, "ClusterRoleBinding"):
        assert binding["subjects"][0]["name"] == "existing"


def test_rbac_create_false_renders_no_rbac(helm: str) -> None:
    objects = render(helm, "--set", "rbac.create=false")
    assert not [o for o in objects if o["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")]


# ------------------------------------------------------------------------------------------ monitoring


def test_metrics_service_selects_the_operator_pod_on_its_metrics_port(helm: str) -> None:
    objects = render(helm)
    svc = one(objects, "Service", f"{RELEASE}-xw-operator-metrics")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    assert not by_kind(objects, "ServiceMonitor") and not by_kind(objects, "PodMonitor")


def test_metrics_disabled_turns_the_endpoint_off(helm: str) -> None:
    objects = render(helm, "--set", "metrics.enabled=false")
    assert "--metrics-port=0" in container(objects)["args"]
    assert [p["name"] for p in container(objects)["ports"]] == ["liveness"]
    assert not by_kind(objects, "Service")


def test_service_monitor_pod_monitor_and_dashboard_when_enabled(helm: str) -> None:
    objects = render(
        helm,
        "--set", "metrics.port=9191",
        "--set", "metrics.serviceMonitor.enabled=true",
        "--set", "metrics.serviceMonitor.labels.release=kps",
        "--set", "metrics.enginePodMonitor.enabled=true",
        "--set", "watchNamespaces={team-a}",
        "--set", "grafanaDashboard.enabled=true",
    )  # fmt: skip
    assert "--metrics-port=9191" in container(objects)["args"]
    sm = one(objects, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kps"
    svc = one(objects, "Service", f"{RELEASE}-xw-operator-metrics")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == "metrics" and sm["spec"]["endpoints"][0]["path"] == "/metrics"
    pm = one(objects, "PodMonitor")
    # Every engine pod the operator manages, on the engine container's port name, in the served namespaces.
    assert pm["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/managed-by": "xw-operator"}}
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    dashboard = one(objects, "ConfigMap", f"{RELEASE}-xw-operator-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(dashboard["data"]["xw-operator.json"])
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p["targets"])
    for metric in ("xw_operator_instances", "xw_operator_reconciles_total", "xw_operator_api_writes_total",
                   "xw_operator_reconcile_duration_seconds_bucket", "vllm:num_requests_waiting"):  # fmt: skip
        assert metric in exprs, metric


# ------------------------------------------------------------------------------------------ bad values


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (["--set", "replicas=0"], "replicas"),
        (["--set", "acceleratorHealth.evict=true"], "additional properties 'evict' not allowed"),
        (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
        (["--set", "watchNamespaces=team-a"], "watchNamespaces"),
        (["--set", "watchNamespaces={Team_A}"], "watchNamespaces"),
        (["--set", "logFormat=xml"], "logFormat"),
        (["--set", "livenessPort=80"], "livenessPort"),
        (["--set", "metrics.port=80"], "/metrics/port"),
        (["--set", "metrics.serviceMonitor.interval=soon"], "interval"),
        (["--set", "metrics.enginePodMonitor.path=metrics"], "path"),
        (["--set", "installCRDs=maybe"], "installCRDs"),
        (["--set", "multiNode.enable=true"], "additional properties 'enable' not allowed"),
        (["--set", "resources.requests.memory=lots"], "memory"),
        (["--set", "tolerations[0].operator=Maybe"], "operator"),
        (["--set", "devicesConfig=version: [unclosed"], "values.devicesConfig is not a YAML mapping"),
        (["--set", "devicesConfig=just text"], "values.devicesConfig is not a YAML mapping"),
        (["--set", "devicesConfig.version=1.0"], "values.devicesConfig must be a devices.yaml with 'version' and"),
        (
            ["--set", "serviceAccount.create=false"],
            "serviceAccount.name is required when serviceAccount.create is false",
        ),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, list) else None,
)
def test_wrong_values_fail_with_a_message_naming_the_value(helm: str, sets: list[str], expected: str) -> None:
    err = render_error(helm, *sets)
    assert expected in err, err


# ------------------------------------------------------------------------------------------ HA, health


def test_two_replicas_roll_and_elect_a_leader(helm: str) -> None:
    objects = render(helm, "--set", "replicas=2")
    dep = one(objects, "Deployment")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    assert f"--leader-election-lease={NAMESPACE}/{LEASE_NAME}" in container(objects)["args"]


def test_accelerator_health_can_be_limited_or_turned_off(helm: str) -> None:
    args = container(render(helm, "--set", "acceleratorHealth.reschedulePods=false"))["args"]
    assert "--no-evict-on-device-loss" in args and "--no-watch-nodes" not in args
    objects = render(helm, "--set", "acceleratorHealth.watchNodes=false")
    assert "--no-watch-nodes" in container(objects)["args"]
    assert [r["metadata"]["name"] for r in by_kind(objects, "ClusterRole")] == [f"{RELEASE}-xw-operator"]
