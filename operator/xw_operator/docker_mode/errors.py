"""Runtime failures of Docker mode (CLI exit code 1), as opposed to bad input (:class:`XwError`, exit 2)."""

from __future__ import annotations

from xw_operator.errors import RuntimeFailure

__all__ = ["NotFound", "RuntimeFailure"]


class NotFound(RuntimeFailure):
    def __init__(self, name: str, server_name: str) -> None:
        super().__init__("lookup", f"no instance named {name!r} on this host (server {server_name}); see `xw ps`")
