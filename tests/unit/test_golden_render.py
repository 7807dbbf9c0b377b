"""Golden renderings of every shipped sample for both backends, plus the fields that matter.

The golden files tests/golden/render-<sample>.<backend>.* were reviewed by hand once; any change to what
a sample renders to shows up here as a diff to review. After an intended change, regenerate them with
``XW_UPDATE_GOLDEN=1 pytest tests/unit/test_golden_render.py`` and review ``git diff tests/golden``.
The assertions below hold whatever the goldens say: the device count reaches the pod's resource limit
and Docker's device list, and the model source reaches the mounts. Multi-node samples
(configs/samples/multi-node/) render a LeaderWorkerSet; their goldens came with multi-node support.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

import builders
from xw_operator.cli import main
from xw_operator.devices import device_index

GOLDEN = builders.REPO / "tests" / "golden"
SAMPLES = sorted(builders.SAMPLES.glob("*.yaml"))
BACKENDS = {"kubernetes": "yaml", "docker": "json"}


def render(sample: Path, backend: str) -> str:
    result = CliRunner().invoke(main, ["render", "--backend", backend, "-f", str(sample)])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sample", SAMPLES, ids=[s.stem for s in SAMPLES])
def test_sample_renders_as_reviewed(sample: Path, backend: str) -> None:
    golden = GOLDEN / f"render-{sample.stem}.{backend}.{BACKENDS[backend]}"
    text = render(sample, backend)
    if os.environ.get("XW_UPDATE_GOLDEN"):
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden.name}: run XW_UPDATE_GOLDEN=1 pytest {__file__} and review it"
    assert text == golden.read_text(encoding="utf-8"), f"{golden.name} differs (see this module's docstring)"


def sample_spec(sample: Path) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(sample.read_text(encoding="utf-8"))["spec"]
    return spec


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.stem for s in SAMPLES])
def test_kubernetes_sample_carries_count_image_and_model(sample: Path) -> None:
    spec = sample_spec(sample)
    deployment, service = [d for d in yaml.safe_load_all(render(sample, "kubernetes")) if d]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    limits = container["resources"]["limits"]
    accelerators = {k: v for k, v in limits.items() if "/" in k}
    assert list(accelerators.values()) == [spec["devices"]["count"]]
    assert service["spec"]["ports"][0]["port"] == spec.get("port", 8000)
    source = spec["model"]["source"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    if "hostPath" in source:
        assert volumes["model"]["hostPath"] == {"path": source["hostPath"], "type": "Directory"}
        assert mounts["/mnt/model"]["readOnly"] is True
    else:
        assert "model" not in volumes
        assert container["command"][-1] == source["huggingFace"]["repo"]
    assert all(s not in str(container.get("env", [])) for s in ("VISIBLE_DEVICES", "RT_VISIBLE"))


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.stem for s in SAMPLES])
def test_docker_sample_carries_count_image_and_model(sample: Path) -> None:
    spec = sample_spec(sample)
    (params,) = json.loads(render(sample, "docker"))
    count = spec["devices"]["count"]
    indexed = {i for d in params["devices"] if (i := device_index(d.split(":")[0])) is not None}
    labelled = [int(i) for i in params["labels"]["xw.device_indices"].split(",")]
    assert len(labelled) == count and indexed == set(labelled)
    visible = [v for k, v in params["environment"].items() if k.endswith("VISIBLE_DEVICES")]
    assert ",".join(map(str, labelled)) in visible
    source = spec["model"]["source"]
    if "hostPath" in source:
        assert params["volumes"][0] == f"{source['hostPath']}:/mnt/model:ro"
    else:
        assert not any(v.split(":")[1] == "/mnt/model" for v in params["volumes"])
    # The samples give spec.port, so Docker binds exactly that host port (without it, `xw run` picks one).
    assert params["ports"] == {"8000/tcp": ["127.0.0.1", spec.get("port")]}


MULTI_NODE_SAMPLES = sorted((builders.SAMPLES / "multi-node").glob("*.yaml"))


@pytest.mark.parametrize("sample", MULTI_NODE_SAMPLES, ids=[s.stem for s in MULTI_NODE_SAMPLES])
def test_multi_node_sample_renders_a_leaderworkerset_as_golden(sample: Path) -> None:
    result = CliRunner().invoke(main, ["render", "-f", str(sample)])
    assert result.exit_code == 0, result.output
    golden = GOLDEN / f"render-multinode-{sample.stem}.kubernetes.yaml"
    if os.environ.get("XW_UPDATE_GOLDEN") == "1":
        golden.write_text(result.stdout)
    assert result.stdout == golden.read_text()
    kinds = [d["kind"] for d in yaml.safe_load_all(result.stdout)]
    assert kinds == ["LeaderWorkerSet", "Service"]
