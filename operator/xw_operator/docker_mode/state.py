"""The per-host state directory: server name, host-wide lock, stop-intent markers.

Nothing here duplicates what Docker knows about containers; it only holds what Docker cannot:
- the server name, stable per host, which goes into container names and the ``xw.server_name`` label so
  that containers of several hosts (sharing a registry of names, logs, or a remote engine) are told apart;
- the lock file that serialises "list used devices/ports -> choose -> create container";
- markers saying "this container id was stopped on purpose" (see :mod:`.status`).
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from xw_operator.errors import XwError
from xw_operator.settings import settings

SERVER_NAME_FILE = "server_name"
LOCK_FILE = "docker.lock"
STOPPED_DIR = "stopped"

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


@contextmanager
def host_lock(directory: Path, timeout: float = 120.0) -> Iterator[None]:
    """Exclusive ``flock`` on the state directory's lock file.

    Held across "list devices/ports in use -> choose -> create the container carrying them in its labels",
    so two concurrent ``xw run`` can never choose the same devices or port. The kernel drops the lock when
    the process dies, so a crashed CLI cannot wedge the host.
    """
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise XwError(
                        f"could not take the host lock {directory / LOCK_FILE} within {timeout:.0f}s "
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
