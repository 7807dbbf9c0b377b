"""Instance status: Docker's container state plus an HTTP probe, classified by one pure function.

``ready`` needs both ``GET /health`` answering 2xx (a 404 is not healthy: it means some other server, or
an engine without that route) and ``GET /v1/models`` listing the served model name (vLLM answers
/health before the model is served). A container stopped through ``xw stop`` is ``stopped``; one whose
engine ended on its own is ``exited`` with its exit code. Docker cannot tell the two apart afterwards
(``docker stop`` yields 0, 137 or 143 depending on the engine's signal handling, and a crash can too), so
``xw stop`` records the intent, keyed by container id, in the state directory before stopping.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

CREATED, STARTING, READY, UNHEALTHY, STOPPED, EXITED = "created", "starting", "ready", "unhealthy", "stopped", "exited"


@dataclass(frozen=True)
class Probe:
    health_status: int | None  # None: no HTTP answer at all
    models: tuple[str, ...] | None  # None: /v1/models did not answer with a model list
    error: str | None = None
    models_ok: bool = False  # the engine has no model-list readiness: a healthy answer is enough
    health_path: str = "/health"


@dataclass(frozen=True)
class Status:
    state: str
    exit_code: int | None = None
    detail: str = ""

    def __str__(self) -> str:
        text = self.state if self.exit_code is None else f"{self.state} ({self.exit_code})"
        return f"{text}: {self.detail}" if self.detail else text


def classify(
    docker_state: dict[str, Any],
    *,
    stopped_on_purpose: bool,
    probe: Probe | None,
    served_name: str,
    restart_count: int = 0,
    last_exit_code: int | None = None,
) -> Status:
    status = docker_state.get("Status", "")
    code = docker_state.get("ExitCode")
    if status == "created":
        return Status(CREATED, detail="created, not started")
    if status in ("exited", "dead"):
        if stopped_on_purpose:
            return Status(STOPPED)
        return Status(EXITED, code, docker_state.get("Error") or "the engine exited")
    if status == "restarting":
        return Status(EXITED, code, f"the engine exited; Docker is restarting it (restart {restart_count})")
    if status == "paused":
        return Status(STOPPED, detail="paused")
    if status == "removing":
        return Status(STOPPED, detail="being removed")
    # running
    restarted = ""
    if restart_count:
        last = f", last exit code {last_exit_code}" if last_exit_code is not None else ""
        restarted = f" (restarted {restart_count} time(s){last})"
    if probe is None or probe.health_status is None:
        reason = probe.error if probe and probe.error else "no answer on /health yet"
        return Status(STARTING, detail=reason + restarted)
    if not 200 <= probe.health_status < 300:
        return Status(UNHEALTHY, detail=f"GET {probe.health_path} answered {probe.health_status}{restarted}")
    if not probe.models_ok and (probe.models is None or served_name not in probe.models):
        listed = ", ".join(probe.models) if probe.models else "none"
        detail = f"model {served_name!r} not listed by /v1/models yet (listed: {listed})"
        return Status(STARTING, detail=detail + restarted)
    return Status(READY, detail=restarted.strip(" ()"))


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read(1 << 20)
    except urllib.error.HTTPError as exc:
        return int(exc.code), b""


def model_ids(body: bytes) -> tuple[str, ...] | None:
    """The ``data[].id`` entries of an OpenAI-style model list, None when the body is not one."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        return None
    return tuple(str(m["id"]) for m in data if isinstance(m, dict) and "id" in m)


def probe(
    host: str,
    port: int,
    timeout: float = 2.0,
    *,
    health_path: str = "/health",
    ready_path: str | None = "/v1/models",
    served_name: str | None = None,
) -> Probe:
    """GET the health path, then the ready path (an OpenAI model list); the paths come from the engine
    definition. Without a ready path the health path alone decides (the served name counts as listed)."""
    base = f"http://{host}:{port}"
    try:
        health, _ = _get(f"{base}{health_path}", timeout)
    except (OSError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", exc)
        return Probe(None, None, f"no answer on {base}{health_path} ({reason})")
    if ready_path is None:
        return Probe(health, None, models_ok=True, health_path=health_path)
    try:
        code, body = _get(f"{base}{ready_path}", timeout)
    except (OSError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", exc)
        return Probe(health, None, f"no answer on {base}{ready_path} ({reason})", health_path=health_path)
    return Probe(health, model_ids(body) if 200 <= code < 300 else None, health_path=health_path)
