"""`xw render` of every shipped sample is byte-identical to its reviewed golden file.

The goldens were recorded from main *before* multi-node support (LeaderWorkerSet) was added: a
single-node instance (``spec.devices.nodes`` unset or 1) must keep rendering exactly the same Deployment
and Service. ``XW_UPDATE_GOLDEN=1 pytest tests/unit/test_golden_render.py`` rewrites them after an
intended change (review the diff).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from xw_operator.cli import main

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
SAMPLES = sorted((REPO / "configs" / "samples").glob("*.yaml"))


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.stem for s in SAMPLES])
def test_single_node_sample_renders_as_golden(sample: Path) -> None:
    result = CliRunner().invoke(main, ["render", "-f", str(sample)])
    assert result.exit_code == 0, result.output
    golden = GOLDEN / f"render-{sample.stem}.kubernetes.yaml"
    if os.environ.get("XW_UPDATE_GOLDEN") == "1":
        golden.write_text(result.stdout)
    assert result.stdout == golden.read_text()
    kinds = [d["kind"] for d in yaml.safe_load_all(result.stdout)]
    assert kinds == ["Deployment", "Service"]


MULTI_NODE_SAMPLES = sorted((REPO / "configs" / "samples" / "multi-node").glob("*.yaml"))


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
