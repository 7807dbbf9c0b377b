"""resolve().bind(): image choice, env precedence, device selection and every bad-input message."""

from __future__ import annotations

from typing import Any

import pytest

from xw_operator.devices import DevicesConfig
from xw_operator.errors import ResolveError
from xw_operator.plan import ModelSource, resolve


def test_ascend_plan_fields(shipped_config: DevicesConfig, make_instance: Any) -> None:
    plan = resolve(
        make_instance("ascend-910b", 4, engine={"name": "vllm", "args": ["--max-model-len=8192"]}), shipped_config
    ).bind()
    assert plan.arch == "arm64"
    assert plan.image == "quay.io/ascend/vllm-ascend:v0.11.0rc0"
    assert plan.command == ("vllm", "serve", "/mnt/model")
    assert plan.args[-1] == "--max-model-len=8192"
    assert plan.device_indices == (0, 1, 2, 3)
    assert plan.env_dict["ASCEND_RT_VISIBLE_DEVICES"] == "0,1,2,3"
    assert [n.host for n in plan.device_nodes][:4] == [f"/dev/davinci{i}" for i in range(4)]
    assert plan.privileged is True
    assert plan.shm_bytes == 100 * 1024**3
    assert plan.device_visibility_env == ("ASCEND_RT_VISIBLE_DEVICES", "ASCEND_VISIBLE_DEVICES")
    assert plan.kubernetes is not None and plan.kubernetes.resource_name == "huawei.com/Ascend910"


def test_explicit_indices_are_used(shipped_config: DevicesConfig, make_instance: Any) -> None:
    plan = resolve(make_instance("ascend-910b", 2, indices=[6, 7]), shipped_config).bind()
    assert plan.device_indices == (6, 7)
    assert plan.env_dict["ASCEND_RT_VISIBLE_DEVICES"] == "6,7"
    assert "/dev/davinci6" in [n.host for n in plan.device_nodes]
    assert "/dev/davinci0" not in [n.host for n in plan.device_nodes]


def test_allocator_indices_override_spec(shipped_config: DevicesConfig, make_instance: Any) -> None:
    plan = resolve(make_instance("ascend-910b", 2, indices=[6, 7]), shipped_config).bind([4, 5])
    assert plan.device_indices == (4, 5)


def test_indices_beyond_the_chip_are_refused(shipped_config: DevicesConfig, make_instance: Any) -> None:
    with pytest.raises(ResolveError, match=r"device indices \[8\] do not exist on chip ascend-910b"):
        resolve(make_instance("ascend-910b", 1, indices=[8]), shipped_config).bind()


def test_count_above_capacity_is_refused(shipped_config: DevicesConfig, make_instance: Any) -> None:
    with pytest.raises(ResolveError, match=r"spec\.devices\.count is 9 but chip ascend-910b has 8 devices per host"):
        resolve(make_instance("ascend-910b", 9), shipped_config).bind()


def test_none_image_for_requested_arch(shipped_config: DevicesConfig, make_instance: Any) -> None:
    with pytest.raises(ResolveError) as exc:
        resolve(make_instance("ascend-910b", 1), shipped_config, arch="amd64").bind()
    assert "chip ascend-910b has no vllm image for amd64" in str(exc.value)
    assert "runtime_images.vllm.amd64 is NONE or missing" in str(exc.value)
    assert "supported architectures: arm64" in str(exc.value)


def test_engine_with_no_image_anywhere(seed_config: DevicesConfig, make_instance: Any) -> None:
    with pytest.raises(ResolveError, match="chip ascend-310p has no mlguider image for any architecture"):
        source = {"huggingFace": {"repo": "org/m"}}  # the seed file allows no hostPath on Kubernetes
        resolve(make_instance("ascend-310p", 1, engine={"name": "mlguider"}, source=source), seed_config).bind()


def test_image_override_wins(shipped_config: DevicesConfig, make_instance: Any) -> None:
    config = _with_policy(
        shipped_config, model_host_path_prefixes=["/data"], allowed_image_prefixes=["docker.io/library/mine"]
    )
    plan = resolve(
        make_instance("ascend-910b", 1, engine={"name": "vllm", "image": "mine:1"}), config, arch="amd64"
    ).bind()
    assert plan.image == "mine:1" and plan.arch == "amd64"


def test_user_env_overrides_static_sandbox_env(shipped_config: DevicesConfig, make_instance: Any) -> None:
    engine = {"name": "vllm", "env": [{"name": "ASCEND_GLOBAL_LOG_LEVEL", "value": "1"}, {"name": "X", "value": "y"}]}
    env = resolve(make_instance("ascend-910b", 1, engine=engine), shipped_config).bind().env_dict
    assert env["ASCEND_GLOBAL_LOG_LEVEL"] == "1"
    assert env["X"] == "y"


@pytest.mark.parametrize("var", ["ASCEND_RT_VISIBLE_DEVICES", "ASCEND_VISIBLE_DEVICES"])
def test_user_cannot_set_device_visibility(shipped_config: DevicesConfig, make_instance: Any, var: str) -> None:
    engine = {"name": "vllm", "env": [{"name": var, "value": "0,1,2,3,4,5,6,7"}]}
    with pytest.raises(ResolveError, match=rf"spec.engine.env\[0\]: {var} is set by xw from the allocated devices"):
        resolve(make_instance("ascend-910b", 1, engine=engine), shipped_config).bind()


def test_mindie_env_and_visibility(shipped_config: DevicesConfig, make_instance: Any) -> None:
    plan = resolve(make_instance("ascend-910b", 2, engine={"name": "mindie"}), shipped_config).bind()
    assert plan.command is None
    assert plan.env_dict["MINDIE_NPU_DEVICE_IDS"] == "0,1"
    assert plan.env_dict["MODEL_PATH"] == "/mnt/model"
    assert "NET_ADMIN" in plan.capabilities


def test_hugging_face_source_serves_repo(shipped_config: DevicesConfig, make_instance: Any) -> None:
    source = {"huggingFace": {"repo": "Qwen/Qwen3-8B", "revision": "main"}}
    plan = resolve(make_instance("nvidia-t4", 2, source=source), shipped_config).bind()
    assert plan.command == ("vllm", "serve", "Qwen/Qwen3-8B")
    assert plan.args[-2:] == ("--revision", "main")
    assert plan.model_source == "huggingFace"
    assert plan.arch == "amd64"
    assert plan.env_dict["NVIDIA_VISIBLE_DEVICES"] == "0,1"
    assert plan.runtime == "nvidia"


def test_code_sandbox_plan(shipped_config: DevicesConfig, make_instance: Any) -> None:
    config = _with_policy(shipped_config, model_host_path_prefixes=["/data"], allowed_image_prefixes=["docker.io"])
    plan = resolve(make_instance("cambricon-mlu370", 2, engine={"name": "vllm", "image": "mlu:1"}), config).bind()
    assert plan.env_dict["MLU_VISIBLE_DEVICES"] == "0,1"
    assert "/dev/cambricon_ipcm1" in [n.host for n in plan.device_nodes]


def test_code_sandbox_without_image_says_how_to_fix(shipped_config: DevicesConfig, make_instance: Any) -> None:
    with pytest.raises(ResolveError, match=r"set spec\.engine\.image"):
        resolve(make_instance("cambricon-mlu370", 1), shipped_config).bind()


def _with_policy(config: DevicesConfig, **policy: Any) -> DevicesConfig:
    return DevicesConfig.model_validate({**config.model_dump(), "policy": policy})


def test_admin_can_disable_host_path_models(shipped_config: DevicesConfig, make_instance: Any) -> None:
    config = _with_policy(shipped_config, allow_model_host_path=False)
    with pytest.raises(ResolveError, match=r"hostPath is disabled by the cluster administrator"):
        resolve(make_instance("ascend-910b", 1), config).bind()
    hf = resolve(make_instance("ascend-910b", 1, source={"huggingFace": {"repo": "a/b"}}), config).bind()
    assert hf.model_source == "huggingFace"


def test_admin_can_restrict_host_path_directories(shipped_config: DevicesConfig, make_instance: Any) -> None:
    config = _with_policy(shipped_config, model_host_path_prefixes=["/data/models"])
    allowed = resolve(make_instance("ascend-910b", 1, source={"hostPath": "/data/models/q"}), config)
    assert allowed.model.host_path == "/data/models/q"
    for path in ("/etc", "/data/models-evil/x"):
        with pytest.raises(ResolveError, match=r"outside the allowed directories \(/data/models\)"):
            resolve(make_instance("ascend-910b", 1, source={"hostPath": path}), config).bind()


def test_profile_holds_no_devices_and_bind_adds_them(shipped_config: DevicesConfig, make_instance: Any) -> None:
    profile = resolve(make_instance("ascend-910b", 2), shipped_config)
    assert "ASCEND_RT_VISIBLE_DEVICES" not in dict(profile.env)
    plan = profile.bind([5, 4])
    assert plan.device_indices == (5, 4)
    assert plan.env_dict["ASCEND_RT_VISIBLE_DEVICES"] == "5,4"
    assert list(plan.env)[-1] == ("ASCEND_RT_VISIBLE_DEVICES", "5,4")  # visibility wins over everything
    assert {n.host for n in plan.device_nodes} >= {"/dev/davinci4", "/dev/davinci5"}
    assert "/dev/davinci0" not in {n.host for n in plan.device_nodes}
    assert (plan.image, plan.args, plan.device_count) == (profile.image, profile.args, profile.device_count)


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        ([1], r"1 device indices given for spec\.devices\.count 2"),
        ([1, 2, 3], r"3 device indices given for spec\.devices\.count 2"),
        ([7, 8], r"device indices \[8\] do not exist on chip ascend-910b \(indices 0-7\)"),
    ],
)
def test_bind_checks_indices_against_count_and_chip(
    shipped_config: DevicesConfig, make_instance: Any, indices: list[int], message: str
) -> None:
    profile = resolve(make_instance("ascend-910b", 2), shipped_config)
    with pytest.raises(ResolveError, match=message):
        profile.bind(indices)


def test_model_source_is_plain_data_in_the_plan(shipped_config: DevicesConfig, make_instance: Any) -> None:
    pvc = {"pvc": {"claimName": "weights", "subPath": "q/8b"}}
    assert resolve(make_instance("ascend-910b", 1, source=pvc), shipped_config).model == ModelSource(
        "pvc", pvc_claim="weights", pvc_sub_path="q/8b"
    )
    hf = {"huggingFace": {"repo": "a/b", "revision": "v1", "tokenSecretRef": {"name": "hf"}}}
    assert resolve(make_instance("ascend-910b", 1, source=hf), shipped_config).model == ModelSource(
        "huggingFace", hf_repo="a/b", hf_revision="v1", hf_token_secret="hf", hf_token_key="token"
    )


def test_explicit_port_is_the_requested_host_port(shipped_config: DevicesConfig, make_instance: Any) -> None:
    assert resolve(make_instance("ascend-910b", 1), shipped_config).requested_host_port is None
    assert resolve(make_instance("ascend-910b", 1, port=9000), shipped_config).requested_host_port == 9000
