"""Code extensions from installed packages, through Python entry points.

A vendor ships a code sandbox (or any other kind of extension xw looks up this way) as its own package
with an entry point in one of xw's groups; xw's own shipped extensions are registered the same way in
its pyproject.toml, so there is one path for both and no import done for its side effects.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import TypeVar

from xw_operator.errors import ConfigError

T = TypeVar("T")


def load_plugins(group: str, kind: type[T], what: str) -> list[T]:
    """Everything the installed distributions advertise under ``group``, in entry-point name order.

    Each entry point names a zero-argument callable (typically a class) returning one ``kind`` or an
    iterable of them. A broken one is a :class:`ConfigError` naming it and the fix's place (the
    installation), since an administrator, not a ModelInstance author, has to act.
    """
    found: list[T] = []
    for entry in sorted(entry_points(group=group), key=lambda e: e.name):
        found.extend(_made_by(entry, kind, what))
    return found


def _made_by(entry: EntryPoint, kind: type[T], what: str) -> list[T]:
    where = f"{what} entry point {entry.name} = {entry.value} (group {entry.group})"
    try:
        made = entry.load()()
    except Exception as exc:  # another package's code: any failure is reported the same way
        raise ConfigError(f"{where} failed to load: {type(exc).__name__}: {exc}") from None
    items = list(made) if isinstance(made, Iterable) else [made]
    for item in items:
        if not isinstance(item, kind):
            raise ConfigError(f"{where} returned {type(item).__name__}, not a {kind.__name__}")
    return items
