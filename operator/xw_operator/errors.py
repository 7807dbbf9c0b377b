"""Error types whose messages are shown to users as they are.

Every message says what was wrong, where (file, field path, object) and what would be right, so the CLI
can print it on one line and the operator can put it in a status condition unchanged.
"""

from __future__ import annotations


class XwError(Exception):
    """Bad input: a user or administrator must change something. CLI exit code 2; never retried."""


class ConfigError(XwError):
    """devices.yaml is invalid (the operator keeps the last good one)."""


class ManifestError(XwError):
    """A ModelInstance document is invalid."""


class ResolveError(XwError):
    """A valid ModelInstance cannot be realised with this devices.yaml (unknown chip, no image, ...)."""


class RuntimeFailure(Exception):
    """Something failed while acting on a host or cluster (CLI exit code 1); ``step`` names what.

    The message always reads ``<step> failed: <why>`` so a user can tell a pull problem from a device
    conflict or an engine that exited.
    """

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step} failed: {reason}")
        self.step = step
        self.reason = reason
