"""Helpers shared by the chart and operator-image tests: helm, ServiceAccount kubeconfigs, waiting, processes."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "xw-operator"
SAMPLE = REPO / "configs" / "samples" / "qwen3-8b-ascend.yaml"
T = TypeVar("T")


def short_id() -> str:
    return uuid.uuid4().hex[:6]


def helm_env(cluster: Any, home: Path) -> dict[str, str]:
    env = cluster.env()
    for key in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[key] = str(home / key.lower())
    return env


def helm(
    cluster: Any, home: Path, *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [cluster.helm_path, "--kubeconfig", cluster.kubeconfig, *args],
        capture_output=True,
        text=True,
        env=helm_env(cluster, home),
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def flat_kubeconfig(cluster: Any) -> dict[str, Any]:
    """The admin kubeconfig with certificates embedded (usable from another path or inside a container)."""
    out = cluster.kubectl("config", "view", "--raw", "--flatten", "--minify").stdout
    return dict(yaml.safe_load(out))


def write_token_kubeconfig(cluster: Any, path: Path, token: str, namespace: str) -> Path:
    """A kubeconfig that authenticates with ``token`` only: the exact identity the pod would have."""
    admin = flat_kubeconfig(cluster)
    server = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": server}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": namespace}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def service_account_token(cluster: Any, namespace: str, name: str) -> str:
    """TokenRequest (``kubectl create token``): a bound token like the kubelet projects into the pod."""
    token = cluster.kubectl("create", "token", name, "-n", namespace, "--duration=1h").stdout.strip()
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["sub"] == f"system:serviceaccount:{namespace}:{name}", claims
    return token


def can_i(cluster: Any, user: str, verb: str, resource: str, namespace: str | None) -> bool:
    """``kubectl auth can-i --as``. ``resource`` is ``kind[.group]``, ``kind[.group]/name`` (a named object)
    or ``kind[.group]:subresource`` (``pods:exec``, ``modelinstances.xw.dev:status``)."""
    scope = ["-n", namespace] if namespace else ["--all-namespaces"]
    resource, _, sub = resource.partition(":")
    extra = ["--subresource", sub] if sub else []
    proc = cluster.kubectl("auth", "can-i", verb, resource, *extra, *scope, "--as", user, check=False)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i {verb} {resource} {extra}: {proc.stdout} {proc.stderr}"
    return answer == "yes"


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 120, interval: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def get_json(cluster: Any, *args: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", *args, "-o", "json", check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr or "not found" in proc.stderr:
            return None
        raise AssertionError(f"kubectl get {' '.join(args)}: {proc.stderr}")
    return dict(json.loads(proc.stdout))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except OSError:
        return None


def apply_sample(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    """The shipped Ascend sample, renamed; it schedules onto the kwok Ascend 910 nodes."""
    doc = yaml.safe_load(SAMPLE.read_text())
    doc["metadata"] = {"name": name, "namespace": namespace}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    return dict(doc)


def instance_phase(cluster: Any, namespace: str, name: str) -> str | None:
    obj = get_json(cluster, "modelinstance", name, "-n", namespace)
    return None if obj is None else (obj.get("status") or {}).get("phase")


def wait_ready(cluster: Any, namespace: str, name: str, logs: Callable[[], str], timeout: float = 180) -> None:
    def ready() -> bool:
        # A refused API call never heals by waiting: fail at once, with the refusal.
        denied = forbidden_lines(logs())
        assert not denied, "the operator hit a permission it lacks:\n" + "\n".join(denied[:5])
        return instance_phase(cluster, namespace, name) == "Ready"

    try:
        wait_for(f"ModelInstance {namespace}/{name} Ready", ready, timeout)
    except AssertionError as exc:
        obj = get_json(cluster, "modelinstance", name, "-n", namespace)
        raise AssertionError(
            f"{exc}\nstatus: {json.dumps((obj or {}).get('status'), indent=1)}\noperator log:\n{logs()[-6000:]}"
        ) from None


def wait_deleted(cluster: Any, namespace: str, name: str, timeout: float = 120) -> None:
    """Delete the instance and wait until it and (through garbage collection) its children are gone."""
    cluster.kubectl("delete", "modelinstance", name, "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for(
        f"children of {namespace}/{name} garbage-collected",
        lambda: (
            get_json(cluster, "deployment", name, "-n", namespace) is None
            and get_json(cluster, "service", name, "-n", namespace) is None
        ),
        timeout,
    )


class OperatorProcess:
    """``xw operator`` as a subprocess with its output in a file (read it in assertion messages)."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return int(self.proc.returncode)


def forbidden_lines(text: str) -> list[str]:
    """Log lines reporting a refused API call (kopf and our client both say 403/Forbidden)."""
    needles = ("forbidden", "http 403", "status=403", "403 forbidden", "not enough permissions")
    return [line for line in text.splitlines() if any(n in line.lower() for n in needles)]


def audit_denials(audit_log: str | None, username: str) -> list[dict[str, Any]]:
    """Write requests by ``username`` the API server refused (the audit policy logs write verbs)."""
    if not audit_log or not os.path.exists(audit_log):
        return []
    out = []
    with open(audit_log, errors="replace") as f:
        for line in f:
            if username not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("user", {}).get("username") != username:
                continue
            if (event.get("responseStatus") or {}).get("code") == 403:
                out.append({"verb": event.get("verb"), "uri": event.get("requestURI")})
    return out
