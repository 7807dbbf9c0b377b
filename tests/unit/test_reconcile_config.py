"""devices.yaml reload: the last good version stays in force, changes are reported per chip profile."""

from __future__ import annotations

from pathlib import Path

import pytest

import builders
from xw_operator.devices import packaged_devices_config_path
from xw_operator.errors import ConfigError
from xw_operator.k8s.config_source import (
    Change,
    ConfigStore,
    FileSource,
    Snapshot,
    changed_chips,
    parse_configmap_reference,
)

SHIPPED = packaged_devices_config_path().read_text(encoding="utf-8")


@pytest.fixture
def devices_file(tmp_path: Path) -> Path:
    path = tmp_path / "devices.yaml"
    path.write_text(SHIPPED, encoding="utf-8")
    return path


def with_nvidia_shm(gb: int) -> str:
    """The shipped devices.yaml with the nvidia-t4 vLLM sandbox's shm size changed."""
    data = builders.devices_doc()
    builders.chip_doc(data, "nvidia-t4")["ext_sandboxes"]["vllm"]["shm_size_gb"] = gb
    return builders.devices_text(data)


def test_unchanged_file_reports_nothing(devices_file: Path) -> None:
    store = ConfigStore(FileSource(devices_file))
    assert store.poll() is None


def test_changing_one_chip_profile_names_only_that_chip(devices_file: Path) -> None:
    store = ConfigStore(FileSource(devices_file))
    devices_file.write_text(with_nvidia_shm(64), encoding="utf-8")
    change = store.poll()
    assert isinstance(change, Change)
    assert change.chips == {"nvidia-t4"}
    assert store.current.find_chip("nvidia-t4").chip.ext_sandboxes.engines["vllm"].shm_size_gb == 64  # type: ignore[union-attr]
    assert store.state.reloads == 1
    assert store.poll() is None


def test_invalid_new_version_is_refused_once_and_the_last_good_stays(devices_file: Path) -> None:
    store = ConfigStore(FileSource(devices_file))
    good = store.current
    data = builders.devices_doc()
    builders.chip_doc(data, "nvidia-t4")["ext_sandboxes"]["vllm"]["shm_size_gb"] = "lots"
    devices_file.write_text(builders.devices_text(data), encoding="utf-8")
    refused = store.poll()
    assert isinstance(refused, ConfigError)
    assert "shm_size_gb" in str(refused)
    assert store.current is good
    assert store.state.last_error is not None
    assert store.poll() is None  # reported once, not on every poll
    devices_file.write_text(SHIPPED, encoding="utf-8")
    assert store.poll() is None  # back to the version in force: nothing to re-render
    assert store.state.last_error is None


def test_unreadable_file_is_refused(devices_file: Path) -> None:
    store = ConfigStore(FileSource(devices_file))
    devices_file.unlink()
    assert isinstance(store.poll(), ConfigError)
    assert store.current.find_chip("ascend-910b") is not None


class MemoryLastGood:
    """In-memory stand-in for LastGoodStore (same two methods; the ConfigMap one is tested in tests/k8s)."""

    description = "memory"

    def __init__(self) -> None:
        self.stored: Snapshot | None = None
        self.saves = 0

    def load(self) -> Snapshot | None:
        return self.stored

    def save(self, snapshot: Snapshot) -> None:
        if self.stored is None or self.stored.digest != snapshot.digest:
            self.stored = snapshot
            self.saves += 1


def test_invalid_config_at_startup_without_a_last_good_one_reconciles_nothing(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text("version: 1\nvendors: [{vendor_name: x}]\n", encoding="utf-8")
    store = ConfigStore(FileSource(path))  # no exception: the operator stays up
    assert not store.ready
    assert isinstance(store.startup_error, ConfigError)
    health = store.health()
    assert health["inForce"] == "none" and health["reconciling"] is False and "vendor_id" in health["why"]
    assert store.poll() is None  # the start-up refusal is reported once, by the runner
    path.write_text(SHIPPED, encoding="utf-8")
    change = store.poll()
    assert isinstance(change, Change) and change.everything and change.old is None
    assert store.ready and store.health()["inForce"] == "source"


def test_invalid_config_at_startup_runs_on_the_persisted_last_good_one(devices_file: Path) -> None:
    last_good = MemoryLastGood()
    first = ConfigStore(FileSource(devices_file), last_good)  # type: ignore[arg-type]
    assert last_good.saves == 1
    ConfigStore(FileSource(devices_file), last_good)  # type: ignore[arg-type]
    assert last_good.saves == 1  # an unchanged version is not written again
    devices_file.write_text(SHIPPED.replace("shm_size_gb: 32", "shm_size_gb: lots"), encoding="utf-8")
    store = ConfigStore(FileSource(devices_file), last_good)  # type: ignore[arg-type]
    assert store.ready and store.state.in_force == "last-good"
    assert store.state.digest == first.state.digest
    assert "shm_size_gb" in (store.state.last_error or "")
    assert store.current.find_chip("nvidia-t4") is not None
    devices_file.write_text(SHIPPED, encoding="utf-8")
    assert store.poll() is None  # the fixed file is the last good one: nothing to re-render
    assert store.state.in_force == "source" and store.state.last_error is None


def test_removed_and_added_chips_count_as_changed(devices_file: Path) -> None:
    store = ConfigStore(FileSource(devices_file))
    old = store.current
    data = builders.devices_doc()
    builders.chip_doc(data, "nvidia-t4")["config_key"] = "nvidia-t4x"
    devices_file.write_text(builders.devices_text(data), encoding="utf-8")
    change = store.poll()
    assert isinstance(change, Change)
    assert changed_chips(old, change.new) == {"nvidia-t4", "nvidia-t4x"}


@pytest.mark.parametrize("ref", ["name-only", "/x", "ns/", "a/b/c"])
def test_configmap_reference_must_be_namespace_slash_name(ref: str) -> None:
    with pytest.raises(ConfigError):
        parse_configmap_reference(ref)


RECIPES = packaged_devices_config_path().parent


def test_recipe_files_beside_the_file_are_loaded_and_reloaded(devices_file: Path) -> None:
    for name in ("models.yaml", "runtime_params.yaml"):
        (devices_file.parent / name).write_text((RECIPES / name).read_text(encoding="utf-8"), encoding="utf-8")
    store = ConfigStore(FileSource(devices_file))
    assert store.current.recipes.model("qwen3-8b") is not None
    models = devices_file.parent / "models.yaml"
    models.write_text(models.read_text(encoding="utf-8").replace("model_id: qwen3-8b", "model_id: qwen3-8b-x"))
    change = store.poll()
    assert isinstance(change, Change)
    assert change.chips == set(store.current.chip_keys)  # recipes apply across chips: every instance re-renders
    assert store.current.recipes.model("qwen3-8b-x") is not None
    models.write_text("version: '1'\nmodels: []\n")
    refused = store.poll()
    assert isinstance(refused, ConfigError) and "models.yaml: models: List should have at least 1 item" in str(refused)
    assert store.current.recipes.model("qwen3-8b-x") is not None  # the last good version stays


def test_engine_definitions_change_every_chip(devices_file: Path) -> None:
    store = ConfigStore(FileSource(devices_file))
    devices_file.write_text(SHIPPED + "engines:\n  vllm:\n    command: [my-vllm]\n", encoding="utf-8")
    change = store.poll()
    assert isinstance(change, Change) and change.chips == set(store.current.chip_keys)
    assert store.current.engines["vllm"].command == ["my-vllm"]
