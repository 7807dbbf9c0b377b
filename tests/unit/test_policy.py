"""The administrator's policy (policy.py, hardening.py): host paths, images, placement, pod hardening."""

from __future__ import annotations

from typing import Any

import pytest

from xw_operator.devices import DevicesConfig
from xw_operator.errors import ConfigError, ManifestError, PolicyRefused
from xw_operator.plan import resolve
from xw_operator.policy import host_path_refusal, image_allowed, parse_image
from xw_operator.render_kubernetes import render_kubernetes


def with_policy(config: DevicesConfig, **policy: Any) -> DevicesConfig:
    return DevicesConfig.model_validate({**config.model_dump(), "policy": {**config.policy.model_dump(), **policy}})


# --- hostPath model sources --------------------------------------------------------------------------

DATA = ["/data/models"]


@pytest.mark.parametrize(
    "path",
    [
        "/data/models",
        "/data/models/",
        "/data/models/qwen",
        "/data/models/qwen/",
        "/data/models/a/b/c",
    ],
)
def test_host_path_under_an_allowed_prefix(path: str) -> None:
    assert host_path_refusal(path, allow=True, prefixes=DATA, backend="kubernetes") is None
    assert host_path_refusal(path, allow=True, prefixes=["/data/models/"], backend="kubernetes") is None


@pytest.mark.parametrize(
    "path",
    [
        "/data/models-evil",  # prefix look-alike
        "/data/models-evil/qwen",
        "/data/modelsx",
        "/data",
        "/",
        "/etc",
        "/var/lib/kubelet",
        "/run/containerd",
        "/data/models/../../etc",  # backtracking
        "/data/models/..",
        "/data/models/./x",
        "/data/models//x",  # empty component
        "/data//models/x",
        "data/models/x",  # relative
    ],
)
def test_host_path_outside_or_ambiguous_is_refused(path: str) -> None:
    why = host_path_refusal(path, allow=True, prefixes=DATA, backend="kubernetes")
    assert why is not None and path in why


def test_host_path_on_kubernetes_needs_a_listed_prefix_but_not_in_docker_mode() -> None:
    why = host_path_refusal("/data/models/q", allow=True, prefixes=[], backend="kubernetes")
    assert why is not None and "policy.model_host_path_prefixes" in why
    assert host_path_refusal("/data/models/q", allow=True, prefixes=[], backend="docker") is None
    # Listed prefixes bind Docker mode too, and the switch refuses it everywhere.
    assert host_path_refusal("/etc", allow=True, prefixes=DATA, backend="docker") is not None
    assert host_path_refusal("/data/models/q", allow=False, prefixes=DATA, backend="docker") is not None


def test_shipped_config_refuses_host_path_models_on_kubernetes(
    shipped_config_as_is: DevicesConfig, make_instance: Any
) -> None:
    inst = make_instance("ascend-910b", 1, source={"hostPath": "/data/models/q"})
    with pytest.raises(PolicyRefused) as exc:
        resolve(inst, shipped_config_as_is)
    assert exc.value.reason == "HostPathNotAllowed"
    assert resolve(inst, shipped_config_as_is, arch="arm64", backend="docker").model_source == "hostPath"


def test_prefixes_must_be_plain_directories(shipped_config_as_is: DevicesConfig) -> None:
    for bad in (["/"], ["/data/../etc"], ["relative"]):
        with pytest.raises((ConfigError, ValueError)):
            with_policy(shipped_config_as_is, model_host_path_prefixes=bad)


# --- images -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("nginx", ("docker.io/library/nginx", "")),
        ("vllm/vllm-openai:v0.11.0", ("docker.io/vllm/vllm-openai", ":v0.11.0")),
        ("docker.io/vllm/vllm-openai:v0.11.0", ("docker.io/vllm/vllm-openai", ":v0.11.0")),
        ("quay.io/ascend/vllm-ascend:v1", ("quay.io/ascend/vllm-ascend", ":v1")),
        ("localhost:5000/x/y@sha256:" + "a" * 64, ("localhost:5000/x/y", "@sha256:" + "a" * 64)),
        ("UPPER/case", None),
        ("a b", None),
        ("", None),
        ("quay.io/ascend/../evil", None),
    ],
)
def test_image_references_are_qualified_like_docker(ref: str, expected: Any) -> None:
    assert parse_image(ref) == expected


CONFIGURED = ["quay.io/ascend/vllm-ascend:v0.11.0rc0"]


@pytest.mark.parametrize(
    ("image", "prefixes", "allowed"),
    [
        ("quay.io/ascend/vllm-ascend:v0.11.0rc0", [], True),  # the configured one
        ("quay.io/ascend/vllm-ascend:v0.12.0", [], False),  # another tag of it is not configured
        ("evil.io/x:1", [], False),
        ("quay.io/ascend/vllm-ascend:v0.12.0", ["quay.io/ascend"], True),
        ("quay.io/ascend-evil/vllm:1", ["quay.io/ascend"], False),  # prefix look-alike
        ("quay.io/ascendx:1", ["quay.io/ascend"], False),
        ("quay.io.evil.com/ascend/x:1", ["quay.io"], False),  # registry look-alike
        ("quay.io/anything/x:1", ["quay.io"], True),
        ("vllm/vllm-openai:v0.12.0", ["docker.io/vllm"], True),
        ("docker.io/vllm/vllm-openai:v1", ["vllm/vllm-openai"], True),
        ("vllm-evil/vllm-openai:v1", ["docker.io/vllm"], False),
        ("nginx", ["docker.io/nginx"], False),  # official images are docker.io/library/...
        ("nginx", ["docker.io/library/nginx"], True),
        ("registry.local:5000/llm/engine:1", ["registry.local:5000/llm"], True),
        ("registry.local:5001/llm/engine:1", ["registry.local:5000/llm"], False),
    ],
)
def test_image_policy_matches_on_path_boundaries(image: str, prefixes: list[str], allowed: bool) -> None:
    assert image_allowed(image, CONFIGURED, prefixes) is allowed


def test_unlisted_image_is_refused_with_image_not_allowed(shipped_config: DevicesConfig, make_instance: Any) -> None:
    inst = make_instance("ascend-910b", 1, engine={"name": "vllm", "image": "evil.io/miner:1"})
    with pytest.raises(PolicyRefused) as exc:
        resolve(inst, shipped_config)
    assert exc.value.reason == "ImageNotAllowed"
    assert "policy.allowed_image_prefixes" in str(exc.value)
    # The configured image itself may be named, and an admin prefix opens a registry.
    same = make_instance("ascend-910b", 1, engine={"name": "vllm", "image": "quay.io/ascend/vllm-ascend:v0.11.0rc0"})
    assert resolve(same, shipped_config).image == "quay.io/ascend/vllm-ascend:v0.11.0rc0"
    assert resolve(inst, with_policy(shipped_config, allowed_image_prefixes=["evil.io"])).image == "evil.io/miner:1"


def test_another_chips_image_is_not_allowed(shipped_config: DevicesConfig, make_instance: Any) -> None:
    inst = make_instance("ascend-910b", 1, engine={"name": "vllm", "image": "vllm/vllm-openai:v0.11.0"})
    with pytest.raises(PolicyRefused, match="is not allowed for chip ascend-910b"):
        resolve(inst, shipped_config)


def test_bad_image_prefix_in_policy_is_a_config_error(shipped_config: DevicesConfig) -> None:
    with pytest.raises(ValueError, match="registry"):
        with_policy(shipped_config, allowed_image_prefixes=["quay.io/ascend:v1"])


# --- placement --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "toleration",
    [{"operator": "Exists"}, {"operator": "Exists", "key": ""}, {"operator": "Exists", "effect": "NoSchedule"}],
)
def test_tolerate_everything_is_refused_by_the_model(make_instance: Any, toleration: dict[str, Any]) -> None:
    with pytest.raises(ManifestError, match="without one it tolerates every taint"):
        make_instance("ascend-910b", 1, tolerations=[toleration])


def test_control_plane_placement_is_refused_by_the_model(make_instance: Any) -> None:
    with pytest.raises(ManifestError, match="control-plane"):
        make_instance("ascend-910b", 1, nodeSelector={"node-role.kubernetes.io/control-plane": ""})
    with pytest.raises(ManifestError, match="control-plane"):
        make_instance("ascend-910b", 1, tolerations=[{"key": "node-role.kubernetes.io/control-plane"}])


@pytest.mark.parametrize(
    "affinity",
    [
        {"nodeSelectorTerms": [{"matchExpressions": [{"key": "accelerator", "operator": "In", "values": ["x"]}]}]},
        {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "accelerator", "operator": "NotIn", "values": ["huawei-Ascend910"]}]}
            ]
        },
        {"nodeSelectorTerms": [{"matchExpressions": [{"key": "accelerator", "operator": "DoesNotExist"}]}]},
        {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}
            ]
        },
    ],
)
def test_affinity_contradicting_the_chip_or_selecting_the_control_plane_is_refused(
    shipped_config: DevicesConfig, make_instance: Any, affinity: dict[str, Any]
) -> None:
    inst = make_instance(
        "ascend-910b", 1, affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": affinity}}
    )
    with pytest.raises(PolicyRefused) as exc:
        resolve(inst, shipped_config)
    assert exc.value.reason == "PlacementNotAllowed"


def test_node_selector_contradicting_the_chip_is_refused(shipped_config: DevicesConfig, make_instance: Any) -> None:
    inst = make_instance("ascend-910b", 1, nodeSelector={"accelerator": "nvidia-gpu"})
    with pytest.raises(PolicyRefused, match="contradicts chip ascend-910b's node selector") as exc:
        resolve(inst, shipped_config)
    assert exc.value.reason == "PlacementNotAllowed"
    # Docker mode has no nodes: the same spec resolves there.
    assert resolve(inst, shipped_config, arch="arm64", backend="docker")


def test_keyed_tolerations_and_compatible_affinity_pass(shipped_config: DevicesConfig, make_instance: Any) -> None:
    inst = make_instance(
        "ascend-910b",
        1,
        tolerations=[{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "accelerator", "operator": "In", "values": ["huawei-Ascend910"]}]}
                    ]
                }
            }
        },
    )
    assert resolve(inst, shipped_config)


# --- pod hardening and cache isolation -----------------------------------------------------------------


def _pod(objs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = objs[0]["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("chip", ["ascend-910b", "ascend-310p", "metax-c550", "intel-gpu", "nvidia-t4"])
def test_every_shipped_profile_renders_hardened_pods(
    shipped_config: DevicesConfig, make_instance: Any, chip: str
) -> None:
    inst = make_instance(chip, 1, source={"huggingFace": {"repo": "org/m"}})
    pod = _pod(render_kubernetes(inst, resolve(inst, shipped_config)))
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert "hostNetwork" not in pod and "hostPID" not in pod and "hostIPC" not in pod
    security = pod["containers"][0]["securityContext"]
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["privileged"] is False
    assert security["allowPrivilegeEscalation"] is False


def test_a_profile_may_relax_hardening_explicitly(shipped_config: DevicesConfig, make_instance: Any) -> None:
    data = shipped_config.model_dump(mode="json")
    for vendor in data["vendors"]:
        for chip in vendor["chip_models"]:
            if chip["config_key"] == "nvidia-t4":
                chip["kubernetes"]["relax"] = ["seccomp", "dropCapabilities", "serviceLinks"]
    config = DevicesConfig.model_validate(data)
    inst = make_instance("nvidia-t4", 1)
    pod = _pod(render_kubernetes(inst, resolve(inst, config)))
    security = pod["containers"][0]["securityContext"]
    assert "seccompProfile" not in security and "capabilities" not in security
    assert security["allowPrivilegeEscalation"] is False  # not relaxed
    assert pod["enableServiceLinks"] is True and pod["automountServiceAccountToken"] is False
    assert "securityContext" not in pod


def test_writable_host_mounts_are_private_to_the_namespace(shipped_config: DevicesConfig, make_instance: Any) -> None:
    def cache_volume(config: DevicesConfig, namespace: str) -> dict[str, Any]:
        inst = make_instance("ascend-910b", 1, source={"huggingFace": {"repo": "org/m"}})
        inst.metadata.namespace = namespace
        pod = _pod(render_kubernetes(inst, resolve(inst, config)))
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/root/.cache")
        assert not mount.get("readOnly")
        volume: dict[str, Any] = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        return volume

    a, b = cache_volume(shipped_config, "team-a"), cache_volume(shipped_config, "team-b")
    assert a["hostPath"] == {"path": "/root/.cache/xw-namespaces/team-a", "type": "DirectoryOrCreate"}
    assert b["hostPath"]["path"] == "/root/.cache/xw-namespaces/team-b"
    private = with_policy(shipped_config, writable_host_mounts="emptyDir")
    assert cache_volume(private, "team-a") == {"name": a["name"], "emptyDir": {}}
    # Read-only driver mounts stay host paths as configured.
    inst = make_instance("ascend-910b", 1)
    pod = _pod(render_kubernetes(inst, resolve(inst, shipped_config)))
    paths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert "/usr/local/dcmi" in paths and "/root/.cache" not in paths
