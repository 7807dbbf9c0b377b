"""The operator image, built with the real Docker engine and run against the real cluster.

No registry is reachable, so the image is built FROM a debootstrap'ed Debian imported into the engine
(``hack/test-images.sh base``, cached there after the first run) with wheels built on the host
(``hack/build-image.sh --local-base``). The container then runs the operator with host networking (the
API server listens on 127.0.0.1), as the chart's pod would: read-only root filesystem, a tmpfs at /tmp,
no capabilities, no privilege escalation, uid 65532.

Lives under tests/k8s/ for the ``cluster`` fixture; also marked ``docker``.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from chart_support import (
    CHART,
    REPO,
    apply_sample,
    flat_kubeconfig,
    forbidden_lines,
    free_port,
    get_json,
    helm,
    http_status,
    service_account_token,
    short_id,
    wait_deleted,
    wait_for,
    wait_ready,
)

pytestmark = pytest.mark.docker

IMAGE = "xw-operator:test"


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def operator_image() -> str:
    up = subprocess.run(["bash", str(REPO / "hack" / "docker.sh"), "up"], capture_output=True, text=True, timeout=900)
    assert up.returncode == 0, f"hack/docker.sh up failed:\n{up.stderr}"
    started = time.monotonic()
    build = subprocess.run(
        ["bash", str(REPO / "hack" / "build-image.sh"), "--local-base", "--tag", IMAGE],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert build.returncode == 0, f"hack/build-image.sh failed:\n{build.stderr}"
    assert build.stdout.strip() == IMAGE
    sys.stderr.write(f"\n[operator image] built {IMAGE} in {time.monotonic() - started:.0f}s\n{build.stderr}")
    return IMAGE


def test_image_runs_xw_as_non_root_with_xw_operator_entrypoint(operator_image: str) -> None:
    out = docker("run", "--rm", "--entrypoint", "xw", operator_image, "--version").stdout
    assert out.strip() == "xw, version 0.1.0"
    config = json.loads(docker("image", "inspect", operator_image).stdout)[0]["Config"]
    assert config["Entrypoint"] == ["xw", "operator"]
    assert config["User"] == "65532:65532"
    ident = docker("run", "--rm", "--entrypoint", "id", operator_image).stdout
    assert ident.startswith("uid=65532(xw) gid=65532(xw)")
    # Only runtime pieces: no pip/setuptools in the venv, no build tree, the shipped devices.yaml packaged.
    probe = (
        "import importlib.util as u, xw_operator.devices as d;"
        "print(u.find_spec('pip') is None, u.find_spec('setuptools') is None,"
        " d.packaged_devices_config_path().is_file())"
    )
    out = docker("run", "--rm", "--entrypoint", "python3", operator_image, "-c", probe).stdout
    assert out.split() == ["True", "True", "True"]
    assert (
        docker("run", "--rm", "--entrypoint", "sh", operator_image, "-c", "test -e /src", check=False).returncode != 0
    )
    # `xw operator --help` works through the entrypoint.
    assert "--devices-configmap" in docker("run", "--rm", operator_image, "--help").stdout


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"xw-operator-test-{short_id()}"
    yield name
    docker("rm", "-f", name, check=False)


def test_image_runs_the_operator_against_the_cluster_to_ready(
    operator_image: str, cluster: Any, namespace: str, tmp_path: Path, container_name: str
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(flat_kubeconfig(cluster)))
    kubeconfig.chmod(0o644)  # readable by the image's uid 65532
    port = free_port()
    # --namespace, not --all-namespaces: the shared cluster may hold other test sessions' instances.
    docker(
        "run", "-d", "--name", container_name, "--network", "host",
        "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "-v", f"{kubeconfig}:/kubeconfig:ro", "-e", "KUBECONFIG=/kubeconfig",
        operator_image, "--namespace", namespace, f"--liveness=http://127.0.0.1:{port}/healthz",
        "--metrics-address=127.0.0.1", f"--metrics-port={free_port()}",
    )  # fmt: skip

    def logs() -> str:
        proc = docker("logs", container_name, check=False)
        return proc.stdout + proc.stderr

    def running() -> bool:
        state = json.loads(docker("inspect", container_name).stdout)[0]["State"]
        assert state["Running"], f"operator container exited ({state['ExitCode']}):\n{logs()}"
        return True

    try:
        wait_for(
            "the containerised operator's liveness endpoint",
            lambda: running() and http_status(f"http://127.0.0.1:{port}/healthz") == 200,
            60,
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs()}") from None
    name = "qwen3-8b"
    apply_sample(cluster, namespace, name)
    wait_ready(cluster, namespace, name, logs)
    dep = get_json(cluster, "deployment", name, "-n", namespace)
    assert dep is not None and dep["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "xw-operator"
    wait_deleted(cluster, namespace, name)
    assert running()
    docker("stop", "-t", "30", container_name)
    state = json.loads(docker("inspect", container_name).stdout)[0]["State"]
    assert state["ExitCode"] == 0, f"operator did not stop cleanly on SIGTERM ({state['ExitCode']}):\n{logs()}"


def test_image_in_cluster_mode_with_the_chart_args_and_service_account(
    operator_image: str, cluster: Any, namespace: str, tmp_path: Path, container_name: str
) -> None:
    """The image as the chart's pod runs it: in-cluster config from a projected-style token directory,
    the installed Deployment's args and env, no kubeconfig at all."""
    rid = short_id()
    release, release_ns = f"xwimg-{rid}", f"xw-img-{rid}"
    port = free_port()
    helm(
        cluster, tmp_path,
        "install", release, str(CHART), "-n", release_ns, "--create-namespace", "--set", "installCRDs=false",
        "--set", f"watchNamespaces={{{namespace}}}", "--set", f"livenessPort={port}",
        "--set", "image.repository=xw-operator", "--set", "image.tag=test", "--set", "logFormat=json",
    )  # fmt: skip
    try:
        dep = get_json(cluster, "deployment", f"{release}-xw-operator", "-n", release_ns)
        assert dep is not None
        spec = dep["spec"]["template"]["spec"]
        c = spec["containers"][0]
        assert c["image"] == operator_image

        # What the kubelet would project: token, CA bundle, namespace.
        sa_dir = tmp_path / "serviceaccount"
        sa_dir.mkdir()
        (sa_dir / "token").write_text(service_account_token(cluster, release_ns, spec["serviceAccountName"]))
        kc = flat_kubeconfig(cluster)["clusters"][0]["cluster"]
        (sa_dir / "ca.crt").write_bytes(base64.b64decode(kc["certificate-authority-data"]))
        (sa_dir / "namespace").write_text(release_ns)
        for f in [sa_dir, *sa_dir.iterdir()]:
            f.chmod(0o755 if f.is_dir() else 0o644)
        server = urlparse(kc["server"])
        env = ["-e", f"KUBERNETES_SERVICE_HOST={server.hostname}", "-e", f"KUBERNETES_SERVICE_PORT={server.port}"]
        for var in c["env"]:
            value = var.get("value")
            if value is None:  # downward API fields
                value = {"metadata.name": container_name, "metadata.namespace": release_ns}[
                    var["valueFrom"]["fieldRef"]["fieldPath"]
                ]
            env += ["-e", f"{var['name']}={value}"]
        docker(
            "run", "-d", "--name", container_name, "--network", "host", "--user", "65532:65532",
            "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "-v", f"{sa_dir}:/var/run/secrets/kubernetes.io/serviceaccount:ro", *env,
            operator_image, *c["args"],
        )  # fmt: skip

        def logs() -> str:
            proc = docker("logs", container_name, check=False)
            return proc.stdout + proc.stderr

        url = f"http://127.0.0.1:{port}/healthz"
        try:
            wait_for("liveness of the in-cluster operator", lambda: http_status(url) == 200, 60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{logs()}") from None
        name = "qwen3-8b"
        apply_sample(cluster, namespace, name)
        wait_ready(cluster, namespace, name, logs)
        wait_deleted(cluster, namespace, name)
        text = logs()
        assert not forbidden_lines(text), text
        # --json-logs (logFormat=json): every line the operator prints is one JSON object.
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines and all(line.startswith("{") and json.loads(line) for line in lines), lines[:5]
    finally:
        docker("rm", "-f", container_name, check=False)
        helm(cluster, tmp_path, "uninstall", release, "-n", release_ns, "--wait", check=False)
        cluster.kubectl("delete", "namespace", release_ns, "--wait=false", "--ignore-not-found", check=False)
