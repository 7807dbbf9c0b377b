"""Lifecycle of one instance through the real CLI against a real Docker engine."""

from __future__ import annotations

import json
import urllib.request

from xw_docker_host import OK_IMAGE, XwHost


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return int(resp.status), resp.read()


def test_run_stop_start_rm_lifecycle(host: XwHost) -> None:
    path = host.manifest("life", count=2, served="org/life-model")
    result = host.xw("run", "-f", str(path), "--timeout", "60")
    assert result.returncode == 0, result.stderr
    assert "ready" in result.stdout

    row = host.ps()["life"]
    assert row["state"] == "ready"
    assert row["model"] == "org/life-model"
    assert row["devices"] == [0, 1]
    port = row["host_port"]
    status, body = _get(f"http://127.0.0.1:{port}/v1/models")
    assert status == 200
    assert [m["id"] for m in json.loads(body)["data"]] == ["org/life-model"]

    stop = host.xw("stop", "life", "--timeout", "5")
    assert stop.returncode == 0, stop.stderr
    row = host.ps()["life"]
    assert row["state"] == "stopped", row  # a stop on purpose is not an error or "exited"
    assert row["exit_code"] is None
    # A stopped instance keeps its devices (so `xw start` always works).
    held = {d["index"]: d["instance"] for d in host.devices() if d["chip"] == "test-npu"}
    assert held[0] == held[1] == "life"

    start = host.xw("start", "life", "--wait", "--timeout", "60")
    assert start.returncode == 0, start.stderr
    assert host.ps()["life"]["state"] == "ready"

    busy = host.xw("rm", "life")
    assert busy.returncode == 1
    assert "stop" in busy.stderr and "--force" in busy.stderr

    removed = host.xw("rm", "life", "--force")
    assert removed.returncode == 0, removed.stderr
    assert "life" not in host.ps()
    assert host.containers() == []
    assert all(d["instance"] is None for d in host.devices())
    assert OK_IMAGE  # the image stays for the next test
