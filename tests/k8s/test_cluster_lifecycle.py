"""hack/cluster.sh up && down, twice, on a separate state dir and ports: every start works, `up` on a
running cluster is a no-op, and `down` leaves no process behind."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

CLUSTER_SH = Path(__file__).resolve().parents[2] / "hack" / "cluster.sh"

PORTS = {
    "XW_ETCD_PORT": "12479",
    "XW_ETCD_PEER_PORT": "12480",
    "XW_APISERVER_PORT": "16543",
    "XW_KCM_PORT": "16357",
    "XW_SCHEDULER_PORT": "16359",
    "XW_KWOK_PORT": "16180",
}


COMPONENTS = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "lws-controller"}


def processes_mentioning(text: str) -> list[str]:
    """Cluster component processes whose command line mentions `text` (the state dir)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        cmd = " ".join(argv)
        if text in cmd and Path(argv[0]).name in COMPONENTS:
            found.append(f"{pid} {cmd}")
    return found


def run(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(CLUSTER_SH), *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_up_down_twice_leaves_no_process(cluster: Any, tmp_path: Path) -> None:
    bin_dir = Path(run(dict(os.environ), "bin-dir").stdout.strip())
    if not (bin_dir / "kube-apiserver").exists():
        pytest.skip("local cluster binaries not built (make cluster-binaries)")
    state = tmp_path / "state"
    env = dict(os.environ, XW_CLUSTER_DIR=str(state), **PORTS)
    env.pop("KUBECONFIG", None)
    try:
        for round_ in (1, 2):
            t0 = time.monotonic()
            up = run(env, "up")
            took = time.monotonic() - t0
            assert up.returncode == 0, up.stderr[-3000:]
            lines = up.stdout.strip().splitlines()
            assert lines[-2] == f"export KUBECONFIG={state}/kubeconfig", lines
            assert lines[-1].startswith(f"export PATH={bin_dir}:"), lines
            print(f"round {round_}: up took {took:.1f}s")  # reported, not asserted (no timing assertions)
            assert processes_mentioning(str(state)), "no cluster process found after up"

            again = run(env, "up")
            assert again.returncode == 0, again.stderr[-3000:]
            assert again.stdout == up.stdout
            assert "already up" in again.stderr

            down = run(env, "down")
            assert down.returncode == 0, down.stderr[-3000:]
            assert processes_mentioning(str(state)) == []
            assert not (state / "etcd").exists()
            assert list((state / "pids").glob("*.pid")) == []
        # down when nothing runs is safe
        assert run(env, "down").returncode == 0
    finally:
        run(env, "down")
