"""Turns pydantic validation errors into one readable line with the field path users know."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError

from xw_operator.errors import ConfigError, XwError
from xw_operator.inputs import CheckedLoader, load_yaml, path_text

M = TypeVar("M", bound=BaseModel)


def describe(error: ValidationError, *, limit: int = 5) -> str:
    """Summarise up to ``limit`` errors as ``path: message; path: message``."""
    parts = []
    for item in error.errors()[:limit]:
        # Our own validators raise ValueError("..."); pydantic prefixes those with "Value error, ".
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see the documented keys)"
        parts.append(f"{path_text(item['loc'])}: {msg}")
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
    return validate_mapping(data, source, model, ConfigError, f"expected {expected}")


def validate_mapping(data: object, where: str, model: type[M], error: type[XwError], expected: str) -> M:
    """``data`` (already through the structural checks of inputs.py) validated into ``model``; anything else
    is one ``error`` line: ``where: expected ...`` for a non-mapping, ``where: path: message`` for a schema
    error. The one place admin files and ModelInstance documents become models."""
    if not isinstance(data, dict):
        raise error(f"{where}: {expected}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{where}: {describe(exc)}") from None


def list_field(description: str, **extra: Any) -> Any:
    """A list field that defaults to empty (models keep one spelling of it; the CRD schema is unchanged)."""
    return Field(default_factory=list, description=description, **extra)


def optional_text(max_length: int, pattern: str, description: str) -> Any:
    """An optional, non-empty, bounded string field (omitted: unset)."""
    return Field(None, min_length=1, max_length=max_length, pattern=pattern, description=description)
