"""Topology-aware choice of chip indices.

Chips in the same ``topology.boxes`` entry share a fast interconnect: distance 0. Chips in different boxes
are ``|box_a - box_b|`` apart (the seed's definition). Among the free chips we pick the set with the
smallest total pairwise distance; ties go to the lowest indices so the choice is deterministic.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

from xw_operator.devices import ChipModel
from xw_operator.errors import ResolveError

# Above this many candidate sets the exhaustive search would be slow; a box-greedy choice is used instead.
_EXHAUSTIVE_LIMIT = 50_000
# Per-box count vectors grow quickly with the number of boxes; beyond this, fall back to greedy.
_MAX_BOXES_ENUMERATED = 12


def box_of(chip: ChipModel) -> dict[int, int]:
    """Map chip index → box number; chips not listed in any box get no entry."""
    boxes = chip.topology.boxes if chip.topology else []
    return {index: b for b, box in enumerate(boxes) for index in box.devices}


def distance(boxes: dict[int, int], a: int, b: int) -> int:
    if a == b:
        return 0
    if a not in boxes or b not in boxes:
        # Unknown placement: as far as the farthest known pair, so known-close sets are preferred.
        return max(boxes.values(), default=0) + 1
    return abs(boxes[a] - boxes[b])


def total_distance(boxes: dict[int, int], indices: Sequence[int]) -> int:
    return sum(distance(boxes, a, b) for a, b in itertools.combinations(indices, 2))


def all_indices(chip: ChipModel) -> list[int]:
    capacity = chip.device_capacity
    if capacity is None:
        raise ResolveError(
            f"chip {chip.config_key}: cannot tell how many chips a host has; set topology.boxes or max_devices"
        )
    listed = sorted(box_of(chip))
    return listed if len(listed) == capacity else list(range(capacity))


def best_indices(
    chip: ChipModel,
    count: int,
    taken: Iterable[int] = (),
    available: Iterable[int] | None = None,
) -> tuple[int, ...]:
    """Choose ``count`` free chip indices with the smallest total pairwise distance.

    ``available`` restricts candidates to what a host actually has (Docker mode passes the discovered
    indices); by default every index the chip profile describes is a candidate. The caller guarantees
    that at least ``count`` candidates are free: :func:`xw_operator.plan.check_devices` checks the count
    against the chip, Docker's ``choose_indices`` against the free chips (with who holds the others).
    """
    candidates = sorted(set(all_indices(chip) if available is None else available) - set(taken))
    boxes = box_of(chip)
    if not boxes:
        return tuple(candidates[:count])
    if all(i in boxes for i in candidates) and len({boxes[i] for i in candidates}) <= _MAX_BOXES_ENUMERATED:
        return _by_box_counts(boxes, candidates, count)
    if math.comb(len(candidates), count) <= _EXHAUSTIVE_LIMIT:
        # combinations() yields in lexicographic order, so min() keeps the lowest indices on ties.
        best = min(itertools.combinations(candidates, count), key=lambda s: total_distance(boxes, s))
        return tuple(best)
    return _greedy(boxes, candidates, count)


def _by_box_counts(boxes: dict[int, int], candidates: list[int], count: int) -> tuple[int, ...]:
    """Exact and fast: the cost depends only on how many chips come from each box.

    Enumerating per-box counts (a handful of vectors) replaces enumerating index sets (12,870 for
    8 of 16), and taking the lowest free indices inside each box keeps ties deterministic.
    """
    free: dict[int, list[int]] = {}
    for index in candidates:
        free.setdefault(boxes[index], []).append(index)
    box_ids = sorted(free)
    best: tuple[int, tuple[int, ...]] | None = None

    def visit(position: int, remaining: int, counts: list[int]) -> None:
        nonlocal best
        if position == len(box_ids):
            if remaining:
                return
            cost = sum(
                counts[a] * counts[b] * abs(box_ids[a] - box_ids[b])
                for a, b in itertools.combinations(range(len(box_ids)), 2)
            )
            chosen = tuple(sorted(i for b, c in zip(box_ids, counts, strict=True) for i in free[b][:c]))
            if best is None or (cost, chosen) < best:
                best = (cost, chosen)
            return
        for take in range(min(remaining, len(free[box_ids[position]])), -1, -1):
            visit(position + 1, remaining - take, [*counts, take])

    visit(0, count, [])
    assert best is not None  # candidates >= count guarantees a complete vector
    return best[1]


def _greedy(boxes: dict[int, int], candidates: list[int], count: int) -> tuple[int, ...]:
    """For large hosts: start from the fullest box and grow towards the nearest chips."""
    by_box: dict[int, list[int]] = {}
    for index in candidates:
        by_box.setdefault(boxes.get(index, -1), []).append(index)
    start = max(by_box, key=lambda b: (len(by_box[b]), -b))
    chosen = by_box[start][:count]
    rest = [i for i in candidates if i not in chosen]
    while len(chosen) < count:
        nxt = min(rest, key=lambda i: (sum(distance(boxes, i, c) for c in chosen), i))
        chosen.append(nxt)
        rest.remove(nxt)
    return tuple(sorted(chosen))
