"""Keeping the operator's resident memory close to what it actually holds (issue 14: <= 150 MiB at 1,000
instances).

CPython keeps small objects in its own arenas and hands large blocks -- API responses, a kopf listing of
1,000 objects is megabytes of JSON -- to glibc's malloc. glibc keeps freed heap memory for reuse and, once
the first large mapped block is freed, raises its mmap threshold (up to 32 MiB), so later large blocks
come from the heap as well. A start-up burst (kopf's initial listings, one resume reconcile per instance)
then stays in RSS long after the objects are gone, and a busy heap cannot shrink past its highest live
block. Two cheap countermeasures, both no-ops without glibc:

- a fixed mmap threshold: blocks above it are mapped and unmapped on free (fixing it also turns off the
  dynamic raise), and at most two malloc arenas (one per thread, up to 8 per core, is glibc's default,
  each keeping its own free memory);
- ``malloc_trim(0)`` every ``interval`` seconds from a daemon thread: free pages inside the heap go back to
  the kernel too. It walks the heap (milliseconds at this size) and changes nothing that is in use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc mallopt parameters (malloc.h)
M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, kept fixed
ARENA_MAX = 2
TRIM_INTERVAL_SECONDS = 30.0


@functools.cache
def _glibc() -> Any | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 (musl and others have no mallopt/malloc_trim: nothing to tune)
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def tune_malloc() -> bool:
    """Fixed mmap threshold and two arenas; call before threads start. False where glibc is absent."""
    libc = _glibc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_ARENA_MAX, ARENA_MAX))
    if not ok:
        log.debug("mallopt refused the memory settings; running with glibc's defaults")
    return ok


def trim() -> bool:
    """Give free heap pages back to the kernel; True when some were released."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


class Trimmer:
    """A daemon thread calling :func:`trim` every ``interval`` seconds until stopped."""

    def __init__(self, interval: float = TRIM_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="malloc-trim", daemon=True)

    def start(self) -> Trimmer:
        if _glibc() is not None:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            trim()
