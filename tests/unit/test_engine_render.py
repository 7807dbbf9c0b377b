"""Engine definitions reach both renderers: probes and Docker readiness labels, work directories, launch."""

from __future__ import annotations

from typing import Any

from xw_operator.devices import DevicesConfig, parse_devices_config
from xw_operator.plan import resolve
from xw_operator.render_docker import render_docker
from xw_operator.render_kubernetes import render_kubernetes

HUB = {"huggingFace": {"repo": "org/m"}}


def _config(seed_config: DevicesConfig, engines: dict[str, Any]) -> DevicesConfig:
    """The seed config plus engine definitions; the image policy allows spec.engine.image under docker.io/t."""
    data = seed_config.model_dump(mode="json")
    data["engines"] = engines
    data.setdefault("policy", {})["allowed_image_prefixes"] = ["docker.io/t"]
    text = __import__("yaml").safe_dump(data)
    return parse_devices_config(text)


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(objects[0]["spec"]["template"]["spec"]["containers"][0])


def test_probe_paths_come_from_the_definition(seed_config: DevicesConfig, make_instance: Any) -> None:
    config = _config(
        seed_config, {"vllm": {"command": ["serve"], "health_path": "/ping", "ready_path": "/ready", "port": 9000}}
    )
    instance = make_instance("ascend-910b", 1, source=HUB)
    plan = resolve(instance, config).bind()
    container = _container(render_kubernetes(instance, plan))
    assert container["startupProbe"]["httpGet"]["path"] == "/ping"
    assert container["livenessProbe"]["httpGet"]["path"] == "/ping"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["ports"][0]["containerPort"] == 9000
    params = render_docker(plan, server_name="s", host_port=18000)
    assert params["labels"]["xw.health_path"] == "/ping" and params["labels"]["xw.ready_path"] == "/ready"
    assert params["ports"] == {"9000/tcp": ("127.0.0.1", 18000)}


def test_mlguider_gets_a_writable_work_dir_and_health_readiness(seed_config: DevicesConfig, make_instance: Any) -> None:
    instance = make_instance("ascend-310p", 2, engine={"name": "mlguider", "image": "t/mlguider:1"}, source=HUB)
    plan = resolve(instance, _config(seed_config, {})).bind()
    container = _container(objects := render_kubernetes(instance, plan))
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    work = next(m for m in container["volumeMounts"] if m["mountPath"] == "/mnt/work")
    assert "readOnly" not in work
    volumes = objects[0]["spec"]["template"]["spec"]["volumes"]
    assert {"name": work["name"], "emptyDir": {}} in volumes
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODEL_PATH"] == "/mnt/work" and env["ORIGIN_MODEL_PATH"] == "org/m"
    params = render_docker(plan, server_name="s", host_port=1, work_host_dir="/state/work/demo")
    assert "/state/work/demo:/mnt/work:rw" in params["volumes"]
    assert params["labels"]["xw.ready_path"] == ""  # the health path alone decides


def test_definition_without_image_patterns_is_the_fallback(seed_config: DevicesConfig, make_instance: Any) -> None:
    """The seed's vLLM images are example.org/...: upstream contract (explicit vllm serve)."""
    plan = resolve(make_instance("ascend-910b", 2, source=HUB), seed_config).bind()
    assert plan.engine_definition == "vllm" and plan.command == ("vllm", "serve", "org/m")
    image = {"name": "vllm", "image": "t/xw-cli/vllm:1"}
    xw = resolve(make_instance("ascend-910b", 2, engine=image, source=HUB), _config(seed_config, {}))
    assert xw.engine_definition == "vllm-xw" and xw.command is None
