"""Docker mode against a real engine: labels, sandbox inside the container, allocation, ports, readiness,
failure cleanup and rediscovery. Every test drives the real ``xw`` CLI in a subprocess, as a user would."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest
import yaml
from xw_docker_host import DUO, EXITS_IMAGE, NPU, UNHEALTHY_IMAGE, XwHost, write_devices_yaml

import docker


def _exec(container: docker.models.containers.Container, cmd: str) -> tuple[int, str]:
    code, out = container.exec_run(["/bin/sh", "-c", cmd])
    return int(code), out.decode()


def _run_ok(host: XwHost, *args: str) -> subprocess.CompletedProcess[str]:
    result = host.xw(*args)
    assert result.returncode == 0, f"xw {' '.join(args)} failed:\n{result.stderr}"
    return result


def test_container_labels_name_and_host_config(host: XwHost) -> None:
    _run_ok(host, "run", "-f", str(host.manifest("lab", count=2, served="org/m")), "--timeout", "60")
    c = host.container("lab")
    assert c.name == f"lab-{host.server_name}"
    labels = c.labels
    assert labels["xw.runtime"] == "vllm-docker"
    assert labels["xw.model_id"] == "org/m"
    assert labels["xw.alias"] == "lab"
    assert labels["xw.instance_id"] == "lab"
    assert labels["xw.backend_type"] == "vllm"
    assert labels["xw.deployment_mode"] == "docker"
    assert labels["xw.device_indices"] == "0,1"
    assert labels["xw.server_name"] == host.server_name
    assert labels["xw.chip"] == NPU
    hc = c.attrs["HostConfig"]
    assert hc["RestartPolicy"]["Name"] == "always"
    assert hc["Init"] is True
    assert hc["Runtime"] == "runc"
    binding = hc["PortBindings"]["8000/tcp"]
    assert binding == [{"HostIp": "127.0.0.1", "HostPort": labels["xw.host_port"]}]
    low, high = map(int, host.env["XW_PORT_RANGE"].split("-"))
    assert low <= int(labels["xw.host_port"]) <= high


def test_sandbox_is_visible_inside_the_container(host: XwHost) -> None:
    path = host.manifest("box", count=2, indices=[2, 5], env={"USER_VAR": "hello"})
    _run_ok(host, "run", "-f", str(path), "--timeout", "60")
    c = host.container("box")
    dev = host.dev
    # Only the allocated indexed nodes, plus every control node, with the host's device numbers.
    code, out = _exec(c, f"ls {dev}")
    assert code == 0
    assert sorted(out.split()) == sorted(["davinci2", "davinci5", "davinci_manager", "devmm_svm", "hisi_hdc"])
    code, out = _exec(c, f"stat -c '%t:%T' {dev}/davinci2 {dev}/davinci_manager")
    assert out.split() == ["1:3", "1:5"]
    code, _ = _exec(c, f"echo x > {dev}/davinci2")  # rwm: writable
    assert code == 0
    # Environment: device visibility = allocated host indices, static and user env.
    env = dict(line.split("=", 1) for line in _exec(c, "env")[1].splitlines() if "=" in line)
    assert env["ASCEND_RT_VISIBLE_DEVICES"] == "2,5"
    assert env["ASCEND_GLOBAL_LOG_LEVEL"] == "3"
    assert env["USER_VAR"] == "hello"
    # shm_size_gb: 0.25 (a float the seed dropped) -> 256 MiB /dev/shm.
    _, out = _exec(c, "df -k /dev/shm | tail -1")
    assert int(out.split()[1]) == 256 * 1024
    # Capabilities: SYS_RAWIO (17) and IPC_LOCK (14) added; not privileged (SYS_ADMIN, 21, absent).
    _, out = _exec(c, "grep CapEff /proc/self/status")
    caps = int(out.split()[1], 16)
    assert caps & (1 << 17) and caps & (1 << 14)
    assert not caps & (1 << 21)
    # Mounts: driver read-only, cache read-write, model read-only at the engine's model path.
    assert _exec(c, "cat /usr/local/driver/version.info")[1].strip() == "driver 1.0"
    assert _exec(c, "touch /usr/local/driver/x")[0] != 0
    assert _exec(c, "touch /root/.cache/x")[0] == 0
    assert (host.root / "cache" / "x").exists()
    assert _exec(c, "ls /mnt/model")[1].split() == ["config.json"]
    assert _exec(c, "touch /mnt/model/x")[0] != 0
    # What the engine was told (the stand-in prints its arguments).
    logs = host.xw("logs", "box", "--tail", "100").stdout
    assert "args: serve /mnt/model --served-model-name box --port 8000 --tensor-parallel-size 2" in logs


def test_two_concurrent_runs_for_all_devices_exactly_one_wins(host: XwHost) -> None:
    a = host.popen("run", "-f", str(host.manifest("race-a", count=8)), "--timeout", "60")
    b = host.popen("run", "-f", str(host.manifest("race-b", count=8)), "--timeout", "60")
    results = {"race-a": (a.wait(90), *a.communicate()), "race-b": (b.wait(90), *b.communicate())}
    codes = sorted(code for code, _, _ in results.values())
    assert codes == [0, 1], results
    winner = next(n for n, r in results.items() if r[0] == 0)
    loser_err = next(r[2] for r in results.values() if r[0] == 1)
    assert "device allocation failed" in loser_err
    assert "8 test-npu device(s) needed but 0 free" in loser_err
    assert [c.name for c in host.containers()] == [f"{winner}-{host.server_name}"]
    assert {d["instance"] for d in host.devices() if d["chip"] == NPU} == {winner}


def test_topology_best_set_when_no_box_is_free(host: XwHost) -> None:
    # Boxes {0,1,2,3} and {4,5,6,7}; with 0 and 5 taken no box of 4 is free. Distance is 0 inside a box
    # and 1 across, so 3+1 chips cost 3 cross pairs, 2+2 cost 4: the best sets are three of one box plus
    # one of the other, and the lowest-index tie-break gives 1,2,3,4.
    _run_ok(host, "create", "-f", str(host.manifest("hold0", indices=[0])))
    _run_ok(host, "create", "-f", str(host.manifest("hold5", indices=[5])))
    _run_ok(host, "create", "-f", str(host.manifest("four", count=4)))
    assert host.container("four").labels["xw.device_indices"] == "1,2,3,4"
    # With a whole box free, the box is chosen.
    _run_ok(host, "rm", "hold5")
    _run_ok(host, "rm", "four")
    _run_ok(host, "create", "-f", str(host.manifest("four", count=4)))
    assert host.container("four").labels["xw.device_indices"] == "4,5,6,7"


def test_explicit_indices_are_checked_against_created_containers(host: XwHost) -> None:
    _run_ok(host, "create", "-f", str(host.manifest("first", count=2, indices=[2, 3])))
    clash = host.xw("run", "-f", str(host.manifest("second", count=2, indices=[3, 4])))
    assert clash.returncode == 1
    assert "device(s) 3 (held by first) are in use" in clash.stderr
    # Beyond the chip profile: bad input (exit 2).
    beyond = host.xw("create", "-f", str(host.manifest("third", indices=[9])))
    assert beyond.returncode == 2
    assert "device indices [9] do not exist" in beyond.stderr
    # In the profile but not on this host (one PCI function gone from sysfs): a runtime failure.
    shutil.rmtree(host.root / "sys" / "bus" / "pci" / "devices" / "0000:88:00.0")
    missing = host.xw("create", "-f", str(host.manifest("third", indices=[7])))
    assert missing.returncode == 1
    assert "spec.devices.indices [7] do not exist on this host's test-npu chips" in missing.stderr
    assert [c.name for c in host.containers()] == [f"first-{host.server_name}"]


def test_chip_types_keep_their_own_indices(host: XwHost) -> None:
    _run_ok(host, "create", "-f", str(host.manifest("npu-pair", count=2)))
    _run_ok(host, "create", "-f", str(host.manifest("duo-pair", chip=DUO, count=2)))
    # test-npu 0,1 are taken, yet the duo chips are numbered on their own: 2 PCI functions x 2 chips.
    assert host.container("duo-pair").labels["xw.device_indices"] == "0,1"
    assert host.container("duo-pair").labels["xw.chip"] == DUO
    rows = host.devices()
    duo = [(d["index"], d["pci_address"], d["instance"]) for d in rows if d["chip"] == DUO]
    assert duo == [
        (0, "0000:11:00.0", "duo-pair"),
        (1, "0000:11:00.0", "duo-pair"),
        (2, "0000:12:00.0", None),
        (3, "0000:12:00.0", None),
    ]
    npu = [d for d in rows if d["chip"] == NPU]
    assert [d["index"] for d in npu] == list(range(8))
    assert {d["variant"] for d in npu} == {"test-npu-b1"}
    # The duo instance only gets the duo nodes of its own indices.
    devices = [d["PathOnHost"] for d in host.container("duo-pair").attrs["HostConfig"]["Devices"]]
    assert sorted(devices) == sorted(
        [str(host.dev / "duo0"), str(host.dev / "duo1"), str(host.dev / "davinci_manager")]
    )


def test_unhealthy_engine_is_reported_and_never_ready(host: XwHost) -> None:
    result = host.xw("run", "-f", str(host.manifest("sick", image=UNHEALTHY_IMAGE)), "--timeout", "4")
    assert result.returncode == 1
    assert "not ready within 4s" in result.stderr
    assert "GET /health answered 404" in result.stderr
    row = host.ps()["sick"]
    assert row["state"] == "unhealthy"
    # /v1/models does list the model: health alone decides here.
    assert row["model"] == "sick"


def test_exiting_engine_is_reported_with_its_exit_code(host: XwHost) -> None:
    result = host.xw("run", "-f", str(host.manifest("dies", image=EXITS_IMAGE)), "--timeout", "60")
    assert result.returncode == 1
    assert "waiting for readiness failed" in result.stderr
    assert "exited with code 3" in result.stderr
    assert "served model name: dies" in result.stderr  # the log tail is part of the error
    # Docker keeps restarting it (always); ps reports the exit code, never "ready".
    deadline = time.monotonic() + 20
    seen = []
    while time.monotonic() < deadline:
        row = host.ps()["dies"]
        seen.append((row["state"], row["exit_code"]))
        if row["state"] == "exited":
            assert row["exit_code"] == 3
            break
        assert row["state"] == "starting" and "restarted" in row["detail"], row
        time.sleep(0.3)
    else:
        pytest.fail(f"never reported exited: {seen}")


def test_failed_create_leaves_nothing_and_frees_the_reservation(host: XwHost) -> None:
    write_devices_yaml(host.root, npu_runtime="no-such-runtime")
    result = host.xw("run", "-f", str(host.manifest("broken", count=8)))
    assert result.returncode == 1
    assert "create container failed" in result.stderr and "no-such-runtime" in result.stderr
    assert host.containers() == []
    write_devices_yaml(host.root)
    _run_ok(host, "create", "-f", str(host.manifest("after", count=8)))  # all 8 devices are free again


def test_failed_start_removes_the_container(host: XwHost) -> None:
    write_devices_yaml(host.root, extra_npu_device=str(host.dev / "missing_ctl"))
    result = host.xw("run", "-f", str(host.manifest("nostart", count=8)))
    assert result.returncode == 1
    assert "start container failed" in result.stderr
    assert "missing_ctl" in result.stderr
    assert host.containers() == []
    write_devices_yaml(host.root)
    _run_ok(host, "create", "-f", str(host.manifest("after", count=8)))


def test_missing_image_without_registry_is_a_clear_error(host: XwHost) -> None:
    result = host.xw("run", "-f", str(host.manifest("noimg", image="xw-test/engine:does-not-exist")))
    assert result.returncode == 1
    assert "image pull failed" in result.stderr
    assert "xw-test/engine:does-not-exist is not present locally and could not be pulled" in result.stderr
    assert host.containers() == []


def test_ports_explicit_free_taken_and_released(host: XwHost) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    _run_ok(host, "run", "-f", str(host.manifest("pinned", port=free)), "--timeout", "60")
    assert host.ps()["pinned"]["host_port"] == free
    again = host.xw("create", "-f", str(host.manifest("pinned2", port=free)))
    assert again.returncode == 1
    assert f"host port {free} is reserved by instance pinned" in again.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        busy = host.xw("create", "-f", str(host.manifest("busy", port=taken)))
    assert busy.returncode == 1
    assert f"host port {taken} on 127.0.0.1 is in use" in busy.stderr
    # Automatic ports skip the reserved ones; removing an instance releases its port.
    _run_ok(host, "create", "-f", str(host.manifest("auto1")))
    _run_ok(host, "create", "-f", str(host.manifest("auto2")))
    p1, p2 = host.ps()["auto1"]["host_port"], host.ps()["auto2"]["host_port"]
    assert p1 != p2
    _run_ok(host, "rm", "auto1")
    # Pinning the released port proves it is free again; the lowest free automatic port may be
    # another one if something else on the host released a lower port meanwhile.
    _run_ok(host, "create", "-f", str(host.manifest("auto3", port=p1)))
    assert host.ps()["auto3"]["host_port"] == p1
    assert [c.name for c in host.containers() if "busy" in c.name or "pinned2" in c.name] == []


def test_container_removed_by_hand_disappears(host: XwHost) -> None:
    _run_ok(host, "create", "-f", str(host.manifest("gone", count=8)))
    host.container("gone").remove(force=True)
    assert "gone" not in host.ps()
    assert all(d["instance"] is None for d in host.devices())
    _run_ok(host, "create", "-f", str(host.manifest("next", count=8)))


def test_bad_input_exits_2_with_one_line(host: XwHost) -> None:
    bad = host.root / "bad.yaml"
    bad.write_text("apiVersion: xw.dev/v1alpha1\nkind: ModelInstance\nmetadata: {name: x}\nspec: {devices: {}}\n")
    result = host.xw("run", "-f", str(bad))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    unknown = host.xw("stop", "nope")
    assert unknown.returncode == 1
    assert "no instance named 'nope'" in unknown.stderr


def test_a_multi_node_instance_is_refused_on_one_host(host: XwHost) -> None:
    path = host.manifest("big", count=8)
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["devices"]["nodes"] = 2
    path.write_text(yaml.safe_dump(doc))
    for command in ("run", "create"):
        result = host.xw(command, "-f", str(path))
        assert result.returncode == 2
        assert result.stderr.strip() == (
            "error: ModelInstance big: spec.devices.nodes is 2, but Docker mode runs on one host; use nodes: 1 "
            "(with at most the host's accelerators in count) or deploy it on Kubernetes"
        )
    assert host.containers() == []
