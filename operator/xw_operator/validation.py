"""Turns pydantic validation errors into one readable line with the field path users know."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from xw_operator.errors import ConfigError
from xw_operator.inputs import CheckedLoader, load_yaml

M = TypeVar("M", bound=BaseModel)


def field_path(loc: Sequence[int | str]) -> str:
    """Render a pydantic location as ``vendors[0].chip_models[2].ext_sandboxes.vllm.shm_size_gb``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def describe(error: ValidationError, *, limit: int = 5) -> str:
    """Summarise up to ``limit`` errors as ``path: message; path: message``."""
    parts = []
    for item in error.errors()[:limit]:
        # Our own validators raise ValueError("..."); pydantic prefixes those with "Value error, ".
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see the documented keys)"
        parts.append(f"{field_path(item['loc'])}: {msg}")
    more = len(error.errors()) - limit
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)


def parse_config_document(
    text: str,
    source: str,
    model: type[M],
    *,
    loader: type[CheckedLoader] = CheckedLoader,
    expected: str = "a mapping at the top level",
) -> M:
    """One admin-written YAML file (devices.yaml, models.yaml, ...) validated into ``model``; every failure
    is a ConfigError naming ``source`` and, for a schema error, the field."""
    # Duplicate keys, depth, size, alias bombs, non-JSON values: the one input layer (inputs.py).
    data = load_yaml(text, source, ConfigError, loader)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected {expected}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe(exc)}") from None
