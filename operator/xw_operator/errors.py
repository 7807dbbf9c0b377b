"""Error types whose messages are shown to users as they are.

Every message says what was wrong, where (file, field path, object) and what would be right, so the CLI
can print it on one line and the operator can put it in a status condition unchanged.

Each bad-input error carries a ``reason`` (CamelCase, the status condition reason): the operator and the
CLI decide what to do from the type and its reason, never by reading the message text.
"""

from __future__ import annotations


class XwError(Exception):
    """Bad input: a user or administrator must change something. CLI exit code 2; never retried."""

    reason = "InvalidSpec"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ConfigError(XwError):
    """devices.yaml (or a recipe file beside it) is invalid (the operator keeps the last good one)."""

    reason = "InvalidDevicesConfig"


class ManifestError(XwError):
    """A ModelInstance document is invalid."""


class ResolveError(XwError):
    """A valid ModelInstance cannot be realised with this devices.yaml (unknown chip, no image, ...)."""


class UnknownChip(ResolveError):
    """spec.devices.chip names no chip profile (neither devices.yaml nor a code sandbox)."""

    reason = "UnknownChip"


class NoSandbox(ResolveError):
    """The chip exists but has no device sandbox for the requested engine."""

    reason = "NoSandbox"


class ImageNotAvailable(ResolveError):
    """No image is configured for the chip, engine and architecture (``NONE`` or missing)."""

    reason = "ImageNotAvailable"


class PolicyRefused(ResolveError):
    """The administrator's policy forbids what the instance asks for; ``reason`` says which rule
    (e.g. ``ImageNotAllowed``, ``HostPathNotAllowed``)."""

    reason = "PolicyRefused"


class RuntimeFailure(Exception):
    """Something failed while acting on a host or cluster (CLI exit code 1); ``step`` names what.

    The message always reads ``<step> failed: <why>`` so a user can tell a pull problem from a device
    conflict or an engine that exited.
    """

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step} failed: {reason}")
        self.step = step
        self.reason = reason
