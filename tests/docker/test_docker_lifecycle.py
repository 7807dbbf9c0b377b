"""Lifecycle of one instance through the real CLI against a real Docker engine."""

from __future__ import annotations

import json
import time
import urllib.request

from xw_docker_host import XwHost


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


def test_no_wait_then_logs_follow_and_ps_table(host: XwHost) -> None:
    result = host.xw("run", "-f", str(host.manifest("quick", served="org/quick")), "--no-wait")
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith(": started")
    follow = host.popen("logs", "quick", "-f")
    assert follow.stdout is not None
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = follow.stdout.readline()
        lines.append(line)
        if "serving on :8000" in line:
            break
    follow.terminate()
    follow.wait(10)
    assert any("served model name: org/quick" in line for line in lines), lines
    assert follow.returncode is not None  # -f kept streaming until we stopped it

    tail = host.xw("logs", "quick", "--tail", "1")
    assert tail.returncode == 0
    assert len(tail.stdout.strip().splitlines()) == 1

    deadline = time.monotonic() + 30
    while host.ps()["quick"]["state"] != "ready" and time.monotonic() < deadline:
        time.sleep(0.5)
    table = host.xw("ps").stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "STATE", "CHIP", "DEVICES"]
    assert table[1].split()[:4] == ["quick", "ready", "test-npu", "0"]
