"""Turns pydantic validation errors into one readable line with the field path users know."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError


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
