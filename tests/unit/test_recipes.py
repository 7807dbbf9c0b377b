"""Model recipes: xw-cli's models.yaml and runtime_params.yaml fill what a catalog instance leaves unset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from xw_operator.catalog import expand
from xw_operator.devices import DevicesConfig, load_devices_config
from xw_operator.errors import ConfigError, ResolveError
from xw_operator.instance import ModelInstance, parse_instance
from xw_operator.plan import resolve
from xw_operator.recipes import parse_recipes
from xw_operator.render_kubernetes import render_kubernetes

XW_CLI = Path(__file__).resolve().parent.parent / "fixtures" / "xw-cli" / "0.0.5"
MINDIE = "harbor.tsingmao.com/xw-cli/mindie:2.2.RC1-800I-A2-py311-openeuler24.03-lts-arm64"
VLLM = "harbor.tsingmao.com/xw-cli/vllm-ascend:v0.18.0rc1-arm64"


@pytest.fixture(scope="module")
def xw_config() -> DevicesConfig:
    return load_devices_config(XW_CLI / "devices.yaml")


def catalog(model_id: str, chip: str, **spec: Any) -> ModelInstance:
    body: dict[str, Any] = {"model": {"catalog": model_id}, "devices": {"chip": chip}}
    for key, value in spec.items():
        body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_instance(
        {"apiVersion": "xw.dev/v1alpha1", "kind": "ModelInstance", "metadata": {"name": "q"}, "spec": body}
    )


def test_recipe_files_beside_devices_yaml_are_loaded(xw_config: DevicesConfig) -> None:
    assert xw_config.recipes.models is not None and xw_config.recipes.params is not None
    assert xw_config.recipes.model("qwen3-8b") is not None


def test_shipped_recipes_are_xw_cli_0_0_5(shipped_config: DevicesConfig) -> None:
    repo = Path(__file__).resolve().parents[2]
    for name in ("models.yaml", "runtime_params.yaml"):
        assert (repo / "configs" / name).read_bytes() == (XW_CLI / name).read_bytes()
    assert shipped_config.recipes.model("qwen3-8b") is not None


def test_catalog_fills_source_engine_count_and_served_name(xw_config: DevicesConfig) -> None:
    plan = resolve(catalog("qwen3-32b", "ascend-910b"), xw_config, arch="arm64").bind()
    assert plan.model.kind == "huggingFace" and plan.model.hf_repo == "Qwen/Qwen3-32B"
    assert plan.engine == "vllm" and plan.device_count == 4  # world_size=4 in the template
    assert plan.served_model_name == "qwen3-32b" and plan.recipe == "ascend-910b_qwen3-32b_vllm"
    assert plan.env_dict["MAX_MODEL_LEN"] == "32768" and plan.env_dict["TENSOR_PARALLEL"] == "4"


def test_spec_wins_over_the_recipe(xw_config: DevicesConfig) -> None:
    instance = catalog(
        "qwen3-32b",
        "ascend-910b",
        model={"name": "mine", "source": {"hostPath": "/data/q"}},
        engine={"name": "mindie", "image": MINDIE},
        devices={"count": 2},
    )
    plan = resolve(instance, xw_config, arch="arm64", backend="docker").bind()  # hostPath: Docker mode
    assert (plan.engine, plan.device_count, plan.image, plan.served_model_name) == ("mindie", 2, MINDIE, "mine")
    assert plan.model_source == "hostPath" and plan.env_dict["WORLD_SIZE"] == "2"


def test_recipe_image_beats_devices_yaml(xw_config: DevicesConfig) -> None:
    plan = resolve(catalog("qwen3.5-9b", "ascend-910b"), xw_config, arch="arm64")
    assert plan.image == "harbor.tsingmao.com/xw-cli/vllm-ascend:qwen3_5-arm64"
    # spec.engine.image (here the chip's configured image, which the image policy allows) beats the recipe.
    mine = resolve(catalog("qwen3.5-9b", "ascend-910b", engine={"image": VLLM}), xw_config, arch="arm64")
    assert mine.image == VLLM


def test_unsupported_chip_is_refused_with_the_supported_list(xw_config: DevicesConfig) -> None:
    with pytest.raises(ResolveError) as err:
        resolve(catalog("qwen3-8b", "intel-gpu"), xw_config, arch="amd64")
    text = str(err.value)
    assert "model qwen3-8b does not support chip intel-gpu" in text
    assert "ascend-910b (vllm, mindie, omni-infer); ascend-310p (vllm, mindie, mlguider); metax-c550 (vllm)" in text


def test_unsupported_engine_and_unknown_model(xw_config: DevicesConfig) -> None:
    with pytest.raises(ResolveError, match="supports engines vllm, mindie, omni-infer, not mlguider"):
        resolve(catalog("qwen3-8b", "ascend-910b", engine={"name": "mlguider"}), xw_config, arch="arm64")
    with pytest.raises(ResolveError, match="unknown model 'nope'; catalog models: "):
        resolve(catalog("nope", "ascend-910b"), xw_config, arch="arm64")


def test_expand_is_idempotent(xw_config: DevicesConfig) -> None:
    once, _ = expand(catalog("qwen3-8b", "ascend-310p"), xw_config)
    twice, _ = expand(once, xw_config)
    assert once == twice and once.spec.engine.name == "vllm"


def test_catalog_instance_renders_for_kubernetes_with_the_hub_source(xw_config: DevicesConfig) -> None:
    instance = catalog("qwen3-8b", "ascend-910b")
    deployment = render_kubernetes(instance, resolve(instance, xw_config).bind())[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODEL_PATH"] == "Qwen/Qwen3-8B" and env["GPU_MEMORY_UTILIZATION"] == "0.9"


def test_instance_needs_a_source_or_a_catalog() -> None:
    with pytest.raises(Exception, match=r"set model.source .* or model.catalog"):
        parse_instance(
            {
                "apiVersion": "xw.dev/v1alpha1",
                "kind": "ModelInstance",
                "metadata": {"name": "q"},
                "spec": {"model": {}, "devices": {"chip": "ascend-910b"}},
            }
        )


@pytest.mark.parametrize(
    ("models", "params", "message"),
    [
        ("version: '1'\nmodels: []", None, "models.yaml: models: List should have at least 1 item"),
        (
            "version: '1'\nmodels: [{model_id: a, source_id: b, supported_devices: {x: [vllm]}}]",
            None,
            "'vllm' is not backend:mode",
        ),
        (None, "templates: [{name: a, params: [novalue]}]", "expected key=value"),
        (None, "templates: [{name: a}, {name: a}]", "templates[1].name: 'a' is defined twice"),
        (None, "templates: [{name: a, prams: []}]", "prams"),
    ],
)
def test_bad_recipe_files_name_the_file_and_field(models: str | None, params: str | None, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_recipes(models, params)
    assert message in str(err.value)
