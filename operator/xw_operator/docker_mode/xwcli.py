"""Living next to xw-cli on one host: recognise its containers and what they hold. Pure except one file read.

xw-cli labels its containers with the same keys we use (``xw.runtime``, ``xw.instance_id``,
``xw.device_indices``, ``xw.server_name``, ...) but spells the runtime ``<engine>:docker`` (older versions
``vllm-docker``, which is also our spelling), writes neither ``xw.chip`` nor ``xw.host_port`` (the host
port is only in the container's port binding for 8000/tcp), and keeps its server name in
``~/.xw/data/server.conf`` (``name=...``). A container is xw-cli's when it lacks our ``xw.chip`` label or
carries xw-cli's server name.

Its containers are never changed or removed by us unless the user names one; their devices and host ports
count as taken whatever their state (a stopped xw-cli instance is restarted by xw-cli on the same ones).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xw_operator.render_docker import LABEL_CHIP, LABEL_DEPLOYMENT_MODE, LABEL_RUNTIME, LABEL_SERVER_NAME

SERVER_CONF = Path("data") / "server.conf"  # relative to ~/.xw, xw-cli's home (also our state dir)
XW_CLI_CONTAINER_PORT = "8000/tcp"


def runtime_engine(runtime_label: str | None) -> str | None:
    """The engine of an ``xw.runtime`` value in either spelling (``vllm:docker``, ``vllm-docker``), else None."""
    if not runtime_label:
        return None
    for sep in (":", "-"):
        engine, found, mode = runtime_label.rpartition(sep)
        if found and mode == "docker" and engine:
            return engine
    return None


def is_xw_container(labels: Mapping[str, str]) -> bool:
    """Made by xw or xw-cli in Docker mode (either runtime spelling, or the deployment-mode label)."""
    return runtime_engine(labels.get(LABEL_RUNTIME)) is not None or labels.get(LABEL_DEPLOYMENT_MODE) == "docker"


def is_xw_cli_container(labels: Mapping[str, str], xw_cli_server: str | None) -> bool:
    if not is_xw_container(labels):
        return False
    if xw_cli_server and labels.get(LABEL_SERVER_NAME) == xw_cli_server:
        return True
    return LABEL_CHIP not in labels


def read_server_name(text: str) -> str | None:
    """The ``name=`` entry of xw-cli's server.conf (``key=value`` lines, ``#`` comments)."""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if key.strip() == "name" and value.strip():
            return value.strip()
    return None


def xw_cli_server_name(home: Path) -> str | None:
    """xw-cli's server name on this host, from ``<home>/data/server.conf``; None when xw-cli never ran."""
    try:
        return read_server_name((home / SERVER_CONF).read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None


def published_port(attrs: Mapping[str, Any], container_port: str = XW_CLI_CONTAINER_PORT) -> int | None:
    """The host port bound to ``container_port`` in the container's configuration (set even when stopped)."""
    bindings = (attrs.get("HostConfig") or {}).get("PortBindings") or {}
    for binding in bindings.get(container_port) or []:
        port = str(binding.get("HostPort") or "")
        if port.isdigit():
            return int(port)
    return None
