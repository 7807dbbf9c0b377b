"""Shipped code-based sandboxes: for chips whose access YAML cannot describe.

The worked example is Cambricon MLU: its per-chip nodes are ``/dev/cambricon_devN`` *and*
``/dev/cambricon_ipcmN``, so the node list is computed from the allocated indices rather than listed.
A devices.yaml entry with an engine block for the same chip replaces this sandbox entirely.

Registered like any vendor's sandbox: an entry point in the ``xw_operator.sandboxes`` group
(pyproject.toml), so this module imports :mod:`xw_operator.sandbox` and never the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xw_operator.devices import KubernetesProfile, VolumeSpec
from xw_operator.sandbox import GIB, DeviceNode


@dataclass(frozen=True)
class CambriconMluSandbox:
    """vLLM on Cambricon MLU370 cards, reached through computed device nodes."""

    chip_key: str = "cambricon-mlu370"
    engine: str = "vllm"
    chips_per_host: int = 16

    def supports(self, chip_key: str, engine: str) -> bool:
        return chip_key == self.chip_key and engine == self.engine

    @property
    def device_env(self) -> str | None:
        return "MLU_VISIBLE_DEVICES"

    def environment(self, device_indices: Sequence[int]) -> dict[str, str]:
        # The container sees only the allocated nodes, renumbered from 0 by the driver.
        return {"MLU_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(device_indices)))}

    def device_nodes(self, device_indices: Sequence[int]) -> list[DeviceNode]:
        nodes = [DeviceNode("/dev/cambricon_ctl", "/dev/cambricon_ctl")]
        for index in device_indices:
            for stem in ("cambricon_dev", "cambricon_ipcm"):
                nodes.append(DeviceNode(f"/dev/{stem}{index}", f"/dev/{stem}{index}"))
        return nodes

    def additional_mounts(self) -> list[VolumeSpec]:
        return [
            VolumeSpec("/usr/local/neuware", "/usr/local/neuware", read_only=True),
            VolumeSpec("/usr/bin/cnmon", "/usr/bin/cnmon", read_only=True),
        ]

    def privileged(self) -> bool:
        return False

    def capabilities(self) -> list[str]:
        return ["SYS_RAWIO", "IPC_LOCK"]

    def default_image(self, arch: str) -> str | None:
        return None  # no public image: set spec.engine.image or runtime_images in devices.yaml

    def runtime(self) -> str:
        return "runc"

    def shm_size_bytes(self) -> int:
        return 32 * GIB

    def device_capacity(self) -> int | None:
        return self.chips_per_host

    def kubernetes(self) -> KubernetesProfile | None:
        return KubernetesProfile(resource_name="cambricon.com/mlu", plugin_env=["CAMBRICON_VISIBLE_DEVICES"])
