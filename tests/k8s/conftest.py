"""Fixtures for the Kubernetes integration tier (tier 2 of the README's test tiers).

Every test under tests/k8s/ gets the ``k8s`` marker, so ``pytest -m "not k8s"`` skips the tier.

``cluster`` (session): if ``$KUBECONFIG`` points at a reachable cluster it is used unchanged (a kind
cluster on a laptop works the same); otherwise ``hack/cluster.sh up`` starts the local loopback cluster
(building the binaries first when they are not cached) and ``hack/cluster.sh down`` stops it at the end
of the session -- only if this fixture started it. Set ``XW_KEEP_CLUSTER=1`` to leave it running.

``namespace`` (function): a fresh namespace per test, cleaned up afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# The shared operator fixtures, defined once here: a fixture imported into several test modules would be
# a separate definition in each, i.e. one "session" operator per module, all running at once.
from operator_fixture import operator_log_on_failure, xw_operator  # noqa: F401

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CLUSTER_SH = REPO / "hack" / "cluster.sh"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "k8s: needs a Kubernetes API server (local loopback cluster or $KUBECONFIG)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees every collected item of the session, so only mark the ones below tests/k8s/.
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.k8s)


def pytest_collection_finish(session: pytest.Session) -> None:
    # A cold build of the cluster binaries takes tens of minutes, far beyond the per-test timeout
    # (pytest-timeout also covers fixture setup), so build here, before any test starts, when k8s
    # tests are selected and no external cluster is given. A warm run only verifies the cache (<1 s).
    if os.environ.get("KUBECONFIG") or not any(
        HERE in Path(str(item.path)).resolve().parents for item in session.items
    ):
        return
    capman = session.config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        with capman.global_and_fixture_disabled():
            _script("build", capture=False)
    else:
        _script("build", capture=False)


def _script(*args: str, capture: bool = True, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    # stderr (progress, build output) goes straight to the terminal / pytest's capture.
    return subprocess.run(
        ["bash", str(CLUSTER_SH), *args],
        stdout=subprocess.PIPE if capture else None,
        text=True,
        timeout=timeout,
        check=True,
    )


def _exports(stdout: str) -> dict[str, str]:
    out = {}
    for line in stdout.splitlines():
        m = re.match(r"^export (\w+)=(.*)$", line.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


@dataclass
class Cluster:
    kubeconfig: str
    bin_dir: str
    audit_log: str | None
    started_here: bool = False

    @property
    def kubectl_path(self) -> str:
        return str(Path(self.bin_dir) / "kubectl")

    @property
    def helm_path(self) -> str:
        return str(Path(self.bin_dir) / "helm")

    def env(self) -> dict[str, str]:
        """Environment for subprocesses (operator, helm, ...) that should talk to this cluster."""
        env = dict(os.environ)
        env["KUBECONFIG"] = self.kubeconfig
        env["PATH"] = self.bin_dir + os.pathsep + env.get("PATH", "")
        return env

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.kubectl_path, "--kubeconfig", self.kubeconfig, *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed (rc={proc.returncode}):\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc


def _reachable(kubectl: str, kubeconfig: str) -> bool:
    try:
        proc = subprocess.run(
            [kubectl, "--kubeconfig", kubeconfig, "--request-timeout=10s", "get", "--raw", "/readyz"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def _pick_bin_dir(local_bin: str) -> str:
    if (Path(local_bin) / "kubectl").exists():
        return local_bin
    found = shutil.which("kubectl")
    if found:
        return str(Path(found).parent)
    return local_bin


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    local = _exports(_script("env").stdout)
    local_kubeconfig = local["KUBECONFIG"]
    local_bin = _script("bin-dir").stdout.strip()
    local_audit = _script("audit-log-path").stdout.strip()

    env_kc = os.environ.get("KUBECONFIG", "")
    if env_kc and ":" not in env_kc:
        bin_dir = _pick_bin_dir(local_bin)
        kubectl = str(Path(bin_dir) / "kubectl")
        if Path(env_kc).exists() and _reachable(kubectl, env_kc):
            is_local = Path(env_kc).resolve() == Path(local_kubeconfig).resolve()
            yield Cluster(env_kc, bin_dir, local_audit if is_local else None)
            return

    # Local loopback cluster: reuse it when it is already running, otherwise start (and later stop) it.
    if (
        Path(local_kubeconfig).exists()
        and (Path(local_bin) / "kubectl").exists()
        and _reachable(str(Path(local_bin) / "kubectl"), local_kubeconfig)
    ):
        yield Cluster(local_kubeconfig, local_bin, local_audit)
        return

    exports = _exports(_script("up").stdout)
    c = Cluster(exports["KUBECONFIG"], local_bin, local_audit, started_here=True)
    try:
        yield c
    finally:
        if os.environ.get("XW_KEEP_CLUSTER") != "1":
            _script("down", capture=False, timeout=120)


def _ns_name(request: pytest.FixtureRequest) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    return f"t-{base}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    ns = _ns_name(request)
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "xw.dev/test=true")
    try:
        yield ns
    finally:
        # Custom resources of group xw.dev first (so the operator's finalizers run while the namespace
        # still exists), then the namespace itself without blocking on it.
        res = cluster.kubectl("api-resources", "--api-group=xw.dev", "--namespaced=true", "-o", "name", check=False)
        for kind in res.stdout.split() if res.returncode == 0 else []:
            proc = cluster.kubectl(
                "delete",
                kind,
                "--all",
                "-n",
                ns,
                "--wait=true",
                "--timeout=60s",
                "--ignore-not-found",
                check=False,
                timeout=90,
            )
            if proc.returncode != 0 and "the server doesn't have a resource type" not in proc.stderr:
                print(f"warning: deleting {kind} in {ns}: {proc.stderr.strip()}")
        cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)
