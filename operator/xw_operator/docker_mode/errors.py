"""Runtime failures of Docker mode (CLI exit code 1), as opposed to bad input (:class:`XwError`, exit 2)."""

from __future__ import annotations


class RuntimeFailure(Exception):
    """Something failed while acting on the host; ``step`` names what xw was doing.

    The message always reads ``<step> failed: <why>`` so a user can tell a pull problem from a device
    conflict or an engine that exited.
    """

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step} failed: {reason}")
        self.step = step
        self.reason = reason


class NotFound(RuntimeFailure):
    def __init__(self, name: str, server_name: str) -> None:
        super().__init__("lookup", f"no instance named {name!r} on this host (server {server_name}); see `xw ps`")
