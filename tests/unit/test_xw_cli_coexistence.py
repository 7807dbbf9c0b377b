"""Recognising xw-cli's containers and what they hold (pure parts)."""

from __future__ import annotations

import pytest

from xw_operator.devices import VolumeSpec
from xw_operator.docker_mode.xwcli import (
    is_xw_cli_container,
    is_xw_container,
    published_port,
    read_server_name,
    runtime_engine,
)
from xw_operator.mounts import is_cache_dir, volume_read_only

XW_CLI_LABELS = {
    "xw.runtime": "vllm:docker",
    "xw.model_id": "qwen3-8b",
    "xw.alias": "qwen3-8b",
    "xw.instance_id": "qwen3-8b",
    "xw.backend_type": "vllm",
    "xw.deployment_mode": "docker",
    "xw.device_indices": "0,1",
    "xw.server_name": "Ab3dE9",
}


@pytest.mark.parametrize(
    ("label", "engine"),
    [("vllm:docker", "vllm"), ("vllm-docker", "vllm"), ("omni-infer:docker", "omni-infer"), ("x", None), ("", None)],
)
def test_both_runtime_spellings(label: str, engine: str | None) -> None:
    assert runtime_engine(label) == engine


def test_xw_cli_container_is_told_apart_from_ours() -> None:
    ours = {**XW_CLI_LABELS, "xw.runtime": "vllm-docker", "xw.chip": "ascend-910b", "xw.server_name": "host-1"}
    assert is_xw_container(XW_CLI_LABELS) and is_xw_container(ours)
    assert is_xw_cli_container(XW_CLI_LABELS, None)
    assert not is_xw_cli_container(ours, "Ab3dE9")
    assert is_xw_cli_container({**ours, "xw.server_name": "Ab3dE9"}, "Ab3dE9")  # its server.conf name
    assert not is_xw_container({"app": "other"})


def test_server_conf_name() -> None:
    text = "# XW Server Configuration\nname=Ab3dE9\nregistry=https://r\nconfig_version=v0.0.5\n"
    assert read_server_name(text) == "Ab3dE9"
    assert read_server_name("# nothing\n") is None


def test_published_port_from_a_stopped_container_config() -> None:
    attrs = {"HostConfig": {"PortBindings": {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18123"}]}}}
    assert published_port(attrs) == 18123
    assert published_port({"HostConfig": {}}) is None


@pytest.mark.parametrize(
    ("text", "read_only"),
    [
        ("/usr/local/dcmi:/usr/local/dcmi", True),  # a driver directory: read-only without a mode
        ("/usr/local:/usr/local", True),
        ("/root/.cache:/root/.cache", False),  # a cache directory stays writable
        ("/data/hf_cache:/hf_cache", False),
        ("/root/.cache:/root/.cache:ro", True),  # an explicit mode always wins
        ("/var/log/npu:/var/log/npu:rw", False),
    ],
)
def test_one_read_only_rule(text: str, read_only: bool) -> None:
    assert volume_read_only(VolumeSpec.parse(text)) is read_only


def test_cache_dir() -> None:
    assert is_cache_dir("/root/.cache/huggingface") and not is_cache_dir("/usr/local/Ascend")
