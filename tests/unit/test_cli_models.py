"""`xw models`: the catalog with what runs on the chips this host has (sysfs only, no Docker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from xw_operator.cli import main

XW_CLI = Path(__file__).resolve().parent.parent / "fixtures" / "xw-cli" / "0.0.5"


def _pci(sysfs: Path, address: str, vendor: str, device: str, subsystem: str) -> None:
    d = sysfs / "bus" / "pci" / "devices" / address
    d.mkdir(parents=True)
    for name, value in (("vendor", vendor), ("device", device), ("subsystem_device", subsystem)):
        (d / name).write_text(value + "\n")


def test_models_lists_what_runs_on_this_hosts_chips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(2):  # two Ascend 910B4 chips
        _pci(tmp_path, f"0000:8{n}:00.0", "0x19e5", "0xd802", "0x4000")
    monkeypatch.setenv("XW_SYSFS_ROOT", str(tmp_path))
    config = str(XW_CLI / "devices.yaml")
    result = CliRunner().invoke(main, ["models", "-o", "json", "--devices-config", config])
    assert result.exit_code == 0, result.output
    rows = {r["model"]: r for r in json.loads(result.output)}
    assert rows["qwen3-8b"]["runs_here"] == [{"chip": "ascend-910b", "engines": ["vllm", "mindie", "omni-infer"]}]
    assert "glm-ocr" not in rows  # 310P only: hidden without --all
    everything = CliRunner().invoke(main, ["models", "--all", "-o", "json", "--devices-config", config])
    assert "glm-ocr" in {r["model"] for r in json.loads(everything.output)}
    table = CliRunner().invoke(main, ["models", "--devices-config", config]).output
    assert table.splitlines()[0].split()[:2] == ["MODEL", "PARAMS(B)"]
    assert any(
        line.startswith("qwen3-8b ") and "ascend-910b: vllm, mindie, omni-infer" in line for line in table.splitlines()
    )


def test_xw_run_model_needs_a_chip() -> None:
    result = CliRunner().invoke(main, ["run", "qwen3-8b"])
    assert result.exit_code == 2 and "--chip is required" in result.output
    both = CliRunner().invoke(main, ["run", "qwen3-8b", "-f", "x.yaml", "--chip", "c"])
    assert both.exit_code == 2 and "not both" in both.output
