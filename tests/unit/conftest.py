"""Fixtures shared by the unit tests: the seed and shipped configs, and the instance builder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import builders
from xw_operator.devices import DevicesConfig, load_devices_config, packaged_devices_config_path
from xw_operator.settings import settings


@pytest.fixture(autouse=True)
def fresh_settings() -> None:
    """Settings are read once per process; a test that sets XW_* variables must see them."""
    settings.cache_clear()


@pytest.fixture(scope="session")
def seed_config() -> DevicesConfig:
    return load_devices_config(builders.SEED_DEVICES)


# Directories the unit tests' hostPath model sources use (/data/models/demo, /m, /models/m1).
TEST_MODEL_DIRS = ["/data", "/m", "/models"]


def allow_test_model_dirs(config: DevicesConfig) -> DevicesConfig:
    """``config`` with an administrator allowing hostPath models under TEST_MODEL_DIRS: the shipped file
    allows none on Kubernetes (safe default), and most tests are about other things."""
    policy = config.policy.model_copy(update={"model_host_path_prefixes": TEST_MODEL_DIRS})
    return config.model_copy(update={"policy": policy})


@pytest.fixture(scope="session")
def shipped_config_as_is() -> DevicesConfig:
    return load_devices_config(packaged_devices_config_path())


@pytest.fixture(scope="session")
def shipped_config(shipped_config_as_is: DevicesConfig) -> DevicesConfig:
    """The shipped devices.yaml plus hostPath models allowed under TEST_MODEL_DIRS."""
    return allow_test_model_dirs(shipped_config_as_is)


@pytest.fixture
def test_devices_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped devices.yaml with TEST_MODEL_DIRS allowed, as a file the CLI reads (XW_DEVICES_CONFIG)."""
    data = builders.devices_doc()
    data["policy"]["model_host_path_prefixes"] = TEST_MODEL_DIRS
    path = tmp_path / "devices.yaml"
    path.write_text(builders.devices_text(data), encoding="utf-8")
    monkeypatch.setenv("XW_DEVICES_CONFIG", str(path))
    return path


@pytest.fixture
def make_instance() -> Any:
    """Factory: ``make_instance(chip, count, engine={...}, source={...}, replicas=2, ...)`` (builders.instance)."""
    return builders.instance
