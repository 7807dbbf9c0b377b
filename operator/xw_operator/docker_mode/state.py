"""The per-user state directory (server name, stop-intent markers) and the host-wide engine lock.

Nothing here duplicates what Docker knows about containers; it only holds what Docker cannot:
- the server name, stable per state directory, which goes into container names and the
  ``xw.server_name`` label so that instances of several users are told apart in ``xw ps``;
- markers saying "this container id was stopped on purpose" (see :mod:`.status`).

The lock that serialises "list used devices/ports -> choose -> create container" is *not* in the state
directory: two users (or ``sudo`` and a plain user) with different ``XW_STATE_DIR`` share the host's
chips, so they must share the lock. It lives in a fixed host location, one file per Docker engine
(:func:`engine_lock_path`).
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from xw_operator.errors import XwError
from xw_operator.settings import settings

SERVER_NAME_FILE = "server_name"
STOPPED_DIR = "stopped"
LOCK_DIR_ENV = "XW_LOCK_DIR"
# /run/lock (= /var/lock) is the FHS place for lock files: world-writable with the sticky bit, on tmpfs.
LOCK_DIRS = ("/run/lock", "/var/lock")

_NAME_OK = re.compile(r"[^a-z0-9-]+")


def state_dir() -> Path:
    """``$XW_STATE_DIR`` or ``~/.xw`` (contract), created on first use."""
    path = settings().state_dir.expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_server_name(hostname: str, suffix: str) -> str:
    """A Docker-name-safe server name: the short host name (readable) plus a random suffix (unique)."""
    short = _NAME_OK.sub("-", hostname.split(".")[0].lower()).strip("-")[:24] or "host"
    return f"{short}-{suffix}"


def server_name(directory: Path) -> str:
    """The server name stored in the state directory; generated once, atomically, on first use."""
    path = directory / SERVER_NAME_FILE
    try:
        name = path.read_text().strip()
    except FileNotFoundError:
        name = ""
    if name:
        return name
    candidate = make_server_name(socket.gethostname(), secrets.token_hex(3))
    tmp = directory / f".{SERVER_NAME_FILE}.{os.getpid()}"
    tmp.write_text(candidate + "\n")
    try:
        # link() fails if another process won the race; then its name is the one.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()


def engine_lock_path(engine_id: str) -> Path:
    """The lock file shared by every ``xw`` on this host talking to the engine ``engine_id``.

    ``$XW_LOCK_DIR`` overrides the directory (for hosts without /run/lock); otherwise the first of
    /run/lock, /var/lock that exists, else the system temporary directory. The engine id (``docker info``
    ID) is in the name: two engines on one host (rootless and system, say) have separate containers.
    """
    safe = re.sub(r"[^A-Za-z0-9]+", "-", engine_id).strip("-")[:80] or "default"
    configured = settings().lock_dir
    chosen = str(configured) if configured else ""
    if not chosen:
        chosen = next((d for d in LOCK_DIRS if os.path.isdir(d)), tempfile.gettempdir())
    return Path(chosen) / f"xw-docker-{safe}.lock"


def _open_lock(path: Path) -> int:
    """Open (creating if needed) the lock file for reading: ``flock`` needs no write permission.

    Created 0644 whatever the umask, so another user can open it too; never through a symlink; and an
    existing file is opened without O_CREAT (``fs.protected_regular`` refuses O_CREAT on another user's
    file in a sticky directory, even for root).
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(3):
        try:
            return os.open(path, flags)
        except FileNotFoundError:
            pass
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue  # created by someone else in between: open theirs
        os.fchmod(fd, 0o644)
        return fd
    raise OSError(f"could not open or create {path}")


@contextmanager
def host_lock(path: Path, timeout: float = 120.0) -> Iterator[None]:
    """Exclusive ``flock`` on the engine's host-wide lock file (see :func:`engine_lock_path`).

    Held across "list devices/ports in use -> choose -> create the container carrying them in its labels",
    so two concurrent ``xw run`` -- whatever their state directory or user -- can never choose the same
    devices or port. The kernel drops the lock when the process dies, so a crashed CLI cannot wedge the
    host.
    """
    try:
        fd = _open_lock(path)
    except OSError as exc:
        raise XwError(
            f"cannot open the host lock {path}: {exc.strerror or exc} (it must be readable by every xw user; "
            f"set {LOCK_DIR_ENV} to another directory shared by them)"
        ) from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise XwError(
                        f"could not take the host lock {path} within {timeout:.0f}s "
                        "(another xw command is creating an instance)"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _marker(directory: Path, container_id: str) -> Path:
    return directory / STOPPED_DIR / container_id


def mark_stopped(directory: Path, container_id: str) -> None:
    """Record that this container is being stopped on purpose (before the stop is issued)."""
    (directory / STOPPED_DIR).mkdir(exist_ok=True)
    _marker(directory, container_id).touch()


def clear_stopped(directory: Path, container_id: str) -> None:
    _marker(directory, container_id).unlink(missing_ok=True)


def stopped_ids(directory: Path) -> set[str]:
    try:
        return {p.name for p in (directory / STOPPED_DIR).iterdir()}
    except FileNotFoundError:
        return set()


def prune_stopped(directory: Path, existing_ids: set[str]) -> None:
    """Drop markers of containers that no longer exist (removed by hand, for example)."""
    for cid in stopped_ids(directory) - existing_ids:
        clear_stopped(directory, cid)
