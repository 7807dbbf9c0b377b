"""render_kubernetes(): the meaningful fields of the Deployment and Service, per chip mode and model source."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import pytest
import yaml

import builders
from xw_operator.affinity import Affinity
from xw_operator.devices import DevicesConfig, load_devices_config
from xw_operator.errors import ResolveError
from xw_operator.instance import ModelInstance
from xw_operator.labels import CHIP_KEY, INSTANCE_KEY, MANAGED_BY_KEY, MODEL_INSTANCE_KEY, NAME_KEY, selector_labels
from xw_operator.plan import ModelSource, resolve
from xw_operator.render_kubernetes import ENGINE_CONTAINER, endpoint, render_kubernetes

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
UID = "0b0e6f4e-5f7a-4a43-9d43-1b6f6c1f2f00"


# This suite's habitual instance: namespaced, with a uid (owner references) and a served model name.
instance = functools.partial(builders.instance, namespace="llm", uid=UID, model_name="org/model")


def render(inst: ModelInstance, config: DevicesConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    objects = render_kubernetes(inst, resolve(inst, config).bind())
    assert [o["kind"] for o in objects] == ["Deployment", "Service"]
    return objects[0], objects[1]


def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return dict(deployment["spec"]["template"]["spec"])


def engine(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = pod(deployment)["containers"]
    assert [c["name"] for c in containers] == [ENGINE_CONTAINER]
    return dict(containers[0])


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    entries = engine(deployment).get("env", [])
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"duplicate env names: {names}"
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in entries}


def volumes_by_mount(deployment: dict[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """mountPath -> (volume, mount)."""
    volumes = {v["name"]: v for v in pod(deployment)["volumes"]}
    assert len(volumes) == len(pod(deployment)["volumes"]), "duplicate volume names"
    return {m["mountPath"]: (volumes[m["name"]], m) for m in engine(deployment)["volumeMounts"]}


@pytest.fixture(scope="module")
def host_device_config() -> DevicesConfig:
    return load_devices_config(GOLDEN / "host-device-devices.yaml")


def shipped_with(changes: dict[str, Any]) -> DevicesConfig:
    """The shipped devices.yaml with ``kubernetes`` blocks replaced per config_key."""
    data = builders.devices_doc()
    for key, kubernetes in changes.items():
        builders.chip_doc(data, key)["kubernetes"] = kubernetes
    data["policy"]["model_host_path_prefixes"] = ["/data"]  # the instances' hostPath model source
    return builders.devices_config(data)


# --- device-plugin mode -----------------------------------------------------------------------------


def test_ascend_910b_x4_requests_the_plugin_resource_and_mounts_no_device_node(shipped_config: DevicesConfig) -> None:
    dep, _ = render(instance("ascend-910b", 4), shipped_config)
    container = engine(dep)
    assert container["resources"] == {"limits": {"huawei.com/Ascend910": 4}}
    mounts = volumes_by_mount(dep)
    assert not [p for p in mounts if p.startswith("/dev/") and p != "/dev/shm"], "plugin injects device nodes"
    assert not [v for v in pod(dep)["volumes"] if "davinci" in str(v)]
    assert container["image"] == "quay.io/ascend/vllm-ascend:v0.11.0rc0"
    assert container["command"] == ["vllm", "serve", "/mnt/model"]
    assert container["args"][container["args"].index("--tensor-parallel-size") + 1] == "4"
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]


def test_ascend_plugin_mode_drops_visibility_variables_but_keeps_static_env(shipped_config: DevicesConfig) -> None:
    env = env_of(render(instance("ascend-910b", 4), shipped_config)[0])
    # The seed's static ASCEND_VISIBLE_DEVICES=0..7 would expose every chip on the node.
    assert "ASCEND_VISIBLE_DEVICES" not in env
    assert "ASCEND_RT_VISIBLE_DEVICES" not in env
    assert env["ASCEND_SLOG_PRINT_TO_STDOUT"] == "1"
    assert env["ASCEND_GLOBAL_LOG_LEVEL"] == "3"


def test_ascend_plugin_mode_is_unprivileged_but_keeps_sandbox_capabilities(shipped_config: DevicesConfig) -> None:
    security = engine(render(instance("ascend-910b", 4), shipped_config)[0])["securityContext"]
    assert security["privileged"] is False  # the sandbox says privileged, the plugin mode overrides it
    assert security["capabilities"] == {"add": ["SYS_ADMIN", "SYS_RAWIO", "IPC_LOCK", "SYS_RESOURCE"], "drop": ["ALL"]}
    assert security["allowPrivilegeEscalation"] is False
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}


def test_plugin_mode_privileged_only_when_the_profile_opts_in() -> None:
    config = shipped_with(
        {"ascend-910b": {"resource_name": "huawei.com/Ascend910", "privileged": True, "plugin_env": []}}
    )
    security = engine(render(instance("ascend-910b", 2), config)[0])["securityContext"]
    assert security["privileged"] is True


def test_driver_mounts_are_read_only_except_cache_directories(shipped_config: DevicesConfig) -> None:
    mounts = volumes_by_mount(render(instance("ascend-910b", 4), shipped_config)[0])
    volume, mount = mounts["/usr/local/Ascend/driver/lib64/"]
    assert volume["hostPath"] == {"path": "/usr/local/Ascend/driver/lib64/", "type": ""}
    assert mount["readOnly"] is True
    assert mounts["/usr/local/dcmi"][1]["readOnly"] is True
    assert "readOnly" not in mounts["/root/.cache"][1]  # seed entry without :ro and a cache dir


def test_shm_is_a_memory_empty_dir_sized_from_the_sandbox(shipped_config: DevicesConfig) -> None:
    volume, mount = volumes_by_mount(render(instance("ascend-910b", 4), shipped_config)[0])["/dev/shm"]
    assert volume["emptyDir"] == {"medium": "Memory", "sizeLimit": "100Gi"}
    assert "readOnly" not in mount


def test_ascend_pods_are_pinned_to_arm64_and_the_profile_selector(shipped_config: DevicesConfig) -> None:
    spec = pod(render(instance("ascend-910b", 4), shipped_config)[0])
    assert spec["nodeSelector"] == {"kubernetes.io/arch": "arm64", "accelerator": "huawei-Ascend910"}


def test_ascend_310p_uses_its_own_resource(shipped_config: DevicesConfig) -> None:
    dep, _ = render(instance("ascend-310p", 2), shipped_config)
    assert engine(dep)["resources"]["limits"] == {"huawei.com/Ascend310P": 2}
    assert pod(dep)["nodeSelector"]["accelerator"] == "huawei-Ascend310P"


def test_metax_plugin_mode(shipped_config: DevicesConfig) -> None:
    dep, _ = render(instance("metax-c550", 1), shipped_config)
    container = engine(dep)
    assert container["resources"]["limits"] == {"metax-tech.com/gpu": 1}
    env = env_of(dep)
    assert "CUDA_VISIBLE_DEVICES" not in env  # the sandbox's device_env belongs to the plugin here
    assert env["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    mounts = volumes_by_mount(dep)
    assert "/dev/dri" not in mounts and "/dev/mxcd" not in mounts
    assert mounts["/opt/maca"][1]["readOnly"] is True
    assert pod(dep)["nodeSelector"]["kubernetes.io/arch"] == "amd64"
    assert container["securityContext"]["privileged"] is False


def test_nvidia_x2_plugin_mode(shipped_config: DevicesConfig) -> None:
    dep, _ = render(instance("nvidia-t4", 2), shipped_config)
    container = engine(dep)
    assert container["resources"] == {"limits": {"nvidia.com/gpu": 2}}
    env = env_of(dep)
    assert "NVIDIA_VISIBLE_DEVICES" not in env
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert container["securityContext"] == {  # no capabilities configured: all dropped
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod(dep)["nodeSelector"] == {"kubernetes.io/arch": "amd64", "accelerator": "nvidia-gpu"}
    assert volumes_by_mount(dep)["/dev/shm"][0]["emptyDir"]["sizeLimit"] == "32Gi"
    assert "runtimeClassName" not in pod(dep)


def test_runtime_class_comes_from_the_profile() -> None:
    config = shipped_with({"nvidia-t4": {"resource_name": "nvidia.com/gpu", "runtime_class_name": "nvidia"}})
    assert pod(render(instance("nvidia-t4", 1), config)[0])["runtimeClassName"] == "nvidia"


def test_user_resources_are_kept_beside_the_accelerator(shipped_config: DevicesConfig) -> None:
    inst = instance("nvidia-t4", 1, resources={"limits": {"cpu": "8", "memory": "64Gi"}, "requests": {"cpu": 4}})
    assert engine(render(inst, shipped_config)[0])["resources"] == {
        "limits": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": 1},
        "requests": {"cpu": 4},
    }


# --- host-device mode -------------------------------------------------------------------------------


def test_host_device_mode_mounts_allocated_nodes_and_forces_privileged(host_device_config: DevicesConfig) -> None:
    dep, _ = render(instance("acme-npu", 2), host_device_config)
    container = engine(dep)
    mounts = volumes_by_mount(dep)
    assert mounts["/dev/acme0"][0]["hostPath"] == {"path": "/dev/acme0", "type": "CharDevice"}
    assert mounts["/dev/acme1"][0]["hostPath"] == {"path": "/dev/acme1", "type": "CharDevice"}
    assert "/dev/acme2" not in mounts and "/dev/acme3" not in mounts  # not allocated
    assert mounts["/dev/acme_ctl"][0]["hostPath"] == {"path": "/dev/acme_ctl", "type": ""}  # control node
    assert mounts["/dev/dri"][0]["hostPath"] == {"path": "/dev/dri", "type": ""}  # a directory
    assert container["securityContext"] == {  # privileged: escalation cannot be switched off
        "privileged": True,
        "capabilities": {"add": ["IPC_LOCK"], "drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert "resources" not in container  # nothing to request without a device plugin
    env = env_of(dep)
    assert env["ACME_VISIBLE_DEVICES"] == "0,1"  # no plugin: the sandbox's variable is how chips are chosen
    assert env["ACME_LOG_LEVEL"] == "info"


def test_host_device_mode_merges_profile_selector_and_tolerations(host_device_config: DevicesConfig) -> None:
    inst = instance(
        "acme-npu",
        1,
        nodeSelector={"zone": "a"},
        tolerations=[{"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}],
    )
    spec = pod(render(inst, host_device_config)[0])
    assert spec["nodeSelector"] == {"kubernetes.io/arch": "amd64", "accelerator": "acme-npu", "zone": "a"}
    assert spec["tolerations"] == [
        {"key": "acme.example/npu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"},
    ]


def test_driver_mount_without_ro_is_read_only_unless_a_cache(host_device_config: DevicesConfig) -> None:
    mounts = volumes_by_mount(render(instance("acme-npu", 1), host_device_config)[0])
    assert mounts["/opt/acme/driver"][1]["readOnly"] is True
    assert "readOnly" not in mounts["/var/cache/acme"][1]


def test_a_driver_mount_over_shm_is_refused() -> None:
    data = builders.devices_doc(GOLDEN / "host-device-devices.yaml")
    builders.chip_doc(data, "acme-npu")["ext_sandboxes"]["volumes"].append("/run/shm:/dev/shm/")
    config = builders.devices_config(data)
    inst = instance("acme-npu", 1)
    with pytest.raises(ResolveError, match=r"chip acme-npu: two volumes mount at /dev/shm \(shm and host-dev-shm\)"):
        render_kubernetes(inst, resolve(inst, config).bind())


# --- model sources ----------------------------------------------------------------------------------


def test_host_path_source_is_a_read_only_directory_at_the_command_path(shipped_config: DevicesConfig) -> None:
    dep, _ = render(instance("nvidia-t4", 1, source={"hostPath": "/data/models/llama"}), shipped_config)
    volume, mount = volumes_by_mount(dep)["/mnt/model"]
    assert volume["hostPath"] == {"path": "/data/models/llama", "type": "Directory"}
    assert mount["readOnly"] is True
    assert engine(dep)["command"] == ["vllm", "serve", "/mnt/model"]


def test_pvc_source_is_a_read_only_claim_with_sub_path(shipped_config: DevicesConfig) -> None:
    source = {"pvc": {"claimName": "models", "subPath": "llama/8b"}}
    dep, _ = render(instance("nvidia-t4", 1, source=source), shipped_config)
    volume, mount = volumes_by_mount(dep)["/mnt/model"]
    assert volume["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert mount == {"name": volume["name"], "mountPath": "/mnt/model", "readOnly": True, "subPath": "llama/8b"}
    assert engine(dep)["command"] == ["vllm", "serve", "/mnt/model"]


def test_pvc_source_without_sub_path(shipped_config: DevicesConfig) -> None:
    dep, _ = render(instance("nvidia-t4", 1, source={"pvc": {"claimName": "models"}}), shipped_config)
    assert "subPath" not in volumes_by_mount(dep)["/mnt/model"][1]


def test_hugging_face_source_has_no_weights_volume_and_a_cache(shipped_config: DevicesConfig) -> None:
    source = {"huggingFace": {"repo": "Qwen/Qwen3-8B", "revision": "main"}}
    dep, _ = render(instance("nvidia-t4", 1, source=source), shipped_config)
    mounts = volumes_by_mount(dep)
    assert "/mnt/model" not in mounts
    assert mounts["/root/.cache/huggingface"][0]["emptyDir"] == {}
    container = engine(dep)
    assert container["command"] == ["vllm", "serve", "Qwen/Qwen3-8B"]
    assert container["args"][container["args"].index("--revision") + 1] == "main"


def test_hugging_face_cache_reuses_a_sandbox_cache_mount(shipped_config: DevicesConfig) -> None:
    dep, _ = render(instance("ascend-910b", 1, source={"huggingFace": {"repo": "Qwen/Qwen3-8B"}}), shipped_config)
    mounts = volumes_by_mount(dep)
    assert "/root/.cache/huggingface" not in mounts  # /root/.cache from devices.yaml already covers it
    assert "/root/.cache" in mounts


def test_hugging_face_token_comes_from_its_secret(shipped_config: DevicesConfig) -> None:
    source = {"huggingFace": {"repo": "meta-llama/Llama-3.1-8B", "tokenSecretRef": {"name": "hf"}}}
    env = env_of(render(instance("nvidia-t4", 1, source=source), shipped_config)[0])
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "token"}}


# --- args and environment ---------------------------------------------------------------------------


def test_user_args_override_default_flags(shipped_config: DevicesConfig) -> None:
    inst = instance("ascend-910b", 4, engine={"name": "vllm", "args": ["--tensor-parallel-size=2", "--enforce-eager"]})
    args = engine(render(inst, shipped_config)[0])["args"]
    assert "--tensor-parallel-size=2" in args and "--enforce-eager" in args
    assert "--tensor-parallel-size" not in args  # the default flag and its value "4" are gone
    assert args.count("--served-model-name") == 1


def test_user_env_beats_sandbox_static_env(shipped_config: DevicesConfig) -> None:
    inst = instance(
        "ascend-910b", 4, engine={"name": "vllm", "env": [{"name": "ASCEND_GLOBAL_LOG_LEVEL", "value": "1"}]}
    )
    env = env_of(render(inst, shipped_config)[0])  # env_of also asserts the name appears once
    assert env["ASCEND_GLOBAL_LOG_LEVEL"] == "1"


def test_user_env_beats_engine_env(shipped_config: DevicesConfig) -> None:
    inst = instance("ascend-910b", 2, engine={"name": "mindie", "env": [{"name": "WORLD_SIZE", "value": "1"}]})
    env = env_of(render(inst, shipped_config)[0])
    assert env["WORLD_SIZE"] == "1"
    assert env["MODEL_PATH"] == "/mnt/model"


@pytest.mark.parametrize("var", ["ASCEND_RT_VISIBLE_DEVICES", "ASCEND_VISIBLE_DEVICES"])
def test_user_value_for_an_allocation_owned_variable_is_refused(shipped_config: DevicesConfig, var: str) -> None:
    inst = instance("ascend-910b", 4, engine={"name": "vllm", "env": [{"name": var, "value": "0"}]})
    with pytest.raises(ResolveError, match=rf"spec\.engine\.env\[0\]: {var} is set by xw"):
        resolve(inst, shipped_config).bind()


def test_kubernetes_variable_syntax_is_escaped(shipped_config: DevicesConfig) -> None:
    inst = instance(
        "nvidia-t4",
        1,
        engine={"name": "vllm", "args": ["--chat-template=$(HOME)/t"], "env": [{"name": "X", "value": "$(Y)"}]},
    )
    dep, _ = render(inst, shipped_config)
    assert "--chat-template=$$(HOME)/t" in engine(dep)["args"]
    assert env_of(dep)["X"] == "$$(Y)"


def test_api_key_comes_from_the_secret_and_is_never_inlined(shipped_config: DevicesConfig) -> None:
    inst = instance("nvidia-t4", 1, apiKeySecretRef={"name": "llm-key"})
    dep, _ = render(inst, shipped_config)
    entry = next(e for e in engine(dep)["env"] if e["name"] == "VLLM_API_KEY")
    assert entry == {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "llm-key", "key": "api-key"}}}
    # /v1/models needs the key the kubelet doesn't have
    assert engine(dep)["readinessProbe"]["httpGet"]["path"] == "/health"


def test_api_key_for_other_engines_uses_the_generic_name(shipped_config: DevicesConfig) -> None:
    inst = instance("ascend-910b", 1, engine={"name": "mindie"}, apiKeySecretRef={"name": "k", "key": "token"})
    assert env_of(render(inst, shipped_config)[0])["API_KEY"] == {"secretKeyRef": {"name": "k", "key": "token"}}


def test_literal_api_key_beside_the_secret_is_refused(shipped_config: DevicesConfig) -> None:
    inst = instance(
        "nvidia-t4",
        1,
        engine={"name": "vllm", "env": [{"name": "VLLM_API_KEY", "value": "plain"}]},
        apiKeySecretRef={"name": "k"},
    )
    with pytest.raises(ResolveError, match=r"VLLM_API_KEY is set from the Secret in spec\.apiKeySecretRef"):
        render_kubernetes(inst, resolve(inst, shipped_config).bind())


# --- probes, strategy, metadata ---------------------------------------------------------------------


def test_probes_have_a_long_startup_budget_and_patient_timeouts(shipped_config: DevicesConfig) -> None:
    container = engine(render(instance("nvidia-t4", 1), shipped_config)[0])
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/health", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30 * 60
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v1/models", "port": "http"}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["timeoutSeconds"] >= 3


def test_startup_budget_is_configurable(shipped_config: DevicesConfig) -> None:
    dep, _ = render(instance("nvidia-t4", 1, probes={"startupTimeoutSeconds": 7200}), shipped_config)
    startup = engine(dep)["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == 7200
    assert dep["spec"]["progressDeadlineSeconds"] > 7200


def test_strategy_defaults_to_recreate(shipped_config: DevicesConfig) -> None:
    dep, _ = render(instance("ascend-910b", 4), shipped_config)
    assert dep["spec"]["strategy"] == {"type": "Recreate"}


def test_rolling_update_when_asked(shipped_config: DevicesConfig) -> None:
    dep, _ = render(instance("ascend-910b", 4, strategy="RollingUpdate"), shipped_config)
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_labels_selector_and_owner_reference(shipped_config: DevicesConfig) -> None:
    dep, svc = render(instance("ascend-910b", 4, name="qwen", replicas=3), shipped_config)
    expected = {
        MANAGED_BY_KEY: "xw-operator",
        INSTANCE_KEY: "qwen",
        MODEL_INSTANCE_KEY: "qwen",
        NAME_KEY: "vllm",
        CHIP_KEY: "ascend-910b",
    }
    for obj in (dep, svc):
        assert obj["metadata"]["name"] == "qwen"
        assert obj["metadata"]["namespace"] == "llm"
        assert obj["metadata"]["labels"] == expected
        assert obj["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "xw.dev/v1alpha1",
                "kind": "ModelInstance",
                "name": "qwen",
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["selector"] == {"matchLabels": {"xw.dev/model-instance": "qwen"}}
    assert selector_labels("qwen") == {"xw.dev/model-instance": "qwen"}
    assert dep["spec"]["template"]["metadata"]["labels"] == expected
    assert svc["spec"]["selector"] == {"xw.dev/model-instance": "qwen"}


def test_no_owner_reference_without_uid(shipped_config: DevicesConfig) -> None:
    for obj in render(instance("nvidia-t4", 1, uid=None, namespace=None), shipped_config):
        assert "ownerReferences" not in obj["metadata"]
        assert "namespace" not in obj["metadata"]


def test_bookkeeping_annotations_are_not_copied(shipped_config: DevicesConfig) -> None:
    annotations = {
        "kopf.zalando.org/last-handled-configuration": "{}",
        "xw.dev/last-handled-configuration": "{}",
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
    }
    dep, svc = render(instance("nvidia-t4", 1, metadata={"annotations": annotations}), shipped_config)
    text = yaml.safe_dump([dep, svc])
    assert "last-handled-configuration" not in text and "last-applied-configuration" not in text


def test_service_exposes_the_spec_port_and_endpoint_matches(shipped_config: DevicesConfig) -> None:
    inst = instance("nvidia-t4", 1, name="llama", port=9000)
    _, svc = render(inst, shipped_config)
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"name": "http", "protocol": "TCP", "port": 9000, "targetPort": "http"}]
    assert endpoint(inst) == "http://llama.llm.svc:9000/v1"
    assert endpoint(instance("nvidia-t4", 1, name="llama", namespace=None)) == "http://llama.default.svc:8000/v1"


def test_pod_has_no_service_links_and_no_api_token(shipped_config: DevicesConfig) -> None:
    spec = pod(render(instance("nvidia-t4", 1), shipped_config)[0])
    assert spec["enableServiceLinks"] is False
    assert spec["automountServiceAccountToken"] is False


def test_affinity_is_passed_through(shipped_config: DevicesConfig) -> None:
    affinity: dict[str, Any] = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    assert pod(render(instance("nvidia-t4", 1, affinity=affinity), shipped_config)[0])["affinity"] == affinity


def test_node_selector_contradicting_the_profile_is_refused(shipped_config: DevicesConfig) -> None:
    inst = instance("nvidia-t4", 1, nodeSelector={"accelerator": "huawei-Ascend910"})
    with pytest.raises(ResolveError, match=r"spec\.nodeSelector\.accelerator: 'huawei-Ascend910' contradicts"):
        render_kubernetes(inst, resolve(inst, shipped_config).bind())


def test_user_may_override_the_architecture_pin(shipped_config: DevicesConfig) -> None:
    inst = instance(
        "nvidia-t4", 1, engine={"name": "vllm", "image": "me/vllm:multi"}, nodeSelector={"kubernetes.io/arch": "arm64"}
    )
    policy = shipped_config.policy.model_copy(update={"allowed_image_prefixes": ["docker.io/me"]})
    dep, _ = render(inst, shipped_config.model_copy(update={"policy": policy}))
    assert pod(dep)["nodeSelector"]["kubernetes.io/arch"] == "arm64"


def test_render_does_not_import_kopf() -> None:
    import subprocess
    import sys

    code = "import sys, xw_operator.render_kubernetes; print('kopf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_cli_render_prints_deployment_and_service(tmp_path: Path, test_devices_file: Path) -> None:
    from click.testing import CliRunner

    from xw_operator.cli import main

    sample = Path(__file__).resolve().parents[2] / "configs" / "samples" / "qwen3-8b-ascend.yaml"
    result = CliRunner().invoke(main, ["render", "-f", str(sample)])
    assert result.exit_code == 0, result.output
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert [(d["apiVersion"], d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("apps/v1", "Deployment", "qwen3-8b"),
        ("v1", "Service", "qwen3-8b"),
    ]
    assert docs[0]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"huawei.com/Ascend910": 4}


def test_host_device_pods_repel_each_other_across_namespaces(host_device_config: DevicesConfig) -> None:
    dep, _ = render(instance("acme-npu", 2), host_device_config)
    template = dep["spec"]["template"]
    assert template["metadata"]["labels"]["xw.dev/host-devices"] == "true"
    terms = template["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms == [
        {
            "labelSelector": {"matchLabels": {"xw.dev/host-devices": "true"}},
            "topologyKey": "kubernetes.io/hostname",
            "namespaceSelector": {},
        }
    ]


def test_host_device_anti_affinity_is_added_to_the_users_affinity(host_device_config: DevicesConfig) -> None:
    user = {
        "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {}}]},
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "zone"}]},
    }
    inst = instance("acme-npu", 1)
    inst = inst.model_copy(update={"spec": inst.spec.model_copy(update={"affinity": Affinity.model_validate(user)})})
    affinity = pod(render(inst, host_device_config)[0])["affinity"]
    assert affinity["nodeAffinity"] == user["nodeAffinity"]
    terms = affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms[0] == {"topologyKey": "zone"} and terms[1]["topologyKey"] == "kubernetes.io/hostname"
    assert user["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == [{"topologyKey": "zone"}]


def test_device_plugin_pods_have_no_host_device_label_or_anti_affinity(shipped_config: DevicesConfig) -> None:
    dep, _ = render(instance("ascend-910b", 4), shipped_config)
    assert "xw.dev/host-devices" not in dep["spec"]["template"]["metadata"]["labels"]
    assert "affinity" not in pod(dep)


def test_renderer_reads_the_model_source_from_the_plan(shipped_config: DevicesConfig) -> None:
    """The plan, not the instance, says where the weights are: a plan changed after resolve wins."""
    inst = instance("nvidia-t4", 1)
    plan = dataclasses.replace(resolve(inst, shipped_config).bind(), model=ModelSource("pvc", pvc_claim="other"))
    dep, _ = render_kubernetes(inst, plan)
    volumes = {v["name"]: v for v in pod(dep)["volumes"]}
    assert volumes["model"]["persistentVolumeClaim"] == {"claimName": "other", "readOnly": True}
