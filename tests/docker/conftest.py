"""Docker-mode integration tests: a real Docker engine, stand-in engine images, fake devices and sysfs.

The session starts the engine itself (``hack/docker.sh up``; installs docker.io when missing) and stops it
at the end when it was not running before. Nothing is skipped silently: an engine that cannot start fails
the session with the script's output.

Each test gets its own host (``XwHost``): a state directory with a fresh server name, a fake ``/dev`` of
``mknod``-made char devices (1:3 = /dev/null's numbers, harmless), a fake sysfs tree and a devices.yaml
whose chip profiles point at those nodes. Containers carrying the test's server name are removed after
the test, whatever happened.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from xw_docker_host import REPO, XwHost, mknod, pci_function, write_devices_yaml

import docker


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.docker)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "docker: needs a real Docker engine (hack/docker.sh up)")


def _script(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[docker.DockerClient]:
    was_up = _script("hack/docker.sh", "status").returncode == 0
    started = time.monotonic()
    up = _script("hack/docker.sh", "up")
    if up.returncode != 0:
        pytest.fail(f"hack/docker.sh up failed (exit {up.returncode}):\n{up.stderr}\n{up.stdout}", pytrace=False)
    engine_s = time.monotonic() - started
    images = _script("hack/test-images.sh")
    if images.returncode != 0:
        pytest.fail(f"hack/test-images.sh failed (exit {images.returncode}):\n{images.stderr}", pytrace=False)
    sys.stderr.write(
        f"\n[docker tests] engine ready in {engine_s:.1f}s, images in {time.monotonic() - started - engine_s:.1f}s\n"
    )
    client = docker.from_env()
    yield client
    client.close()
    if not was_up:
        _script("hack/docker.sh", "down")


@pytest.fixture
def host(docker_engine: docker.DockerClient, tmp_path: Path) -> Iterator[XwHost]:
    root = tmp_path
    (root / "dev").mkdir()
    for i in range(8):
        mknod(root / "dev" / f"davinci{i}")
    for i in range(4):
        mknod(root / "dev" / f"duo{i}")
    for name in ("davinci_manager", "devmm_svm", "hisi_hdc"):
        mknod(root / "dev" / name, 1, 5)  # /dev/zero's numbers
    (root / "driver").mkdir()
    (root / "driver" / "version.info").write_text("driver 1.0\n")
    (root / "cache").mkdir()
    sysfs = root / "sys"
    for n in range(8):  # test-npu, variant B1 (subsystem 0x3001), PCI functions in address order
        pci_function(sysfs, f"0000:{0x81 + n:02x}:00.0", "0x19e5", "0xd802", "0x3001")
    for n in range(2):  # test-duo: 2 functions x 2 chips
        pci_function(sysfs, f"0000:{0x11 + n:02x}:00.0", "0x19e5", "0xd500", "0x0100")
    pci_function(sysfs, "0000:00:1f.0", "0x8086", "0x1234", "0x0000")  # unrelated device: ignored
    state = root / "state"
    state.mkdir()
    server_name = f"t{secrets.token_hex(4)}"
    (state / "server_name").write_text(server_name + "\n")
    env = dict(os.environ)
    env.update(
        XW_STATE_DIR=str(state),
        XW_SYSFS_ROOT=str(sysfs),
        XW_DEVICES_CONFIG=str(write_devices_yaml(root)),
        XW_PORT_RANGE=os.environ.get("XW_TEST_PORT_RANGE", "28000-28999"),
    )
    h = XwHost(root=root, client=docker_engine, server_name=server_name, env=env)
    try:
        yield h
    finally:
        h.cleanup()
        shutil.rmtree(root / "dev", ignore_errors=True)
