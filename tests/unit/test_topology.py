"""Topology-aware index choice: smallest total pairwise distance, lowest indices on ties."""

from __future__ import annotations

from xw_operator.devices import DevicesConfig
from xw_operator.topology import best_indices, box_of, distance, total_distance


def chip(config: DevicesConfig, key: str):  # type: ignore[no-untyped-def]
    ref = config.find_chip(key)
    assert ref is not None
    return ref.chip


def test_distance_definition(shipped_config: DevicesConfig) -> None:
    boxes = box_of(chip(shipped_config, "ascend-910c"))
    assert distance(boxes, 0, 3) == 0
    assert distance(boxes, 0, 4) == 1
    assert distance(boxes, 1, 13) == 3


def test_empty_host_gets_first_box(shipped_config: DevicesConfig) -> None:
    assert best_indices(chip(shipped_config, "ascend-910b"), 4) == (0, 1, 2, 3)


def test_prefers_a_whole_free_box(shipped_config: DevicesConfig) -> None:
    assert best_indices(chip(shipped_config, "ascend-910b"), 4, taken={0}) == (4, 5, 6, 7)


def test_no_whole_box_free_minimises_distance(shipped_config: DevicesConfig) -> None:
    c = chip(shipped_config, "ascend-910b")
    chosen = best_indices(c, 4, taken={0, 5})
    # Any 4 of the 6 free chips spans both boxes; 3+1 costs 3, 2+2 costs 4.
    assert total_distance(box_of(c), chosen) == 3
    assert chosen == (1, 2, 3, 4)


def test_pairs_stay_on_one_card(shipped_config: DevicesConfig) -> None:
    assert best_indices(chip(shipped_config, "ascend-310p"), 2, taken={0, 3}) == (4, 5)


def test_available_restricts_to_discovered_indices(shipped_config: DevicesConfig) -> None:
    assert best_indices(chip(shipped_config, "ascend-910b"), 2, available=[2, 5, 6]) == (5, 6)


def test_large_host_uses_greedy_but_stays_in_boxes(shipped_config: DevicesConfig) -> None:
    c = chip(shipped_config, "ascend-910c")
    chosen = best_indices(c, 8, taken={0})
    assert len(chosen) == 8 and 0 not in chosen
    assert total_distance(box_of(c), chosen) == 16  # two whole neighbouring boxes


def test_chip_without_topology_takes_lowest(shipped_config: DevicesConfig) -> None:
    assert best_indices(chip(shipped_config, "metax-c550"), 3, taken={1}) == (0, 2, 3)
