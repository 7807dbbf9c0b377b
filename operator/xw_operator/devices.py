"""The devices.yaml model: vendors, chip models and their device sandboxes.

The format is the seed system's (xw-cli); files written for it load unchanged. Our additions are optional
keys: a per-chip ``kubernetes`` block and ``max_devices``. Unlike the seed, unknown keys are errors
(a typo such as ``privilaged`` must not silently drop a setting), except engine blocks inside
``ext_sandboxes``, whose names are open-ended by design.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    field_validator,
    model_validator,
)

from xw_operator.engines import EngineDefinition
from xw_operator.errors import ConfigError
from xw_operator.inputs import CheckedLoader, decode
from xw_operator.instance import CHIP_NAME_PATTERN
from xw_operator.policy import normalise_host_path, prefix_parts
from xw_operator.recipes import Recipes, load_recipes
from xw_operator.settings import settings
from xw_operator.validation import list_field, parse_config_document

ARCHES = ("amd64", "arm64")
NONE_IMAGE = "NONE"
DEFAULT_SHM_GB = 16.0  # the seed's default when an engine block names none
_COMMON_SANDBOX_KEYS = ("devices", "volumes", "runtime")
_HEX = re.compile(r"^0x[0-9a-fA-F]{1,8}$")
_TRAILING_DIGITS = re.compile(r"^(.*?)(\d+)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _env_value(value: Any) -> str:
    """YAML turns ``"1"`` into 1 when unquoted; environment values are strings either way."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise ValueError(f"environment values must be strings or numbers, got {type(value).__name__}")


EnvValue = Annotated[str, BeforeValidator(_env_value)]


def _hex_id(value: Any) -> str:
    """A PCI id as ``0x…`` text; the loader keeps unquoted ``0xd802`` as text (see :class:`_HexKeepingLoader`)."""
    if not isinstance(value, str) or not _HEX.match(value):
        raise ValueError(f'expected a hex id such as "0x19e5", got {value!r}')
    return value.lower()


HexId = Annotated[str, BeforeValidator(_hex_id)]


@dataclass(frozen=True)
class VolumeSpec:
    """A bind mount from the seed's ``host:container[:ro|rw]`` notation.

    ``read_only`` is the mode as written: True for ``:ro``, False for ``:rw``, None when the entry names
    none; :func:`xw_operator.mounts.volume_read_only` decides what None means (read-only unless a cache).
    """

    host: str
    container: str
    read_only: bool | None = None

    @property
    def mode(self) -> str | None:
        return None if self.read_only is None else ("ro" if self.read_only else "rw")

    @classmethod
    def parse(cls, text: str) -> VolumeSpec:
        parts = text.split(":")
        mode: str | None = None
        if len(parts) == 3:
            host, container, mode = parts
        elif len(parts) == 2:
            host, container = parts
        elif len(parts) == 1:
            host = container = parts[0]
        else:
            raise ValueError(f"volume {text!r} is not host:container[:ro|rw]")
        if mode not in (None, "ro", "rw"):
            raise ValueError(f"volume {text!r}: mode must be ro or rw, got {mode!r}")
        if not host.startswith("/") or not container.startswith("/"):
            raise ValueError(f"volume {text!r}: host and container paths must be absolute")
        return cls(host=host, container=container, read_only=None if mode is None else mode == "ro")

    def __str__(self) -> str:
        return f"{self.host}:{self.container}" + (f":{self.mode}" if self.mode else "")


def _parse_volume(value: Any) -> VolumeSpec:
    if isinstance(value, VolumeSpec):
        return value
    if not isinstance(value, str):
        raise ValueError(f"volume must be a string host:container[:ro], got {value!r}")
    return VolumeSpec.parse(value)


# Dumps back to the notation it was written in, so a dumped config validates again.
Volume = Annotated[VolumeSpec, BeforeValidator(_parse_volume), PlainSerializer(str, return_type=str)]


def _check_device_path(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"device path must be a string such as /dev/davinci0, got {value!r}")
    if not value.startswith("/"):
        raise ValueError(f"device path must be absolute, got {value!r}")
    return value


DevicePath = Annotated[str, BeforeValidator(_check_device_path)]


def device_index(path: str) -> int | None:
    """The chip index a device node belongs to (``/dev/davinci3`` → 3), or None for control nodes."""
    match = _TRAILING_DIGITS.match(path)
    return int(match.group(2)) if match else None


class EngineSandbox(_Strict):
    """One engine's block inside ``ext_sandboxes`` (``vllm:``, ``mindie:``, ...)."""

    device_env: str | None = Field(None, description="env var that receives the allocated indices")
    environment: dict[str, EnvValue] = Field(default_factory=dict)
    privileged: bool = False
    shm_size_gb: float | None = Field(None, ge=0)
    capabilities: list[str] = Field(default_factory=list)
    devices: list[DevicePath] = Field(default_factory=list)
    volumes: list[Volume] = Field(default_factory=list)
    runtime: str | None = None

    @field_validator("capabilities")
    @classmethod
    def _normalise_caps(cls, caps: list[str]) -> list[str]:
        # Docker and Kubernetes both take names without the CAP_ prefix.
        return [c.upper().removeprefix("CAP_") for c in caps]


class ExtSandboxes(BaseModel):
    """Common device access for a chip plus one block per engine (the seed's ``ext_sandboxes``).

    Every key besides the common ones must be a mapping: it is an engine block. Typed extras give error
    paths such as ``ext_sandboxes.vllm.shm_size_gb`` exactly as the user wrote them.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, EngineSandbox] = Field(init=False)

    devices: list[DevicePath] = Field(default_factory=list)
    volumes: list[Volume] = Field(default_factory=list)
    runtime: str = "runc"

    @model_validator(mode="before")
    @classmethod
    def _engine_blocks_are_mappings(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                if key not in _COMMON_SANDBOX_KEYS and not isinstance(value, dict):
                    raise ValueError(
                        f"unknown key {key!r}: besides {', '.join(_COMMON_SANDBOX_KEYS)} every key is an "
                        "engine block and must be a mapping"
                    )
        return data

    @property
    def engines(self) -> dict[str, EngineSandbox]:
        return dict(self.__pydantic_extra__ or {})


# A ModelInstance names a chip by these keys (spec.devices.chip), so they must be names it can write:
# a key such as "Ascend_910B" would make the profile silently unreachable.
ChipKey = Annotated[str, Field(pattern=CHIP_NAME_PATTERN, max_length=63)]


class Variant(_Strict):
    subsystem_device_id: HexId
    variant_key: ChipKey
    variant_name: str | None = None  # display only; xw-cli files omit it at times


class Box(_Strict):
    devices: list[Annotated[int, Field(ge=0)]]


class Topology(_Strict):
    boxes: list[Box] = Field(default_factory=list)

    @model_validator(mode="after")
    def _no_chip_in_two_boxes(self) -> Topology:
        seen: set[int] = set()
        for i, box in enumerate(self.boxes):
            dup = seen.intersection(box.devices)
            if dup:
                raise ValueError(f"boxes[{i}] repeats device(s) {sorted(dup)} already in an earlier box")
            seen.update(box.devices)
        return self


# Pod hardening a chip profile may switch off (hardening.py); a ModelInstance never can.
Relaxation = Literal["seccomp", "allowPrivilegeEscalation", "dropCapabilities", "serviceAccountToken", "serviceLinks"]


class KubernetesProfile(_Strict):
    """Our extension: how the chip is reached through a Kubernetes device plugin."""

    resource_name: str | None = Field(
        None, description="extended resource advertised by the device plugin, e.g. huawei.com/Ascend910"
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    plugin_env: list[str] = Field(
        default_factory=list,
        description="env vars the device plugin injects; never set statically in device-plugin mode",
    )
    privileged: bool | None = Field(
        None, description="device-plugin mode only: privileged defeats the plugin's allocation; opt in"
    )
    runtime_class_name: str | None = Field(
        None, description="RuntimeClass for the pods (e.g. nvidia); the Docker runtime name is not reused"
    )
    relax: list[Relaxation] = Field(
        default_factory=list,
        description="pod hardening this chip's driver cannot live with (see docs/security.md); never per instance",
    )


class ChipModel(_Strict):
    config_key: ChipKey
    model_name: str
    device_id: HexId
    generation: str | None = None
    capabilities: list[str] = Field(default_factory=list)
    subsystem_device_id: HexId | None = None  # the seed's deprecated pre-variants form; still accepted
    variants: list[Variant] = Field(default_factory=list)
    chips_per_device: int = Field(1, ge=1)
    topology: Topology | None = None
    runtime_images: dict[str, dict[Literal["amd64", "arm64"], str]] = Field(default_factory=dict)
    ext_sandboxes: ExtSandboxes | None = None
    kubernetes: KubernetesProfile | None = None
    max_devices: int | None = Field(None, ge=1, description="chips per host, when topology doesn't say")

    @cached_property
    def device_capacity(self) -> int | None:
        """How many chips one host has: explicit, else from topology, else from indexed device nodes."""
        if self.max_devices is not None:
            return self.max_devices
        if self.topology and self.topology.boxes:
            return len({i for box in self.topology.boxes for i in box.devices})
        if self.ext_sandboxes:
            paths = list(self.ext_sandboxes.devices)
            for block in self.ext_sandboxes.engines.values():
                paths.extend(block.devices)
            indices = {i for p in paths if (i := device_index(p)) is not None}
            if indices:
                return max(indices) + 1
        return None

    def image_for(self, engine: str, arch: str) -> str | None:
        """The configured image, or None when missing or ``NONE``."""
        image = self.runtime_images.get(engine, {}).get(arch)  # type: ignore[call-overload]
        return None if image in (None, "", NONE_IMAGE) else image


class Vendor(_Strict):
    vendor_name: str
    vendor_id: HexId
    chip_models: list[ChipModel] = Field(min_length=1)


@dataclass(frozen=True)
class ChipRef:
    """A chip as named by a user: the base model plus the variant when a variant key was used."""

    vendor: Vendor
    chip: ChipModel
    variant: Variant | None = None

    @property
    def key(self) -> str:
        return self.variant.variant_key if self.variant else self.chip.config_key


class Policy(_Strict):
    """Our extension: what ModelInstance authors may ask for, decided by whoever controls this file.

    One block, every key optional; the defaults are the safe ones for a shared cluster. The checks
    themselves live in :mod:`xw_operator.policy`; docs/security.md documents each key.
    """

    allow_model_host_path: bool = Field(
        True, description="false: spec.model.source.hostPath is refused on every backend (use pvc or huggingFace)"
    )
    model_host_path_prefixes: list[Annotated[str, Field(pattern=r"^/")]] = list_field(
        "directories a hostPath model source must lie under; empty: refused on Kubernetes, "
        "any directory in Docker mode (one's own host)",
    )
    allowed_image_prefixes: list[str] = list_field(
        "registry or registry/repository prefixes spec.engine.image may use besides the images "
        "this file names for the chip and engine (e.g. quay.io/ascend, registry.local:5000/llm)",
    )
    writable_host_mounts: Literal["per-namespace", "emptyDir"] = Field(
        "per-namespace",
        description="Kubernetes: a writable host mount of a profile (e.g. /root/.cache) becomes a per-namespace "
        "subdirectory <host>/xw-namespaces/<namespace> (per-namespace) or a pod-private emptyDir (emptyDir)",
    )

    @field_validator("model_host_path_prefixes")
    @classmethod
    def _plain_paths(cls, prefixes: list[str]) -> list[str]:
        for prefix in prefixes:
            if normalise_host_path(prefix) is None or prefix.rstrip("/") == "":
                raise ValueError(f"{prefix!r} must be an absolute directory other than / without '..' or '.'")
        return prefixes

    @field_validator("allowed_image_prefixes")
    @classmethod
    def _image_prefixes(cls, prefixes: list[str]) -> list[str]:
        for prefix in prefixes:
            if prefix_parts(prefix) is None:
                raise ValueError(
                    f"{prefix!r} is not a registry (quay.io) or registry/repository prefix (quay.io/ascend) "
                    "without tag or digest"
                )
        return prefixes


class DevicesConfig(_Strict):
    version: str
    vendors: list[Vendor] = Field(default_factory=list)
    policy: Policy = Field(default_factory=Policy)
    engines: dict[str, EngineDefinition] = Field(
        default_factory=dict,
        description="our addition: engine definitions overriding or adding to the shipped engines.yaml",
    )
    # The recipe files found beside devices.yaml (or in the operator's ConfigMap); not a devices.yaml key.
    _recipes: Recipes = PrivateAttr(default_factory=Recipes)

    @property
    def recipes(self) -> Recipes:
        return self._recipes

    def with_recipes(self, recipes: Recipes) -> DevicesConfig:
        """A copy carrying ``recipes`` (models.yaml / runtime_params.yaml)."""
        copy = self.model_copy()
        copy._recipes = recipes
        return copy

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        # version: 1.0 unquoted is a float in YAML; the seed accepted it.
        return str(value) if isinstance(value, int | float) else value

    @model_validator(mode="after")
    def _unique_keys(self) -> DevicesConfig:
        seen: dict[str, str] = {}
        for vi, vendor in enumerate(self.vendors):
            for ci, chip in enumerate(vendor.chip_models):
                where = f"vendors[{vi}].chip_models[{ci}]"
                keys = [(chip.config_key, f"{where}.config_key")]
                keys += [(v.variant_key, f"{where}.variants[{i}].variant_key") for i, v in enumerate(chip.variants)]
                for key, path in keys:
                    if key in seen:
                        raise ValueError(f"{path}: {key!r} is already defined at {seen[key]}; keys must be unique")
                    seen[key] = path
        return self

    @cached_property
    def _index(self) -> dict[str, ChipRef]:
        index: dict[str, ChipRef] = {}
        for vendor in self.vendors:
            for chip in vendor.chip_models:
                index[chip.config_key] = ChipRef(vendor, chip)
                for variant in chip.variants:
                    index[variant.variant_key] = ChipRef(vendor, chip, variant)
        return index

    @property
    def chip_keys(self) -> list[str]:
        return sorted(self._index)

    def find_chip(self, key: str) -> ChipRef | None:
        return self._index.get(key)

    def match_pci(self, vendor_id: str, device_id: str, subsystem_device_id: str | None = None) -> ChipRef | None:
        """The seed's three-phase match: variant by subsystem id, else the base model, else None."""
        vendor_id, device_id = vendor_id.lower(), device_id.lower()
        sub = subsystem_device_id.lower() if subsystem_device_id else None
        for vendor in self.vendors:
            if vendor.vendor_id != vendor_id:
                continue
            for chip in vendor.chip_models:
                if chip.device_id != device_id:
                    continue
                if chip.subsystem_device_id and sub and chip.subsystem_device_id != sub:
                    continue
                for variant in chip.variants:
                    if sub and variant.subsystem_device_id == sub:
                        return ChipRef(vendor, chip, variant)
                return ChipRef(vendor, chip)
        return None


class _HexKeepingLoader(CheckedLoader):
    """YAML reads unquoted ``0xd802`` as the int 53250; xw-cli's files write ids that way at times.

    This loader keeps such scalars as the text written (normalised to lower case), so a hex id loads as
    ``"0xd802"`` while a decimal ``53250`` is still an int and still refused: it is ambiguous.
    """


def _int_or_hex_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    text = str(node.value)
    if text.lower().startswith("0x"):
        return text.lower()
    return loader.construct_yaml_int(node)


_HexKeepingLoader.add_constructor("tag:yaml.org,2002:int", _int_or_hex_text)


def parse_devices_config(text: str, source: str = "devices.yaml") -> DevicesConfig:
    """Validate devices.yaml text; every failure is a ConfigError naming the source and the field."""
    return parse_config_document(
        text,
        source,
        DevicesConfig,
        loader=_HexKeepingLoader,
        expected="a mapping with 'version' and 'vendors' at the top level",
    )


def load_devices_config(path: str | os.PathLike[str], *, with_recipes: bool = True) -> DevicesConfig:
    """devices.yaml plus, by default, the recipe files beside it (models.yaml, runtime_params.yaml)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read devices config {path}: {exc.strerror or exc}") from None
    config = parse_devices_config(decode(data, str(path), ConfigError), source=str(path))
    if not with_recipes:
        return config
    return config.with_recipes(load_recipes(Path(path).resolve().parent))


def packaged_devices_config_path() -> Path:
    """The shipped configs/devices.yaml (a package-data copy in wheels, the repo file in a checkout)."""
    return Path(__file__).with_name("data") / "devices.yaml"


def default_devices_config_path(explicit: str | None = None) -> Path:
    """An explicit path, else ``XW_DEVICES_CONFIG``, else the shipped file."""
    if explicit:
        return Path(explicit)
    return settings().devices_config or packaged_devices_config_path()
