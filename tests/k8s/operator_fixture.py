"""The operator running for real: ``xw operator`` as a subprocess against the test cluster.

One operator per test session, watching all namespaces (tests use fresh namespaces, so they do not see
each other's instances); it reads devices.yaml from a temporary copy that tests may rewrite, and
restores, to exercise live reload. Its log is printed when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
XW = Path(sys.executable).with_name("xw")
SHIPPED_DEVICES = REPO / "operator" / "xw_operator" / "data" / "devices.yaml"
CRD = REPO / "crds" / "modelinstances.xw.dev.yaml"
LWS_CRD = "leaderworkersets.leaderworkerset.x-k8s.io"


def has_lws(cluster: Any) -> bool:
    """The cluster serves LeaderWorkerSets (hack/cluster.sh up installs the LWS CRD and controller)."""
    return cluster.kubectl("get", "crd", LWS_CRD, check=False).returncode == 0


# The operator's own namespace in tests: where it persists its last good devices.yaml (and, in the HA
# tests, its Lease). Created once, never deleted (like a release namespace).
OPERATOR_NAMESPACE = "xw-operator-test"
LAST_GOOD = f"{OPERATOR_NAMESPACE}/xw-operator-last-good"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OperatorProcess:
    def __init__(
        self,
        cluster: Any,
        workdir: Path,
        *,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        devices_text: str | None = None,
    ) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.devices_path = workdir / "devices.yaml"
        self.devices_path.write_text(devices_text or SHIPPED_DEVICES.read_text(encoding="utf-8"), encoding="utf-8")
        self.port = free_port()
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        # Multi-node support (LeaderWorkerSet watch) whenever the cluster has the LWS CRD.
        self.multi_node = has_lws(cluster)
        # Scope and extras: all namespaces and the last-good ConfigMap unless a test says otherwise.
        self.args = args if args is not None else ["--all-namespaces", "--last-good-configmap", LAST_GOOD]
        self.extra_env = env or {}

    @property
    def log_path(self) -> Path:
        return self.workdir / f"operator-{self.starts}.log"

    @property
    def healthz_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/healthz"

    def start(self) -> None:
        self.starts += 1
        env = self.cluster.env()
        env["XW_CONFIG_POLL_SECONDS"] = "1"
        env["PYTHONWARNINGS"] = "ignore"
        env.update(self.extra_env)
        cmd = [
            str(XW),
            "operator",
            *self.args,
            "--devices-config",
            str(self.devices_path),
            "--liveness",
            self.healthz_url,
            *(["--multi-node"] if self.multi_node else []),
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
        ]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                self.health()
                return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"operator liveness endpoint never answered:\n{self.log_text()}")

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.healthz_url, timeout=5) as rsp:
            data: dict[str, Any] = json.loads(rsp.read())
            return data

    def metrics(self) -> dict[str, float]:
        """The operator's /metrics, as ``{'name{label="v",...}': value}`` (labels sorted)."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as rsp:
            text = rsp.read().decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL: no cleanup at all (no Lease release, handlers cut mid-way)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return "\n".join(
            p.read_text(encoding="utf-8", errors="replace")[-20000:]
            for p in sorted(self.workdir.glob("operator-*.log"))
        )

    def current_log(self) -> str:
        """The log of the running process only (not of earlier starts)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def write_devices(self, text: str) -> None:
        """Replace devices.yaml atomically, as the kubelet does for a mounted ConfigMap."""
        tmp = self.devices_path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.devices_path)

    def restore_devices(self) -> None:
        self.write_devices(SHIPPED_DEVICES.read_text(encoding="utf-8"))


def ensure_operator_namespace(cluster: Any) -> None:
    if cluster.kubectl("get", "namespace", OPERATOR_NAMESPACE, check=False).returncode != 0:
        cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)


def install_crd(cluster: Any) -> None:
    if CRD.exists():
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    else:
        text = subprocess.run([str(XW), "crds"], check=True, capture_output=True, text=True).stdout
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=text)
    wait_for_crd(cluster)


def wait_for_crd(cluster: Any, timeout: float = 60) -> None:
    """Until the CRD is Established and discovery serves ``mi``.

    Polled rather than ``kubectl wait --for=condition=Established``: on a CRD created a moment ago that
    has no status yet, kubectl wait fails at once ("<nil> is of the type <nil>") instead of waiting.
    """
    deadline = time.monotonic() + timeout
    query = '{.status.conditions[?(@.type=="Established")].status}'
    while True:
        got = cluster.kubectl("get", "crd", "modelinstances.xw.dev", "-o", f"jsonpath={query}", check=False)
        if got.stdout.strip() == "True" and cluster.kubectl("get", "mi", "-A", check=False).returncode == 0:
            return
        assert time.monotonic() < deadline, f"CRD modelinstances.xw.dev not served after {timeout:.0f}s: {got.stderr}"
        time.sleep(0.5)


@pytest.fixture(scope="session")
def xw_operator(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    install_crd(cluster)
    ensure_operator_namespace(cluster)
    op = OperatorProcess(cluster, tmp_path_factory.mktemp("operator"))
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def operator_log_on_failure(
    xw_operator: OperatorProcess, request: pytest.FixtureRequest
) -> Iterator[Callable[[], str]]:
    failed_before = request.session.testsfailed
    yield xw_operator.log_text
    if request.session.testsfailed > failed_before:  # the call phase has reported by teardown time
        print("----- operator log -----\n" + xw_operator.log_text()[-15000:])


@contextmanager
def session_operator_stopped(request: pytest.FixtureRequest) -> Iterator[None]:
    """The session's operator (all namespaces) stopped for a module that runs its own operator or drives
    a Reconciler itself, and started again afterwards: two operators on one instance revert each other."""
    session_operator = request.getfixturevalue("xw_operator")
    session_operator.stop()
    try:
        yield
    finally:
        session_operator.start()
