"""Accelerator discovery from sysfs: PCI functions matched against devices.yaml.

Reading the files is the only I/O; grouping and index assignment are pure so they can be tested with
plain data. Indices are per chip type (the seed mixed them with positions in one global list when a host
had two chip types): PCI functions of one chip model, sorted by PCI address, get consecutive logical
indices, ``chips_per_device`` of them each (an Ascend 310P duo card is one function with two chips).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from xw_operator.devices import ChipRef, DevicesConfig
from xw_operator.settings import settings


@dataclass(frozen=True)
class PciFunction:
    address: str
    vendor: str
    device: str
    subsystem_device: str | None


@dataclass(frozen=True)
class DetectedChip:
    """One logical chip on the host."""

    chip_key: str  # base config_key: indices are counted per chip model
    variant_key: str | None
    index: int
    pci_address: str


@dataclass(frozen=True)
class ChipGroup:
    """All chips of one chip model on the host."""

    chip_key: str
    model_name: str
    ref: ChipRef  # the base model
    chips: tuple[DetectedChip, ...]

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(c.index for c in self.chips)

    @property
    def variant_keys(self) -> set[str]:
        return {c.variant_key for c in self.chips if c.variant_key}


def sysfs_root() -> Path:
    return settings().sysfs_root


def _read_id(path: Path) -> str | None:
    try:
        return path.read_text().strip().lower() or None
    except OSError:
        return None


def read_pci_functions(root: Path) -> list[PciFunction]:
    """Every PCI function under ``<root>/bus/pci/devices`` that has vendor and device ids."""
    base = root / "bus" / "pci" / "devices"
    try:
        entries = sorted(os.listdir(base))
    except FileNotFoundError:
        return []
    functions = []
    for address in entries:
        vendor, device = _read_id(base / address / "vendor"), _read_id(base / address / "device")
        if vendor and device:
            functions.append(PciFunction(address, vendor, device, _read_id(base / address / "subsystem_device")))
    return functions


def detect_chips(functions: list[PciFunction], config: DevicesConfig) -> list[ChipGroup]:
    """Group matching functions by chip model and number their chips 0..N-1 per model."""
    matched: dict[str, list[tuple[PciFunction, ChipRef]]] = {}
    for fn in sorted(functions, key=lambda f: f.address):
        ref = config.match_pci(fn.vendor, fn.device, fn.subsystem_device)
        if ref is not None:
            matched.setdefault(ref.chip.config_key, []).append((fn, ref))
    groups = []
    for key, items in sorted(matched.items()):
        base = items[0][1]
        per = base.chip.chips_per_device
        chips = tuple(
            DetectedChip(key, ref.variant.variant_key if ref.variant else None, n * per + k, fn.address)
            for n, (fn, ref) in enumerate(items)
            for k in range(per)
        )
        groups.append(ChipGroup(key, base.chip.model_name, ChipRef(base.vendor, base.chip), chips))
    return groups


def discover(config: DevicesConfig, root: Path | None = None) -> list[ChipGroup]:
    return detect_chips(read_pci_functions(root or sysfs_root()), config)
