"""Docker mode under faults: several users on one host, and a Docker daemon that crashes or is restarted.

The daemon tests run on a *private* second engine (``XW_DOCKER_PRIVATE``: own socket, data-root,
exec-root, bridge; see hack/docker.sh) so killing it never disturbs the shared engine other tests use.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from xw_docker_host import NPU, OK_IMAGE, REPO, XwHost

import docker


def _run_ok(host: XwHost, *args: str) -> subprocess.CompletedProcess[str]:
    result = host.xw(*args)
    assert result.returncode == 0, f"xw {' '.join(args)} failed:\n{result.stderr}"
    return result


def _other_user(host: XwHost, name: str) -> XwHost:
    """Same host (sysfs, /dev, devices.yaml, engine), another XW_STATE_DIR and so another server name."""
    state = host.root / name
    state.mkdir()
    server = f"u{secrets.token_hex(4)}"
    (state / "server_name").write_text(server + "\n")
    return XwHost(root=host.root, client=host.client, server_name=server, env={**host.env, "XW_STATE_DIR": str(state)})


def _npu_held(host: XwHost) -> dict[int, str | None]:
    return {d["index"]: d["instance"] for d in host.devices() if d["chip"] == NPU}


def test_two_state_dirs_on_one_host_never_get_the_same_device(host: XwHost) -> None:
    alice, bob = _other_user(host, "alice"), _other_user(host, "bob")
    try:
        # Concurrently, from two state directories: each wants half of the 8 chips.
        a = alice.popen("create", "-f", str(alice.manifest("a4", count=4)))
        b = bob.popen("create", "-f", str(bob.manifest("b4", count=4)))
        assert a.wait(90) == 0, a.communicate()
        assert b.wait(90) == 0, b.communicate()
        got_a = set(alice.ps()["a4"]["devices"])
        got_b = set(bob.ps()["b4"]["devices"])
        assert len(got_a) == len(got_b) == 4 and not got_a & got_b, (got_a, got_b)
        # A third user sees every chip held (one view) and cannot get one.
        assert set(_npu_held(host).values()) == {"a4", "b4"}
        full = host.xw("create", "-f", str(host.manifest("c1", count=1)))
        assert full.returncode == 1 and "1 test-npu device(s) needed but 0 free" in full.stderr, full.stderr
        # Ports too: bob asking for alice's port is refused.
        port = alice.ps()["a4"]["host_port"]
        clash = bob.xw("create", "-f", str(bob.manifest("b-port", chip="test-duo", port=port)))
        assert clash.returncode == 1 and f"host port {port} is reserved by instance a4" in clash.stderr
        # Each still lists only its own instances.
        assert set(alice.ps()) == {"a4"} and set(bob.ps()) == {"b4"}
    finally:
        alice.cleanup()
        bob.cleanup()


# --------------------------------------------------------------------------- a private engine to crash


def _engine_env() -> dict[str, str]:
    low = int(os.environ.get("XW_TEST_PORT_RANGE", "28000-28999").split("-")[0])
    return {
        **os.environ,
        "XW_DOCKER_PRIVATE": f"k{low}",
        # One /24 per test port range, so helpers running this test at once get distinct bridges.
        "XW_DOCKER_BRIDGE_CIDR": f"172.31.{(low // 100) % 250}.1/24",
    }


def _engine(step: str) -> str:
    result = subprocess.run(
        ["bash", "hack/docker.sh", step], cwd=REPO, env=_engine_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 or step == "pid", f"hack/docker.sh {step}: {result.stderr}"
    return result.stdout.strip()


@pytest.fixture(scope="module")
def private_engine(docker_engine: docker.DockerClient) -> Iterator[tuple[docker.DockerClient, str]]:
    started = time.monotonic()
    _engine("up")
    sock = Path.home() / ".cache" / "xw-operator" / f"docker-{_engine_env()['XW_DOCKER_PRIVATE']}" / "docker.sock"
    url = f"unix://{sock}"
    client = docker.DockerClient(base_url=url)
    try:
        client.images.get(OK_IMAGE)
    except docker.errors.ImageNotFound:
        client.images.load(b"".join(docker_engine.images.get(OK_IMAGE).save(named=True)))
    sys.stderr.write(f"\n[docker faults] private engine up with images in {time.monotonic() - started:.1f}s\n")
    yield client, url
    client.close()
    _engine("down")


def _wait_engine(url: str) -> docker.DockerClient:
    deadline = time.monotonic() + 60
    while True:
        try:
            client = docker.DockerClient(base_url=url)
            client.ping()
            return client
        except docker.errors.DockerException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _wait_state(host: XwHost, name: str, want: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        row = host.ps()[name]
        if row["state"] == want or time.monotonic() > deadline:
            return row
        time.sleep(0.5)


@pytest.mark.parametrize("kill", ["SIGKILL", "SIGTERM"])
def test_instances_come_back_after_the_daemon_dies(
    host: XwHost, private_engine: tuple[docker.DockerClient, str], kill: str
) -> None:
    client, url = private_engine
    host.client = client
    host.env["DOCKER_HOST"] = url
    _run_ok(host, "run", "-f", str(host.manifest("keep", count=4)), "--timeout", "60")
    _run_ok(host, "create", "-f", str(host.manifest("idle", count=2)))
    _run_ok(host, "run", "-f", str(host.manifest("halt", count=1)), "--timeout", "60")
    _run_ok(host, "stop", "halt", "--timeout", "5")
    before = host.ps()
    assert (before["keep"]["state"], before["idle"]["state"], before["halt"]["state"]) == (
        "ready",
        "created",
        "stopped",
    )

    pid = int(_engine("pid"))
    if kill == "SIGKILL":
        os.kill(pid, signal.SIGKILL)  # containerd and docker-proxy die with it; the containers' shims stay
        _engine("up")
    else:
        _engine("down")  # SIGTERM and wait: dockerd stops every container itself
        _engine("up")
    host.client = _wait_engine(url)

    # Nothing runs `xw start`: Docker brings the running instance back by itself, with the same devices
    # and port; the created one stays created and the one stopped on purpose stays stopped.
    after = {**host.ps(), "keep": _wait_state(host, "keep", "ready")}
    assert after["keep"]["state"] == "ready", after["keep"]
    assert after["idle"]["state"] == "created"
    assert after["halt"]["state"] == "stopped"
    for name in ("keep", "idle", "halt"):
        assert after[name]["devices"] == before[name]["devices"]
        assert after[name]["host_port"] == before[name]["host_port"]
    held = {d["index"]: d["instance"] for d in json.loads(host.xw("devices", "-o", "json").stdout) if d["chip"] == NPU}
    assert held == {0: "keep", 1: "keep", 2: "keep", 3: "keep", 4: "idle", 5: "idle", 6: "halt", 7: None}
    # And the stopped one still starts on request.
    _run_ok(host, "start", "halt", "--wait", "--timeout", "60")
