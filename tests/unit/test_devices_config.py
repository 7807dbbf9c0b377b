"""devices.yaml loading: the seed's files load unchanged; bad files fail with the field path."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import builders
from xw_operator.devices import (
    DevicesConfig,
    VolumeSpec,
    device_index,
    load_devices_config,
    parse_devices_config,
)
from xw_operator.errors import ConfigError


def seed_dict() -> dict[str, Any]:
    return builders.devices_doc(builders.SEED_DEVICES)


def reject(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_devices_config(yaml.safe_dump(data), source="cfg.yaml")
    return str(exc.value)


def test_seed_format_file_loads_unchanged(seed_config: DevicesConfig) -> None:
    assert seed_config.version == "1.0"
    assert seed_config.chip_keys == [
        "ascend-310p",
        "ascend-910-legacy",
        "ascend-910b",
        "ascend-910b1",
        "ascend-910b4",
        "metax-c550",
    ]


def test_variant_key_resolves_to_base_model(seed_config: DevicesConfig) -> None:
    ref = seed_config.find_chip("ascend-910b4")
    assert ref is not None and ref.variant is not None
    assert ref.chip.config_key == "ascend-910b"
    assert ref.variant.variant_name == "910B4"
    assert ref.key == "ascend-910b4"


def test_chips_per_device_and_topology(seed_config: DevicesConfig) -> None:
    chip = seed_config.find_chip("ascend-310p")
    assert chip is not None
    assert chip.chip.chips_per_device == 2
    assert chip.chip.device_capacity == 4  # two boxes of two chips


def test_none_image_is_no_image(seed_config: DevicesConfig) -> None:
    chip = seed_config.find_chip("ascend-910b")
    assert chip is not None
    assert chip.chip.image_for("vllm", "amd64") is None
    assert chip.chip.image_for("vllm", "arm64") == "example.org/vllm-ascend:arm64"


def test_volume_mode_is_kept_as_written(seed_config: DevicesConfig) -> None:
    ref = seed_config.find_chip("ascend-910b")
    assert ref is not None and ref.chip.ext_sandboxes is not None
    vols = {v.container: v.read_only for v in ref.chip.ext_sandboxes.volumes}
    assert vols["/usr/local/Ascend/driver/lib64/"] is True
    assert vols["/usr/local/dcmi"] is None  # no mode: xw_operator.mounts decides (read-only, not a cache)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/a:/b:ro", VolumeSpec("/a", "/b", True)),
        ("/a:/b:rw", VolumeSpec("/a", "/b", False)),
        ("/a:/b", VolumeSpec("/a", "/b", None)),
        ("/a", VolumeSpec("/a", "/a", None)),
    ],
)
def test_volume_notation(text: str, expected: VolumeSpec) -> None:
    assert VolumeSpec.parse(text) == expected


@pytest.mark.parametrize("text", ["/a:/b:rx", "a:/b", "/a:/b:ro:x"])
def test_bad_volume_notation(text: str) -> None:
    with pytest.raises(ValueError):
        VolumeSpec.parse(text)


def test_float_shm_and_numeric_env_values(seed_config: DevicesConfig) -> None:
    ref = seed_config.find_chip("ascend-910b")
    assert ref is not None and ref.chip.ext_sandboxes is not None
    engines = ref.chip.ext_sandboxes.engines
    assert engines["mindie"].shm_size_gb == 0.5
    assert engines["vllm"].environment["ASCEND_GLOBAL_LOG_LEVEL"] == "3"


def test_engine_blocks_are_open_ended(seed_config: DevicesConfig) -> None:
    ref = seed_config.find_chip("ascend-310p")
    assert ref is not None and ref.chip.ext_sandboxes is not None
    assert sorted(ref.chip.ext_sandboxes.engines) == ["mlguider", "vllm"]


def test_legacy_chip_level_subsystem_id_matches_pci(seed_config: DevicesConfig) -> None:
    ref = seed_config.match_pci("0x19e5", "0xd801", "0x0001")
    assert ref is not None and ref.chip.config_key == "ascend-910-legacy"
    assert seed_config.match_pci("0x19e5", "0xd801", "0x0002") is None


def test_pci_match_prefers_variant_then_base(seed_config: DevicesConfig) -> None:
    variant = seed_config.match_pci("0x19E5", "0xD802", "0x4000")
    base = seed_config.match_pci("0x19e5", "0xd802", "0x9999")
    assert variant is not None and variant.key == "ascend-910b4"
    assert base is not None and base.key == "ascend-910b"
    assert seed_config.match_pci("0x10de", "0xd802", None) is None


def test_device_index_of_paths() -> None:
    assert device_index("/dev/davinci3") == 3
    assert device_index("/dev/nvidia12") == 12
    assert device_index("/dev/davinci_manager") is None
    assert device_index("/dev/dri") is None


def test_error_names_file_and_field_path() -> None:
    data = seed_dict()
    data["vendors"][0]["chip_models"][0]["ext_sandboxes"]["vllm"]["shm_size_gb"] = "lots"
    message = reject(data)
    assert message.startswith("cfg.yaml: ")
    assert "vendors[0].chip_models[0].ext_sandboxes.vllm.shm_size_gb" in message
    assert "valid number" in message


def test_unknown_key_is_an_error() -> None:
    data = seed_dict()
    data["vendors"][0]["chip_models"][0]["ext_sandboxes"]["vllm"]["privilaged"] = True
    message = reject(data)
    assert "vendors[0].chip_models[0].ext_sandboxes.vllm.privilaged" in message
    assert "unknown field" in message


def test_unknown_top_level_chip_key_is_an_error() -> None:
    data = seed_dict()
    data["vendors"][1]["chip_models"][0]["runtime_image"] = {}
    assert "vendors[1].chip_models[0].runtime_image: unknown field" in reject(data)


def test_non_mapping_unknown_sandbox_key_is_an_error() -> None:
    data = seed_dict()
    data["vendors"][0]["chip_models"][0]["ext_sandboxes"]["shm"] = 4
    assert "unknown key 'shm'" in reject(data)


def test_duplicate_config_key_is_an_error() -> None:
    data = seed_dict()
    dup = copy.deepcopy(data["vendors"][1]["chip_models"][0])
    dup["config_key"] = "ascend-910b"
    data["vendors"][1]["chip_models"].append(dup)
    message = reject(data)
    assert "'ascend-910b' is already defined at vendors[0].chip_models[0].config_key" in message


def test_duplicate_variant_key_is_an_error() -> None:
    data = seed_dict()
    data["vendors"][0]["chip_models"][1]["variants"] = [
        {"subsystem_device_id": "0x1", "variant_key": "ascend-910b4", "variant_name": "x"}
    ]
    assert "'ascend-910b4' is already defined" in reject(data)


def test_decimal_id_is_explained() -> None:
    data = seed_dict()
    data["vendors"][0]["vendor_id"] = 6629
    assert 'vendors[0].vendor_id: expected a hex id such as "0x19e5", got 6629' in reject(data)


def test_unquoted_hex_ids_and_missing_variant_name_load_like_xw_cli() -> None:
    """xw-cli accepts ``device_id: 0xD802`` (an int to YAML) and variants without a display name."""
    text = yaml.safe_dump(seed_dict(), sort_keys=False)
    text = re.sub(r"device_id: '(0x[0-9a-f]+)'", lambda m: f"device_id: {m.group(1).upper().replace('X', 'x')}", text)
    text = re.sub(r"\n\s*variant_name: [^\n]+", "", text)
    assert "device_id: 0xD802" in text and "variant_name" not in text
    config = parse_devices_config(text)
    chip = config.vendors[0].chip_models[0]
    assert chip.device_id == "0xd802"
    assert chip.variants and all(v.variant_name is None for v in chip.variants)


def test_chip_in_two_boxes_is_an_error() -> None:
    data = seed_dict()
    data["vendors"][0]["chip_models"][0]["topology"]["boxes"][1]["devices"] = [3, 4]
    assert "boxes[1] repeats device(s) [3]" in reject(data)


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "devices.yaml"
    bad.write_text("version: '1'\nvendors:\n  - vendor_name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"devices.yaml: line \d+ is not valid YAML"):
        load_devices_config(bad)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read devices config"):
        load_devices_config(tmp_path / "nope.yaml")


def test_shipped_profiles_load(shipped_config: DevicesConfig) -> None:
    for key in ("ascend-910b", "ascend-910c", "ascend-310p", "metax-c550", "intel-gpu", "nvidia-t4"):
        ref = shipped_config.find_chip(key)
        assert ref is not None, key
        assert ref.chip.kubernetes is not None and ref.chip.kubernetes.resource_name, key
    resources = {
        k: shipped_config.find_chip(k).chip.kubernetes.resource_name
        for k in ("ascend-910b", "ascend-310p", "nvidia-t4", "metax-c550")
    }  # type: ignore[union-attr]
    assert resources == {
        "ascend-910b": "huawei.com/Ascend910",
        "ascend-310p": "huawei.com/Ascend310P",
        "nvidia-t4": "nvidia.com/gpu",
        "metax-c550": "metax-tech.com/gpu",
    }


def test_dumped_config_validates_again(shipped_config: DevicesConfig) -> None:
    again = DevicesConfig.model_validate(shipped_config.model_dump())
    assert again.with_recipes(shipped_config.recipes) == shipped_config
