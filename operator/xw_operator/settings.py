"""Every environment variable xw reads, in one place, read once per process.

Modules ask :func:`settings` instead of ``os.environ``, so the full list (with defaults and meaning) is
this model, README's table is generated from it (a unit test compares the two), and a bad value is one
clear line naming the variable (a :class:`ConfigError`, CLI exit 2) instead of a traceback deep inside
whichever module happened to read it. An empty value counts as unset.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from xw_operator.errors import ConfigError
from xw_operator.validation import describe

DEFAULT_PORT_RANGE = (18000, 18999)


def _port_range(value: Any) -> Any:
    """``LOW-HIGH`` (inclusive) as a pair of ports."""
    if not isinstance(value, str):
        return value
    low, sep, high = value.partition("-")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise ValueError(f"{value!r} is not LOW-HIGH, e.g. 18000-18999")
    pair = (int(low), int(high))
    if not 1 <= pair[0] <= pair[1] <= 65535:
        raise ValueError(f"{value!r} is not a range of ports (1 <= LOW <= HIGH <= 65535)")
    return pair


PortRange = Annotated[tuple[int, int], BeforeValidator(_port_range)]


class Settings(BaseModel):
    """Field aliases are the variable names (``XW_`` + the field name in capitals unless a field names its
    own); descriptions are README's "meaning" column."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=lambda name: f"XW_{name.upper()}")

    devices_config: Path | None = Field(
        None,
        description="devices.yaml for every command when `--devices-config` is not given "
        "(default: the shipped `configs/devices.yaml`)",
    )
    state_dir: Path = Field(
        Path("~/.xw"),
        description="Docker mode: your stable server name, stop markers and engines' work directories",
    )
    lock_dir: Path | None = Field(
        None,
        description="Docker mode: directory of the host-wide allocation lock, one file per Docker engine "
        "(default: /run/lock, else /var/lock, else the temporary directory)",
    )
    sysfs_root: Path = Field(Path("/sys"), description="Docker mode: where accelerators are discovered (PCI)")
    port_range: PortRange = Field(
        DEFAULT_PORT_RANGE,
        description="Docker mode: host ports (`LOW-HIGH`) `xw run` picks from when `spec.port` is not given",
    )
    config_poll_seconds: float = Field(2.0, gt=0, description="operator: how often a devices.yaml file is re-read")
    # Handlers wait on the API server, not the CPU: 32 cut the Ready lag p50 at 200 instances from 46 s to
    # 2.9 s (bench/bench_scale.py).
    max_workers: int = Field(32, ge=1, description="operator: handler threads (kopf)")
    pod_name: str | None = Field(
        None,
        alias="POD_NAME",
        description="operator: its pod, named in Events (the chart sets it; default: the host name)",
    )
    pod_namespace: str | None = Field(
        None,
        alias="POD_NAMESPACE",
        description="operator: with `POD_NAME`, where a refused devices.yaml file is reported as an Event",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        given = {f.alias: environ[f.alias] for f in cls.model_fields.values() if f.alias and environ.get(f.alias)}
        try:
            return cls.model_validate(given)
        except ValidationError as exc:
            raise ConfigError(f"environment: {describe(exc)}") from None


@functools.cache
def settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings.from_env()


def markdown_table() -> str:
    """README's table of environment variables, generated from :class:`Settings`."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for field in Settings.model_fields.values():
        default = field.default
        if isinstance(default, tuple):
            shown = f"`{default[0]}-{default[1]}`"
        else:
            shown = "unset" if default is None else f"`{default}`"
        rows.append(f"| `{field.alias}` | {shown} | {field.description} |")
    return "\n".join(rows) + "\n"
