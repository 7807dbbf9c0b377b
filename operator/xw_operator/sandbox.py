"""Device sandboxes: how a container reaches a chip, for one engine.

Most chips are pure configuration (``ext_sandboxes`` in devices.yaml → :class:`ConfigSandbox`). Logic
that YAML cannot express lives in code sandboxes, found through the Python entry-point group
``xw_operator.sandboxes`` (:data:`ENTRY_POINT_GROUP`): a vendor ships one as its own package without
touching ours, and the shipped ones (:mod:`xw_operator.code_sandboxes`) are registered the same way in
our pyproject.toml. Selection is **config > code > a clear error**, so an administrator can always
override shipped code without a release.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from xw_operator.devices import (
    DEFAULT_SHM_GB,
    ChipModel,
    ChipRef,
    DevicesConfig,
    EngineSandbox,
    KubernetesProfile,
    VolumeSpec,
    device_index,
)
from xw_operator.errors import NoSandbox, UnknownChip
from xw_operator.plugins import load_plugins

GIB = 1024**3


@dataclass(frozen=True)
class DeviceNode:
    """A device node passed into the container (Docker ``--device host:container:rwm``)."""

    host: str
    container: str
    permissions: str = "rwm"

    def __str__(self) -> str:
        return f"{self.host}:{self.container}:{self.permissions}"


@runtime_checkable
class DeviceSandbox(Protocol):
    """The seed's sandbox interface with pythonic names; one instance serves one chip and one engine."""

    @property
    def chip_key(self) -> str: ...

    @property
    def engine(self) -> str: ...

    def supports(self, chip_key: str, engine: str) -> bool: ...

    @property
    def device_env(self) -> str | None:
        """The variable that receives the allocated indices (e.g. ASCEND_RT_VISIBLE_DEVICES)."""
        ...

    def environment(self, device_indices: Sequence[int]) -> dict[str, str]:
        """Static environment plus the device-visibility variable for these indices."""
        ...

    def device_nodes(self, device_indices: Sequence[int]) -> list[DeviceNode]: ...

    def additional_mounts(self) -> list[VolumeSpec]: ...

    def privileged(self) -> bool: ...

    def capabilities(self) -> list[str]: ...

    def default_image(self, arch: str) -> str | None: ...

    def runtime(self) -> str: ...

    def shm_size_bytes(self) -> int: ...

    def device_capacity(self) -> int | None: ...

    def kubernetes(self) -> KubernetesProfile | None: ...


def _visible(device_indices: Sequence[int]) -> str:
    return ",".join(str(i) for i in device_indices)


@dataclass(frozen=True)
class ConfigSandbox:
    """A sandbox read from ``ext_sandboxes``: the common block merged with one engine block.

    Merge rule (the seed's): devices and volumes are common + engine (appended, duplicates dropped);
    the engine's runtime overrides the common one; everything else comes from the engine block.
    """

    chip_ref: ChipRef
    engine: str
    block: EngineSandbox

    @property
    def chip_key(self) -> str:
        return self.chip_ref.key

    @property
    def chip(self) -> ChipModel:
        return self.chip_ref.chip

    def supports(self, chip_key: str, engine: str) -> bool:
        return chip_key == self.chip_key and engine == self.engine

    @property
    def device_env(self) -> str | None:
        return self.block.device_env

    def environment(self, device_indices: Sequence[int]) -> dict[str, str]:
        env = dict(self.block.environment)
        if self.block.device_env:
            env[self.block.device_env] = _visible(device_indices)
        return env

    def _device_paths(self) -> list[str]:
        common = self.chip.ext_sandboxes.devices if self.chip.ext_sandboxes else []
        return list(dict.fromkeys([*common, *self.block.devices]))

    def device_nodes(self, device_indices: Sequence[int]) -> list[DeviceNode]:
        """Indexed nodes (``/dev/davinci3``) only for allocated indices; control nodes always."""
        wanted = set(device_indices)
        return [
            DeviceNode(path, path)
            for path in self._device_paths()
            if (index := device_index(path)) is None or index in wanted
        ]

    def additional_mounts(self) -> list[VolumeSpec]:
        common = self.chip.ext_sandboxes.volumes if self.chip.ext_sandboxes else []
        merged: dict[str, VolumeSpec] = {}
        for volume in [*common, *self.block.volumes]:
            merged[volume.container] = volume  # the engine block wins for the same target
        return list(merged.values())

    def privileged(self) -> bool:
        return self.block.privileged

    def capabilities(self) -> list[str]:
        return list(dict.fromkeys(self.block.capabilities))

    def default_image(self, arch: str) -> str | None:
        return self.chip.image_for(self.engine, arch)

    def runtime(self) -> str:
        if self.block.runtime:
            return self.block.runtime
        return self.chip.ext_sandboxes.runtime if self.chip.ext_sandboxes else "runc"

    def shm_size_bytes(self) -> int:
        gb = self.block.shm_size_gb if self.block.shm_size_gb is not None else DEFAULT_SHM_GB
        return int(gb * GIB)

    def device_capacity(self) -> int | None:
        return self.chip.device_capacity

    def kubernetes(self) -> KubernetesProfile | None:
        return self.chip.kubernetes


@dataclass
class SandboxRegistry:
    """Code-based sandboxes, consulted only when devices.yaml has no block for the chip and engine."""

    sandboxes: list[DeviceSandbox] = field(default_factory=list)

    def register(self, sandbox: DeviceSandbox) -> DeviceSandbox:
        self.sandboxes.append(sandbox)
        return sandbox

    def find(self, chip_key: str, engine: str) -> DeviceSandbox | None:
        return next((s for s in self.sandboxes if s.supports(chip_key, engine)), None)

    def chip_keys(self) -> set[str]:
        return {s.chip_key for s in self.sandboxes}


ENTRY_POINT_GROUP = "xw_operator.sandboxes"


def load_registry(group: str = ENTRY_POINT_GROUP) -> SandboxRegistry:
    """Every code sandbox the installed distributions advertise under ``group``, in entry-point name order.

    An entry point names a zero-argument callable (typically the sandbox class) that returns one
    :class:`DeviceSandbox` or an iterable of them. In pyproject.toml::

        [project.entry-points."xw_operator.sandboxes"]
        acme-x1-vllm = "acme_xw.sandbox:AcmeX1Sandbox"

    A broken one is a :class:`ConfigError` naming it (an installation problem the admin must fix), raised
    only when a code sandbox is actually needed: chips configured in devices.yaml never load these.
    """
    return SandboxRegistry(load_plugins(group, DeviceSandbox, "code sandbox"))  # type: ignore[type-abstract]


@functools.cache
def default_registry() -> SandboxRegistry:
    """The installed code sandboxes, loaded once per process on first need."""
    return load_registry()


def select_sandbox(
    config: DevicesConfig,
    chip_key: str,
    engine: str,
    registry: SandboxRegistry | None = None,
) -> DeviceSandbox:
    """Config > code (``registry``, default: the installed entry points) > a ResolveError naming the
    chip, the engine and what is known."""
    ref = config.find_chip(chip_key)
    if ref is not None and ref.chip.ext_sandboxes is not None:
        block = ref.chip.ext_sandboxes.engines.get(engine)
        if block is not None:
            return ConfigSandbox(ref, engine, block)
    registry = registry if registry is not None else default_registry()
    coded = registry.find(chip_key, engine)
    if coded is not None:
        return coded
    if ref is None and chip_key not in registry.chip_keys():
        known = sorted(set(config.chip_keys) | registry.chip_keys())
        raise UnknownChip(f"unknown chip {chip_key!r} (engine {engine!r}); known chips: {', '.join(known) or 'none'}")
    engines = sorted(_engines_for(ref, chip_key, registry.sandboxes))
    raise NoSandbox(
        f"chip {chip_key!r} has no device sandbox for engine {engine!r}; "
        f"engines with a sandbox for this chip: {', '.join(engines) or 'none'}"
    )


def _engines_for(ref: ChipRef | None, chip_key: str, coded: Iterable[DeviceSandbox]) -> set[str]:
    engines = set(ref.chip.ext_sandboxes.engines) if ref and ref.chip.ext_sandboxes else set()
    return engines | {s.engine for s in coded if s.chip_key == chip_key}
