"""The one rule for host volumes of a device sandbox, shared by both renderers.

A sandbox volume is mounted **read-only** unless its devices.yaml entry says ``:rw`` explicitly or its
target is a cache directory (the engine fills caches: ``/root/.cache``, ``.../hf_cache``). ``:ro`` is
always read-only. xw-cli mounts its sandbox volumes the same way (read-only except the cache), so a
container can never write into the host's driver directories (``/usr/local/dcmi``, ``npu-smi``, the
driver's ``lib64``, MetaX's ``/usr/local``) unless an administrator asked for it in so many words.

Pure and tiny on purpose: Kubernetes (``render_kubernetes``) and Docker (``render_docker``) call it, and
other modules (cache isolation per namespace) can build on :func:`is_cache_dir` without re-deciding.
"""

from __future__ import annotations

from typing import Protocol


class _Volume(Protocol):
    @property
    def container(self) -> str: ...

    @property
    def mode(self) -> str | None: ...


def is_cache_dir(path: str) -> bool:
    """A path with a component named ``.cache`` or ending in ``cache`` (``/root/.cache``, ``/data/hf_cache``)."""
    return any(part == ".cache" or part.endswith("cache") for part in path.split("/"))


def volume_read_only(volume: _Volume) -> bool:
    """``:ro`` → read-only; ``:rw`` → writable; no mode → writable only for a cache directory."""
    if volume.mode == "ro":
        return True
    if volume.mode == "rw":
        return False
    return not is_cache_dir(volume.container)
