"""Engine definitions, model recipes and xw-cli coexistence against a real Docker engine.

- Each shipped engine definition: the stand-in engine (which serves back exactly the argv and environment
  it started with, see hack/test-images/engine/entrypoint.sh) receives exactly the contract.
- ``xw run qwen3-8b --chip ascend-910b`` with the shipped recipes (xw-cli 0.0.5) starts with the tuned
  parameters; a chip the recipe does not support is refused with the supported list.
- A fake xw-cli container (labels as xw-cli writes them, created but never started) holds devices 0-1 and
  the lowest port of the range: ``xw run`` of 2 devices gets other devices and another port, ``xw ps`` shows
  both kinds, and the xw-cli container is left exactly as it was.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from xw_docker_host import CONTRACT_IMAGE, NPU, OK_IMAGE, REPO, XwHost, devices_yaml

import docker

XW_CLI_IMAGE = "localhost/xw-cli/vllm-standin:ok"  # matches the vllm-xw definition's image patterns
# What the stand-in's process environment holds besides what xw sets (image ENV, Docker, busybox sh).
RUNTIME_VARS = {"PATH", "HOME", "HOSTNAME", "PWD", "SHLVL", "XW_TEST_MODE", "_"}
SANDBOX_ENV = {"ASCEND_GLOBAL_LOG_LEVEL": "3"}


@pytest.fixture
def xw_cli_image(docker_engine: docker.DockerClient) -> str:
    repo, tag = XW_CLI_IMAGE.rsplit(":", 1)
    docker_engine.images.get(CONTRACT_IMAGE).tag(repo, tag)
    return XW_CLI_IMAGE


def _engines_yaml(host: XwHost) -> Path:
    """The test host's devices.yaml with a sandbox block and image for every shipped engine on test-npu."""
    doc = devices_yaml(host.root)
    chip = doc["vendors"][0]["chip_models"][0]
    vllm_block = chip["ext_sandboxes"]["vllm"]
    for engine in ("mindie", "omni-infer", "mlguider"):
        chip["ext_sandboxes"][engine] = dict(vllm_block)
        chip["runtime_images"][engine] = {"amd64": CONTRACT_IMAGE, "arm64": CONTRACT_IMAGE}
    # The image policy allows spec.engine.image under these prefixes (the xw-cli-looking tag included).
    doc["policy"] = {"allowed_image_prefixes": ["docker.io/xw-test", "localhost/xw-cli"]}
    path = host.root / "devices.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _received(port: int) -> tuple[list[str], dict[str, str]]:
    base = f"http://127.0.0.1:{port}/xw-test"
    with urllib.request.urlopen(f"{base}/argv", timeout=5) as resp:
        argv = resp.read().decode().splitlines()
    with urllib.request.urlopen(f"{base}/env", timeout=5) as resp:
        env = dict(line.split("=", 1) for line in resp.read().decode().splitlines() if "=" in line)
    return argv, {k: v for k, v in env.items() if k not in RUNTIME_VARS}


def _run_manifest(host: XwHost, name: str, engine: str, image: str, count: int = 2) -> dict[str, Any]:
    path = host.manifest(name, count=count, image=image, served=f"org/{name}")
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["engine"]["name"] = engine
    path.write_text(yaml.safe_dump(doc))
    result = host.xw("run", "-f", str(path), "--timeout", "60")
    assert result.returncode == 0, result.stderr
    return host.ps()[name]


CONTRACTS: dict[str, tuple[list[str] | None, dict[str, str]]] = {
    # engine definition -> (argv after argv[0], or None for the image's entrypoint with no arguments; env)
    "vllm": (
        ["serve", "{model}", "--served-model-name", "org/{name}", "--port", "8000", "--tensor-parallel-size", "2"],
        {},
    ),
    "vllm-xw": (
        None,
        {"MODEL_PATH": "/mnt/model", "MODEL_NAME": "org/{name}", "TENSOR_PARALLEL": "2", "WORLD_SIZE": "2"},
    ),
    "mindie": (
        None,
        {
            "MODEL_PATH": "/mnt/model",
            "MODEL_NAME": "org/{name}",
            "SERVER_PORT": "8000",
            "WORLD_SIZE": "2",
            "TENSOR_PARALLEL": "2",
        },
    ),
    "omni-infer": (
        None,
        {"MODEL_PATH": "/mnt/model", "MODEL_NAME": "org/{name}", "TENSOR_PARALLEL_SIZE": "2", "SERVER_PORT": "8000"},
    ),
    "mlguider": (
        None,
        {
            "ORIGIN_MODEL_PATH": "/mnt/model",
            "MODEL_PATH": "/mnt/work",
            "MAX_MODEL_LEN": "8192",
            "TENSOR_PARALLEL": "2",
            "WORLD_SIZE": "2",
            "API_PORT": "8000",
            "MODEL_NAME": "org/{name}",
        },
    ),
}


@pytest.mark.parametrize("definition", list(CONTRACTS))
def test_stand_in_receives_exactly_the_contract(host: XwHost, xw_cli_image: str, definition: str) -> None:
    host.env["XW_DEVICES_CONFIG"] = str(_engines_yaml(host))
    engine = "vllm" if definition.startswith("vllm") else definition
    image = xw_cli_image if definition == "vllm-xw" else CONTRACT_IMAGE
    name = definition.replace("-", "")
    row = _run_manifest(host, name, engine, image)
    argv, env = _received(row["host_port"])
    expected_args, contract = CONTRACTS[definition]
    model = "/mnt/model"
    if expected_args is None:
        assert argv == ["/entrypoint.sh"], argv  # the image's own entrypoint, no arguments
    else:
        assert argv[0].endswith("vllm") and argv[1:] == [a.format(model=model, name=name) for a in expected_args]
    visible = row["devices"]
    assert visible == [0, 1]
    expected_env = {
        **SANDBOX_ENV,
        "ASCEND_RT_VISIBLE_DEVICES": "0,1",
        **{k: v.format(name=name) for k, v in contract.items()},
    }
    assert env == expected_env
    if definition == "mlguider":  # the work copy is writable, the weights are not
        container = host.container(name)
        assert container.exec_run(["/bin/sh", "-c", "touch /mnt/work/converted"]).exit_code == 0
        assert container.exec_run(["/bin/sh", "-c", "touch /mnt/model/x"]).exit_code != 0
        assert (host.root / "state" / "work" / name / "converted").exists()
        assert host.xw("rm", "--force", name).returncode == 0
        assert not (host.root / "state" / "work" / name).exists()


def _recipe_host(host: XwHost, image: str) -> None:
    """devices.yaml naming the fake NPUs ascend-910b (images: the stand-in as an xw-cli vLLM image), with
    the shipped recipe files (xw-cli 0.0.5) beside it."""
    doc = devices_yaml(host.root)
    chip = doc["vendors"][0]["chip_models"][0]
    chip["config_key"] = "ascend-910b"
    chip["variants"] = []
    chip["runtime_images"] = {"vllm": {"amd64": image, "arm64": image}}
    doc["vendors"][0]["chip_models"].append(
        {
            "config_key": "intel-gpu",
            "model_name": "Intel GPU",
            "device_id": "0xe211",
            "runtime_images": {"vllm": {"amd64": image, "arm64": image}},
            "ext_sandboxes": {"devices": [str(host.dev / "davinci_manager")], "vllm": {}},
        }
    )
    conf = host.root / "recipes"
    conf.mkdir()
    (conf / "devices.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    for name in ("models.yaml", "runtime_params.yaml"):
        shutil.copy(REPO / "configs" / name, conf / name)
    host.env["XW_DEVICES_CONFIG"] = str(conf / "devices.yaml")


def test_xw_run_catalog_model_starts_with_the_recipes_tuned_parameters(host: XwHost, xw_cli_image: str) -> None:
    _recipe_host(host, xw_cli_image)
    result = host.xw("run", "qwen3-8b", "--chip", "ascend-910b", "--timeout", "60")
    assert result.returncode == 0, result.stderr
    row = host.ps()["qwen3-8b"]
    assert row["state"] == "ready" and row["devices"] == [0]  # world_size=1 in the recipe
    _, env = _received(row["host_port"])
    assert env["GPU_MEMORY_UTILIZATION"] == "0.9"
    assert env["MAX_MODEL_LEN"] == "32768"
    assert env["EXTRA_ARGS"] == "--enable-auto-tool-choice --tool-call-parser hermes --reasoning-parser qwen3"
    assert env["MODEL_NAME"] == "qwen3-8b" and env["MODEL_PATH"] == "Qwen/Qwen3-8B"
    assert env["TENSOR_PARALLEL"] == "1" and env["WORLD_SIZE"] == "1"


def test_xw_run_refuses_a_chip_the_recipe_does_not_support(host: XwHost, xw_cli_image: str) -> None:
    _recipe_host(host, xw_cli_image)
    result = host.xw("run", "qwen3-8b", "--chip", "intel-gpu", "--timeout", "60")
    assert result.returncode == 2, result.stderr
    assert "model qwen3-8b does not support chip intel-gpu; supported: ascend-910b (vllm, mindie, omni-infer)" in (
        result.stderr
    )
    assert host.containers() == []


@pytest.fixture
def xw_cli_container(host: XwHost) -> Iterator[Any]:
    """A container as xw-cli makes it (its labels, its server name from ~/.xw/data/server.conf, port 8000
    bound on 127.0.0.1) holding NPUs 0-1 and the lowest port of the range; created, never started."""
    server = "Xw4Cli"
    (host.root / "state" / "data").mkdir()
    (host.root / "state" / "data" / "server.conf").write_text(f"# XW Server Configuration\nname={server}\n")
    port = int(host.env["XW_PORT_RANGE"].split("-")[0])
    labels = {
        "xw.runtime": "vllm:docker",
        "xw.model_id": "qwen3-8b",
        "xw.alias": "qwen3-8b",
        "xw.instance_id": "qwen3-8b",
        "xw.backend_type": "vllm",
        "xw.deployment_mode": "docker",
        "xw.server_name": server,
        "xw.device_indices": "0,1",
    }
    container = host.client.containers.create(
        OK_IMAGE,
        name=f"qwen3-8b-{server}-{host.server_name}",
        labels=labels,
        ports={"8000/tcp": ("127.0.0.1", port)},
        environment={"MODEL_NAME": "qwen3-8b"},
    )
    try:
        yield container
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def test_xw_cli_containers_keep_their_devices_and_port(host: XwHost, xw_cli_container: Any) -> None:
    before = host.client.api.inspect_container(xw_cli_container.id)
    taken_port = int(host.env["XW_PORT_RANGE"].split("-")[0])
    result = host.xw("run", "-f", str(host.manifest("mine", count=2)), "--timeout", "60")
    assert result.returncode == 0, result.stderr
    rows = host.ps()
    assert set(rows) == {"mine", "qwen3-8b"}
    mine, theirs = rows["mine"], rows["qwen3-8b"]
    assert mine["owner"] == "xw" and theirs["owner"] == "xw-cli"
    assert not set(mine["devices"]) & {0, 1} and len(mine["devices"]) == 2
    assert mine["host_port"] != taken_port and theirs["host_port"] == taken_port
    assert theirs["devices"] == [0, 1] and theirs["state"] == "created"
    table = host.xw("ps").stdout
    assert "xw-cli" in table and "mine" in table
    devices = {(d["chip"], d["index"]): d["instance"] for d in host.devices()}
    assert devices[(NPU, 0)] == "qwen3-8b (xw-cli)"
    # Removing our instance leaves xw-cli's container exactly as it was.
    assert host.xw("rm", "--force", "mine").returncode == 0
    after = host.client.api.inspect_container(xw_cli_container.id)
    assert after["State"] == before["State"] and after["Config"]["Labels"] == before["Config"]["Labels"]
    # Named by the user, it is removed like ours (by its xw-cli instance id).
    assert host.xw("rm", "qwen3-8b").returncode == 0
    with pytest.raises(docker.errors.NotFound):
        host.client.containers.get(xw_cli_container.id)


def test_ps_json_shape_has_an_owner(host: XwHost) -> None:
    assert host.xw("run", "-f", str(host.manifest("one")), "--timeout", "60").returncode == 0
    rows = json.loads(host.xw("ps", "-o", "json").stdout)
    assert [r["owner"] for r in rows] == ["xw"]


def test_readiness_wait_shows_elapsed_time_and_the_last_log_line(host: XwHost) -> None:
    """Not a terminal: plain lines. An engine that never gets healthy: the reason and its last log lines."""
    from xw_docker_host import UNHEALTHY_IMAGE

    result = host.xw("run", "-f", str(host.manifest("slow", image=UNHEALTHY_IMAGE)), "--timeout", "4")
    assert result.returncode == 1, result.stderr
    waiting = [line for line in result.stderr.splitlines() if line.startswith("slow: waiting for readiness (")]
    assert waiting, result.stderr
    # Each line: the elapsed time and the state; once the engine has logged, " | " and its last log line.
    # The first line may still be the start-up "no answer" (a loaded host), so the 404 is looked for on any.
    assert all(re.match(r"slow: waiting for readiness \(\d+s\) ", line) for line in waiting), waiting
    assert any("unhealthy: GET /health answered 404 | " in line for line in waiting), waiting
    # (4 s: with a longer wait the probes' own access-log lines push the engine's first line out of the tail.)
    assert "slow not ready within 4s" in result.stderr and "last log lines:" in result.stderr
    assert "serving on :8000" in result.stderr  # the engine's own output, shown on failure
    assert "\x1b" not in result.stderr


def test_xw_run_pulls_a_missing_image_with_progress(host: XwHost) -> None:
    """A real pull from a registry on 127.0.0.1 (tests/docker/local_registry.py) of an image with a fresh
    8 MB layer: plain progress lines (stderr is not a terminal), then the instance starts from it."""
    from local_registry import LocalRegistry

    registry = LocalRegistry(host.client, CONTRACT_IMAGE, "xw-test/pulled", "v1", extra_layer_bytes=8_000_000)
    doc = devices_yaml(host.root)
    doc["policy"] = {"allowed_image_prefixes": [f"127.0.0.1:{registry.port}/xw-test"]}
    (host.root / "devices.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        result = host.xw("run", "-f", str(host.manifest("pulled", image=registry.reference)), "--timeout", "60")
        assert result.returncode == 0, result.stderr
        lines = result.stderr.splitlines()
        assert lines[0] == f"pulling {registry.reference}"
        assert any(line.endswith(": Downloading") for line in lines), lines
        assert any(line.endswith(": Pull complete") for line in lines), lines
        final = next(line for line in lines if line.startswith(f"pulled {registry.reference}: "))
        assert "100%" in final and "MB" in final and "layers" in final
        assert "\x1b" not in result.stderr
        assert host.ps()["pulled"]["state"] == "ready"
        assert any(p.startswith("/v2/xw-test/pulled/blobs/") for p in registry.requests)
    finally:
        registry.close()
        host.cleanup()
        with contextlib.suppress(docker.errors.ImageNotFound):
            host.client.images.remove(registry.reference, force=True)
