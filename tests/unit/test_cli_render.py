"""`xw render`: output shape for the shipped chips and exit 2 + one line for every bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

import builders
from xw_operator.cli import main

REPO = Path(__file__).resolve().parents[2]
# The shipped devices.yaml allows no hostPath model on Kubernetes; these tests use /models/m1 and /m.
pytestmark = pytest.mark.usefixtures("test_devices_file")


def manifest(tmp_path: Path, chip: str, count: int, **spec: Any) -> Path:
    """mi.yaml holding one instance ``m1`` with a hostPath source."""
    doc = builders.instance_doc(chip, count, name="m1", source={"hostPath": "/models/m1"}, **spec)
    return builders.write_yaml(tmp_path / "mi.yaml", doc)


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def render_docker(path: Path, *extra: str) -> dict[str, Any]:
    result = run("render", "--backend", "docker", "-f", str(path), *extra)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert len(out) == 1
    return dict(out[0])


def test_docker_ascend_910b_x4(tmp_path: Path) -> None:
    params = render_docker(manifest(tmp_path, "ascend-910b", 4))
    assert params["name"] == "m1-render"
    assert params["image"] == "quay.io/ascend/vllm-ascend:v0.11.0rc0"
    assert params["entrypoint"] == ["vllm", "serve", "/mnt/model"]
    assert params["command"][:6] == ["--served-model-name", "m1", "--port", "8000", "--tensor-parallel-size", "4"]
    assert params["devices"] == [
        "/dev/davinci0:/dev/davinci0:rwm",
        "/dev/davinci1:/dev/davinci1:rwm",
        "/dev/davinci2:/dev/davinci2:rwm",
        "/dev/davinci3:/dev/davinci3:rwm",
        "/dev/davinci_manager:/dev/davinci_manager:rwm",
        "/dev/devmm_svm:/dev/devmm_svm:rwm",
        "/dev/hisi_hdc:/dev/hisi_hdc:rwm",
    ]
    assert params["volumes"][0] == "/models/m1:/mnt/model:ro"
    assert "/usr/local/Ascend/driver/lib64/:/usr/local/Ascend/driver/lib64/:ro" in params["volumes"]
    assert "/root/.cache:/root/.cache:rw" in params["volumes"]
    assert params["environment"]["ASCEND_RT_VISIBLE_DEVICES"] == "0,1,2,3"
    assert params["privileged"] is True
    assert params["cap_add"] == ["SYS_ADMIN", "SYS_RAWIO", "IPC_LOCK", "SYS_RESOURCE"]
    assert params["shm_size"] == 100 * 1024**3
    assert params["runtime"] == "runc"
    # No spec.port: `xw run` picks a free host port from XW_PORT_RANGE, so render does not claim 8000.
    assert params["ports"] == {"8000/tcp": ["127.0.0.1", None]}
    assert params["restart_policy"] == {"Name": "always"}
    assert params["init"] is True
    assert params["labels"] == {
        "xw.runtime": "vllm-docker",
        "xw.model_id": "m1",
        "xw.alias": "m1",
        "xw.instance_id": "m1",
        "xw.backend_type": "vllm",
        "xw.deployment_mode": "docker",
        "xw.device_indices": "0,1,2,3",
        "xw.server_name": "render",
        "xw.chip": "ascend-910b",
        "xw.health_path": "/health",
        "xw.ready_path": "/v1/models",
    }


def test_docker_ascend_310p_x2_stays_on_one_card(tmp_path: Path) -> None:
    params = render_docker(manifest(tmp_path, "ascend-310p", 2, devices={"chip": "ascend-310p", "count": 2}))
    assert params["labels"]["xw.device_indices"] == "0,1"
    assert params["devices"][:2] == ["/dev/davinci0:/dev/davinci0:rwm", "/dev/davinci1:/dev/davinci1:rwm"]


def test_docker_ascend_310p_explicit_indices(tmp_path: Path) -> None:
    path = manifest(tmp_path, "x", 1, devices={"chip": "ascend-310p", "count": 2, "indices": [4, 5]})
    params = render_docker(path)
    assert params["environment"]["ASCEND_RT_VISIBLE_DEVICES"] == "4,5"
    assert params["labels"]["xw.device_indices"] == "4,5"


def test_docker_metax_x1(tmp_path: Path) -> None:
    params = render_docker(manifest(tmp_path, "metax-c550", 1))
    assert params["image"].endswith("-amd64")
    assert params["devices"] == [
        "/dev/dri:/dev/dri:rwm",
        "/dev/mxcd:/dev/mxcd:rwm",
        "/dev/infiniband:/dev/infiniband:rwm",
    ]
    # An xw-cli vLLM image: its entrypoint reads the contract variables (engine definition vllm-xw).
    assert params["environment"] == {
        "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
        "CUDA_VISIBLE_DEVICES": "0",
        "MODEL_PATH": "/mnt/model",
        "MODEL_NAME": "m1",
        "TENSOR_PARALLEL": "1",
        "WORLD_SIZE": "1",
    }
    assert "entrypoint" not in params or params["entrypoint"] is None


def test_docker_nvidia_x2(tmp_path: Path) -> None:
    params = render_docker(manifest(tmp_path, "nvidia-t4", 2, port=9001), "--server-name", "gpu-host")
    assert params["name"] == "m1-gpu-host"
    assert params["runtime"] == "nvidia"
    assert params["privileged"] is False
    assert [d.split(":")[0] for d in params["devices"]] == [
        "/dev/nvidia0",
        "/dev/nvidia1",
        "/dev/nvidiactl",
        "/dev/nvidia-uvm",
        "/dev/nvidia-uvm-tools",
    ]
    assert params["environment"]["NVIDIA_VISIBLE_DEVICES"] == "0,1"
    assert params["ports"] == {"8000/tcp": ["127.0.0.1", 9001]}


def test_kubernetes_render_is_yaml_for_every_instance(tmp_path: Path) -> None:
    docs = [builders.instance_doc(chip, 1, name=name) for name, chip in (("a", "ascend-910b"), ("b", "nvidia-t4"))]
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}
    path = builders.write_yaml(tmp_path / "two.yaml", namespace, *docs)
    result = run("render", "-f", str(path))
    assert result.exit_code == 0, result.output
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert rendered, "no objects rendered"
    text = result.stdout
    assert "quay.io/ascend/vllm-ascend" in text and "vllm/vllm-openai" in text


@pytest.mark.parametrize(
    ("spec", "extra", "message"),
    [
        ({"devices": {"chip": "tpu-v9", "count": 1}}, [], "unknown chip 'tpu-v9'"),
        (
            {"devices": {"chip": "ascend-910c", "count": 1}, "engine": {"name": "mindie"}},
            [],
            "chip 'ascend-910c' has no device sandbox for engine 'mindie'",
        ),
        ({"devices": {"chip": "ascend-910b", "count": 1}}, ["--arch", "amd64"], "no vllm image for amd64"),
        ({"devices": {"chip": "ascend-910b", "count": 16}}, [], "count is 16 but chip ascend-910b has 8"),
        ({"devices": {"chip": "ascend-910b", "count": 2, "indices": [1]}}, [], "indices has 1 entries but count is 2"),
        ({"devices": {"chip": "ascend-910b", "count": 0}}, [], "spec.devices.count"),
        ({"devices": {"chip": "ascend-910b", "count": 1}, "bogus": 1}, [], "spec.bogus: unknown field"),
    ],
)
@pytest.mark.parametrize("backend", ["docker", "kubernetes"])
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, spec: dict[str, Any], extra: list[str], message: str, backend: str
) -> None:
    path = manifest(tmp_path, "unused", 1, **spec)
    result = run("render", "--backend", backend, "-f", str(path), *extra)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in lines[0]


def test_malformed_yaml_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("kind: ModelInstance\nspec: [oops\n")
    result = run("render", "-f", str(path))
    assert result.exit_code == 2 and result.stdout == ""
    assert "is not valid YAML" in result.stderr


def test_file_without_model_instances_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "ns.yaml"
    path.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n")
    result = run("render", "-f", str(path))
    assert result.exit_code == 2 and "no xw.dev/v1alpha1 ModelInstance document found" in result.stderr


def test_invalid_devices_config_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "devices.yaml"
    cfg.write_text("version: '1'\nvendors:\n  - vendor_name: X\n    vendor_id: '0x1'\n    chip_models: []\n")
    result = run("render", "-f", str(manifest(tmp_path, "ascend-910b", 1)), "--devices-config", str(cfg))
    assert result.exit_code == 2
    assert "vendors[0].chip_models" in result.stderr


def test_devices_config_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XW_DEVICES_CONFIG", str(REPO / "tests" / "fixtures" / "seed-devices.yaml"))
    params = render_docker(manifest(tmp_path, "ascend-910b", 1))
    assert params["image"] == "example.org/vllm-ascend:arm64"


def test_pvc_source_is_refused_in_docker_mode(tmp_path: Path) -> None:
    path = manifest(
        tmp_path,
        "x",
        1,
        devices={"chip": "ascend-910b", "count": 1},
        model={"source": {"pvc": {"claimName": "models"}}},
    )
    result = run("render", "--backend", "docker", "-f", str(path))
    assert (
        result.exit_code == 2
        and "spec.model.source.pvc exists only on Kubernetes; use hostPath or huggingFace in Docker mode"
        in result.stderr
    )
