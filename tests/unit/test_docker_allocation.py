"""Docker mode's pure allocation logic: sysfs grouping, held devices, index and port choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from xw_operator.devices import DevicesConfig
from xw_operator.docker_mode.allocation import (
    Holding,
    choose_indices,
    choose_port,
    find_group,
    holding_from_labels,
    parse_indices,
    used_indices,
)
from xw_operator.docker_mode.errors import RuntimeFailure
from xw_operator.docker_mode.sysfs import PciFunction, detect_chips, read_pci_functions


def _fn(address: str, device: str = "0xd802", sub: str | None = "0x3001", vendor: str = "0x19e5") -> PciFunction:
    return PciFunction(address, vendor, device, sub)


def _npu_group(config: DevicesConfig, n: int = 8):  # type: ignore[no-untyped-def]
    return detect_chips([_fn(f"0000:{0x81 + i:02x}:00.0") for i in range(n)], config)[0]


def test_detect_chips_numbers_per_chip_type_in_pci_order(shipped_config: DevicesConfig) -> None:
    functions = [
        _fn("0000:c1:00.0"),
        _fn("0000:01:00.0", device="0xd500", sub=None),  # Ascend 310P: 2 chips per function
        _fn("0000:81:00.0"),
        _fn("0000:02:00.0", device="0xd500", sub=None),
        _fn("0000:03:00.0", vendor="0x8086", device="0x1234"),  # not an accelerator in the config
    ]
    groups = {g.chip_key: g for g in detect_chips(functions, shipped_config)}
    assert set(groups) == {"ascend-910b", "ascend-310p"}
    npu = groups["ascend-910b"]
    assert [(c.index, c.pci_address) for c in npu.chips] == [(0, "0000:81:00.0"), (1, "0000:c1:00.0")]
    assert npu.variant_keys == {"ascend-910b1"}
    duo = groups["ascend-310p"]
    assert [(c.index, c.pci_address) for c in duo.chips] == [
        (0, "0000:01:00.0"),
        (1, "0000:01:00.0"),
        (2, "0000:02:00.0"),
        (3, "0000:02:00.0"),
    ]


def test_read_pci_functions_reads_ids_and_skips_incomplete_entries(tmp_path: Path) -> None:
    base = tmp_path / "bus" / "pci" / "devices"
    full, partial = base / "0000:81:00.0", base / "0000:82:00.0"
    full.mkdir(parents=True)
    partial.mkdir()
    (full / "vendor").write_text("0x19E5\n")
    (full / "device").write_text("0xd802\n")
    (full / "subsystem_device").write_text("0x3001\n")
    (partial / "vendor").write_text("0x19e5\n")
    assert read_pci_functions(tmp_path) == [PciFunction("0000:81:00.0", "0x19e5", "0xd802", "0x3001")]
    assert read_pci_functions(tmp_path / "nothing") == []


def test_holdings_from_labels_map_variants_to_their_base_chip(shipped_config: DevicesConfig) -> None:
    h = holding_from_labels(
        {"xw.instance_id": "a", "xw.chip": "ascend-910b4", "xw.device_indices": "0, 3", "xw.host_port": "18001"},
        shipped_config,
    )
    assert h == Holding("a", "ascend-910b", (0, 3), 18001)
    seed = holding_from_labels({"xw.instance_id": "old", "xw.device_indices": "5"}, shipped_config)
    assert seed.chip is None and seed.host_port is None
    assert parse_indices("1,x,2,") == (1, 2)


def test_used_indices_are_per_chip_type_and_seed_containers_block_every_type() -> None:
    holdings = [
        Holding("npu", "ascend-910b", (0, 1), None),
        Holding("duo", "ascend-310p", (0,), None),
        Holding("seed", None, (7,), None),
    ]
    assert used_indices(holdings, "ascend-910b") == {0: "npu", 1: "npu", 7: "seed"}
    assert used_indices(holdings, "ascend-310p") == {0: "duo", 7: "seed"}


def test_topology_prefers_three_plus_one_when_no_box_is_free(shipped_config: DevicesConfig) -> None:
    group = _npu_group(shipped_config)
    # Boxes {0-3} {4-7}; 0 and 5 held: 3+1 costs 3 cross-box pairs, 2+2 costs 4; lowest indices win ties.
    assert choose_indices(group, 4, {0: "a", 5: "b"}) == (1, 2, 3, 4)
    assert choose_indices(group, 4, {0: "a"}) == (4, 5, 6, 7)
    assert choose_indices(group, 2, {1: "a", 2: "a", 3: "a"}) == (4, 5)


def test_not_enough_free_devices_names_the_holders(shipped_config: DevicesConfig) -> None:
    group = _npu_group(shipped_config)
    with pytest.raises(RuntimeFailure, match=r"8 ascend-910b device\(s\) needed but 6 free of 8.*held: 0:a, 5:b"):
        choose_indices(group, 8, {0: "a", 5: "b"})


def test_explicit_indices_checked_for_conflicts_and_presence(shipped_config: DevicesConfig) -> None:
    group = _npu_group(shipped_config, n=6)
    assert choose_indices(group, 2, {0: "a"}, requested=[5, 1]) == (5, 1)
    with pytest.raises(RuntimeFailure, match=r"device\(s\) 1 \(held by a\) are in use"):
        choose_indices(group, 2, {1: "a"}, requested=[1, 2])
    with pytest.raises(RuntimeFailure, match=r"\[6, 7\] do not exist on this host's ascend-910b chips"):
        choose_indices(group, 2, {}, requested=[6, 7])


def test_find_group_variant_and_missing_chip(shipped_config: DevicesConfig) -> None:
    groups = [_npu_group(shipped_config)]  # variant 910b1 present
    assert find_group(groups, "ascend-910b", shipped_config).chip_key == "ascend-910b"
    assert find_group(groups, "ascend-910b1", shipped_config).chip_key == "ascend-910b"
    with pytest.raises(RuntimeFailure, match="this host's ascend-910b chips are ascend-910b1"):
        find_group(groups, "ascend-910b4", shipped_config)
    with pytest.raises(RuntimeFailure, match=r"no ascend-310p chips on this host \(detected in sysfs: ascend-910b x8"):
        find_group(groups, "ascend-310p", shipped_config)


def test_choose_port() -> None:
    def free(port: int) -> bool:
        return port != 18001

    assert choose_port(None, {18000: "a"}, free, (18000, 18010)) == 18002
    assert choose_port(18005, {}, free, (18000, 18010)) == 18005
    with pytest.raises(RuntimeFailure, match="host port 18000 is reserved by instance a"):
        choose_port(18000, {18000: "a"}, free)
    with pytest.raises(RuntimeFailure, match=r"host port 18001 on 127\.0\.0\.1 is in use by another process"):
        choose_port(18001, {}, free)
    with pytest.raises(RuntimeFailure, match="no free host port in 18000-18001"):
        choose_port(None, {18000: "a"}, free, (18000, 18001))
