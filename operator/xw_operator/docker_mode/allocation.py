"""Device and port allocation: pure choices over what the containers' labels say is in use.

Every xw container -- created, running, stopped or exited -- holds the devices in its
``xw.device_indices`` label until it is removed; counting only *running* containers (the seed's rule) let
two starts that overlapped during an image pull share devices. The runtime calls these functions under
the host lock, between listing containers and creating the new one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from xw_operator.devices import DevicesConfig
from xw_operator.render_docker import LABEL_CHIP, LABEL_DEVICE_INDICES, LABEL_HOST_PORT, LABEL_INSTANCE_ID
from xw_operator.settings import DEFAULT_PORT_RANGE
from xw_operator.topology import best_indices

from .errors import RuntimeFailure
from .sysfs import ChipGroup


@dataclass(frozen=True)
class Holding:
    """What one existing container holds, read from its labels."""

    instance: str
    chip: str | None  # base config_key; None for seed containers without an xw.chip label
    indices: tuple[int, ...]
    host_port: int | None


def parse_indices(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    out = []
    for part in text.split(","):
        part = part.strip()
        if part.isdigit():
            out.append(int(part))
    return tuple(out)


def holding_from_labels(labels: Mapping[str, str], config: DevicesConfig) -> Holding:
    chip_label = labels.get(LABEL_CHIP)
    ref = config.find_chip(chip_label) if chip_label else None
    port = labels.get(LABEL_HOST_PORT, "")
    return Holding(
        instance=labels.get(LABEL_INSTANCE_ID, "?"),
        # A chip key the config no longer knows still blocks indices of that name.
        chip=ref.chip.config_key if ref else chip_label,
        indices=parse_indices(labels.get(LABEL_DEVICE_INDICES)),
        host_port=int(port) if port.isdigit() else None,
    )


def used_indices(holdings: Iterable[Holding], chip_key: str) -> dict[int, str]:
    """index → holding instance, for one chip model.

    A container without an ``xw.chip`` label (made by the seed) cannot say which chip type its indices
    belong to, so it conservatively blocks those indices on every chip type.
    """
    used: dict[int, str] = {}
    for h in holdings:
        if h.chip is None or h.chip == chip_key:
            for i in h.indices:
                used.setdefault(i, h.instance)
    return used


def find_group(groups: Sequence[ChipGroup], requested_chip: str, config: DevicesConfig) -> ChipGroup:
    """The detected group a ModelInstance's ``spec.devices.chip`` refers to.

    A base key accepts any variant of the model; a variant key requires that variant on the host.
    """
    ref = config.find_chip(requested_chip)
    if ref is None:
        raise RuntimeFailure("device allocation", f"chip {requested_chip!r} is not in devices.yaml")
    found = ", ".join(f"{g.chip_key} x{len(g.chips)}" for g in groups) or "none"
    group = next((g for g in groups if g.chip_key == ref.chip.config_key), None)
    if group is None:
        raise RuntimeFailure(
            "device allocation",
            f"no {requested_chip} chips on this host (detected in sysfs: {found}; see `xw devices`)",
        )
    if ref.variant is not None and ref.variant.variant_key not in group.variant_keys:
        raise RuntimeFailure(
            "device allocation",
            f"chip {requested_chip} requested but this host's {group.chip_key} chips are "
            f"{', '.join(sorted(group.variant_keys)) or 'the base model'}",
        )
    return group


def choose_indices(
    group: ChipGroup,
    count: int,
    used: Mapping[int, str],
    requested: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """Explicit indices after checking them, else the free set with the smallest topology distance."""
    present = set(group.indices)
    if requested is not None:
        missing = sorted(set(requested) - present)
        if missing:
            raise RuntimeFailure(
                "device allocation",
                f"spec.devices.indices {missing} do not exist on this host's {group.chip_key} chips "
                f"(present: {', '.join(map(str, sorted(present)))})",
            )
        busy = {i: used[i] for i in requested if i in used}
        if busy:
            held = ", ".join(f"{i} (held by {inst})" for i, inst in sorted(busy.items()))
            raise RuntimeFailure("device allocation", f"{group.chip_key} device(s) {held} are in use")
        return tuple(requested)
    free = sorted(present - set(used))
    if len(free) < count:
        held = ", ".join(f"{i}:{inst}" for i, inst in sorted(used.items()) if i in present) or "none"
        raise RuntimeFailure(
            "device allocation",
            f"{count} {group.chip_key} device(s) needed but {len(free)} free of {len(present)} "
            f"(free: {', '.join(map(str, free)) or 'none'}; held: {held})",
        )
    return best_indices(group.ref.chip, count, taken=used.keys(), available=present)


def choose_port(
    requested: int | None,
    used: Mapping[int, str],
    bindable: Callable[[int], bool],
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE,
) -> int:
    """``requested`` when free (else a clear error), otherwise the lowest free port of the range.

    ``used`` holds ports reserved by xw containers (any state: a created container has not bound its port
    yet); ``bindable`` checks that no other process holds the port right now.
    """
    if requested is not None:
        if requested in used:
            raise RuntimeFailure("port allocation", f"host port {requested} is reserved by instance {used[requested]}")
        if not bindable(requested):
            raise RuntimeFailure("port allocation", f"host port {requested} on 127.0.0.1 is in use by another process")
        return requested
    low, high = port_range
    for port in range(low, high + 1):
        if port not in used and bindable(port):
            return port
    raise RuntimeFailure("port allocation", f"no free host port in {low}-{high} (set XW_PORT_RANGE or spec.port)")
