"""Helpers shared by the unit tests: build configs and instances from small dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from xw_operator.devices import DevicesConfig, load_devices_config, packaged_devices_config_path
from xw_operator.instance import ModelInstance, parse_instance

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture(scope="session")
def seed_config() -> DevicesConfig:
    return load_devices_config(FIXTURES / "seed-devices.yaml")


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
    text = packaged_devices_config_path().read_text(encoding="utf-8")
    allowed = "model_host_path_prefixes: [" + ", ".join(TEST_MODEL_DIRS) + "]"
    assert "model_host_path_prefixes: []" in text
    path = tmp_path / "devices.yaml"
    path.write_text(text.replace("model_host_path_prefixes: []", allowed), encoding="utf-8")
    monkeypatch.setenv("XW_DEVICES_CONFIG", str(path))
    return path


def _make_instance(
    chip: str = "ascend-910b",
    count: int = 4,
    *,
    name: str = "demo",
    engine: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
    **spec: Any,
) -> ModelInstance:
    devices: dict[str, Any] = {"chip": chip, "count": count}
    if "indices" in spec:
        devices["indices"] = spec.pop("indices")
    return parse_instance(
        {
            "apiVersion": "xw.dev/v1alpha1",
            "kind": "ModelInstance",
            "metadata": {"name": name},
            "spec": {
                "model": {"source": source or {"hostPath": "/data/models/demo"}},
                "engine": engine or {"name": "vllm"},
                "devices": devices,
                **spec,
            },
        }
    )


@pytest.fixture
def make_instance() -> Any:
    """Factory: ``make_instance(chip, count, engine={...}, source={...}, replicas=2, ...)``."""
    return _make_instance
