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


@pytest.fixture(scope="session")
def shipped_config() -> DevicesConfig:
    return load_devices_config(packaged_devices_config_path())


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
