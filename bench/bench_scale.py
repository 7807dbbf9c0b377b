"""The operator at scale on the local cluster: N ModelInstances vs the same Deployments + Services created
directly, all measured in one run with one client (ratios, no absolute thresholds).

    .venv/bin/python bench/bench_scale.py [--instances N] [--keep]      (or: make bench; XW_BENCH_INSTANCES=N)

Uses the cluster of $KUBECONFIG when it is the local one of hack/cluster.sh (its audit log counts writes),
otherwise starts that cluster (and stops it afterwards). Creates ceil(N/4) kwok nodes of a bench-only
accelerator (``xw.dev/bench-gpu: 8``; each instance takes 2) and a devices.yaml with two chip keys on it:
``bench-gpu`` (N - 100 instances) and ``bench-gpu-b`` (100 instances), so a change of the latter touches
exactly 100 Deployments.

Phases and figures (goals from issue 14 in brackets):
1. direct: server-side apply of the rendered Deployment + Service of each instance, sequentially;
   time until all exist, and until all Deployments are Available (kubectl watches, timestamps on arrival).
2. operator: ``xw operator`` started on an empty namespace; the client creates the N ModelInstances
   sequentially; time until all Deployments exist [<= 1.15x direct] and all instances are Ready
   [<= 1.05x direct Available]; per instance, Deployment Available -> instance Ready lag p50/p95 [<= 1 s].
3. idle: audited writes by the operator's user in the namespace during 20 s [0].
4. restart: SIGTERM + start; writes until idle [0] and time until the operator went idle [<= 15 s].
5. devices.yaml change of bench-gpu-b: time until all 100 of its Deployments carry the new rendering [<= 5 s].
6. operator RSS with N Ready instances [<= 150 MiB], from /proc.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from xw_operator.devices import parse_devices_config
from xw_operator.instance import parse_instance
from xw_operator.k8s.client import ApiError, KubeApi, object_path
from xw_operator.k8s.reconcile import stamp
from xw_operator.plan import resolve
from xw_operator.render_kubernetes import render_kubernetes

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SH = REPO / "hack" / "cluster.sh"
SHIPPED_DEVICES = REPO / "configs" / "devices.yaml"
CRD = REPO / "crds" / "modelinstances.xw.dev.yaml"
XW = Path(sys.executable).with_name("xw")
RESOURCE = "xw.dev/bench-gpu"
ACCEL = "bench-gpu"
CHANGED = 100  # instances on the chip key whose profile the config change touches
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
PER_NODE = 4  # instances per node: 8 bench GPUs, 2 per instance


def log(msg: str) -> None:
    print(f"[bench_scale {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(*args: str, **kw: Any) -> str:
    return str(subprocess.run(list(args), check=True, capture_output=True, text=True, **kw).stdout)


# ------------------------------------------------------------------------------------------ cluster


@contextmanager
def local_cluster() -> Iterator[tuple[str, str, str]]:
    """(kubeconfig, kubectl, audit log) of the local cluster; started here when it is not running."""
    env = dict(line.removeprefix("export ").split("=", 1) for line in sh("bash", str(CLUSTER_SH), "env").splitlines())
    kubeconfig = os.environ.get("KUBECONFIG") or env["KUBECONFIG"]
    kubectl = str(Path(sh("bash", str(CLUSTER_SH), "bin-dir").strip()) / "kubectl")
    audit = sh("bash", str(CLUSTER_SH), "audit-log-path").strip()
    if Path(kubeconfig).resolve() != Path(env["KUBECONFIG"]).resolve():
        raise SystemExit(f"KUBECONFIG={kubeconfig} is not the local cluster of hack/cluster.sh (needed: audit log)")
    up = subprocess.run([kubectl, "--kubeconfig", kubeconfig, "get", "--raw", "/readyz"], capture_output=True)
    started = up.returncode != 0
    if started:
        log("starting the local cluster (hack/cluster.sh up)")
        subprocess.run(["bash", str(CLUSTER_SH), "up"], check=True, stdout=subprocess.DEVNULL)
    os.environ["KUBECONFIG"] = kubeconfig
    try:
        yield kubeconfig, kubectl, audit
    finally:
        if started and os.environ.get("XW_KEEP_CLUSTER") != "1":
            subprocess.run(["bash", str(CLUSTER_SH), "down"], check=False, stdout=subprocess.DEVNULL)


def api_client(kubeconfig: str) -> Any:
    """A client of this kubeconfig (the kubernetes library reads $KUBECONFIG once, at import: a cluster
    started by this bench would otherwise be unknown to it)."""
    configuration = k8s_client.Configuration()
    k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
    return k8s_client.ApiClient(configuration)


def install_crd(kubectl: str) -> None:
    """The ModelInstance CRD of this checkout, applied and served (a cluster this bench started has none)."""
    sh(kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    wait_until(
        "the ModelInstance CRD to be served",
        lambda: subprocess.run([kubectl, "get", "modelinstances", "-A"], capture_output=True).returncode == 0,
        60,
        0.5,
    )


def bench_node(i: int) -> dict[str, Any]:
    name = f"bench-gpu-{i}"
    capacity = {"cpu": "192", "memory": "1536Gi", "ephemeral-storage": "3500Gi", "pods": "110", RESOURCE: "8"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "xw.dev/bench": "true",
                "accelerator": ACCEL,
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": name,
            },
        },
        "spec": {},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def bench_devices_yaml(round_: int) -> str:
    """The shipped devices.yaml plus two bench chip keys cloned from nvidia-t4 onto the bench resource;
    ``round_`` changes only bench-gpu-b's environment."""
    doc = yaml.safe_load(SHIPPED_DEVICES.read_text(encoding="utf-8"))
    doc.setdefault("policy", {})["model_host_path_prefixes"] = ["/data/models"]  # the instances' weights
    for vendor in doc["vendors"]:
        for chip in vendor["chip_models"]:
            if chip.get("config_key") == "nvidia-t4":
                template, home = chip, vendor
    for key in ("bench-gpu", "bench-gpu-b"):
        chip = copy.deepcopy(template)
        chip["config_key"] = key
        chip["model_name"] = f"Bench GPU {key}"
        chip["device_id"] = "0xbe" + ("01" if key == "bench-gpu" else "02")
        chip["kubernetes"]["resource_name"] = RESOURCE
        chip["kubernetes"]["node_selector"] = {"accelerator": ACCEL}
        if key == "bench-gpu-b":
            chip["ext_sandboxes"]["vllm"]["environment"]["BENCH_ROUND"] = str(round_)
        home["chip_models"].append(chip)
    text = yaml.safe_dump(doc, sort_keys=False)
    parse_devices_config(text, source="bench devices.yaml")  # fail here, not in the operator
    return text


def model_instance(i: int, n: int) -> dict[str, Any]:
    return {
        "apiVersion": "xw.dev/v1alpha1",
        "kind": "ModelInstance",
        "metadata": {"name": f"m{i:04d}"},
        "spec": {
            "model": {"source": {"hostPath": f"/data/models/m{i}"}},
            "engine": {"name": "vllm"},
            "devices": {"chip": "bench-gpu-b" if i >= n - CHANGED else "bench-gpu", "count": 2},
        },
    }


class Watch:
    """``kubectl get -w`` of one kind in a namespace; ``first(pred)`` = arrival time of the first line per
    name that satisfies pred (lines are jsonpath fields: name, then the requested ones)."""

    def __init__(self, kubectl: str, kind: str, namespace: str, fields: str, selector: str = "") -> None:
        tmpl = "{.metadata.name}" + fields + "{'\\n'}"
        cmd = [kubectl, "get", kind, "-n", namespace, "-w", "-o", f"jsonpath={tmpl}"]
        cmd += ["-l", selector] if selector else []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.lines: list[tuple[float, list[str]]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.split()))

    def first(self, pred: Callable[[list[str]], bool]) -> dict[str, float]:
        out: dict[str, float] = {}
        for t, fields in list(self.lines):
            if fields and fields[0] not in out and pred(fields):
                out[fields[0]] = t
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def available(f: list[str]) -> bool:
    # name generation observedGeneration replicas availableReplicas
    return len(f) == 5 and f[1] == f[2] and f[3] == f[4]


def wait_until(what: str, check: Callable[[], bool], timeout: float, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


class Audit:
    """Write requests in the audit log since a mark, by the user the operator and this bench share."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def writes(self, namespace: str) -> list[dict[str, Any]]:
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            entries = [json.loads(x) for x in fh.read().decode(errors="replace").splitlines() if x.strip()]
        return [
            e
            for e in entries
            if e.get("verb") in WRITE_VERBS
            and e.get("objectRef", {}).get("namespace") == namespace
            and e.get("user", {}).get("username") == "xw-admin"
        ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Operator:
    def __init__(self, namespace: str, devices: Path, workdir: Path) -> None:
        self.namespace, self.devices, self.workdir = namespace, devices, workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> float:
        self.starts += 1
        cmd = [str(XW), "operator", "--namespace", self.namespace, "--devices-config", str(self.devices)]
        cmd += ["--liveness", "", "--metrics-address=127.0.0.1", f"--metrics-port={self.port}"]
        log_file = open(self.workdir / f"operator-{self.starts}.log", "wb")  # noqa: SIM115 (lives with the process)
        # No malloc variables: the operator sets its allocator up itself (xw_operator/k8s/memory.py).
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        env.pop("MALLOC_ARENA_MAX", None)
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        wait_until("the operator's metrics endpoint", lambda: self.metrics() is not None, 60)
        return t0

    def metrics(self) -> dict[str, float] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as rsp:
                text = rsp.read().decode()
        except OSError:
            return None
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def reconciles(self) -> float:
        m = self.metrics() or {}
        return sum(v for k, v in m.items() if k.startswith("xw_operator_reconciles_total"))

    def rss_mib(self) -> tuple[float, float]:
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    def cpu_seconds(self) -> float:
        """User + system CPU time of this operator process so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def delete_namespace(api: KubeApi, kubectl: str, namespace: str) -> None:
    subprocess.run([kubectl, "delete", "namespace", namespace, "--ignore-not-found", "--wait=false"], check=True,
                   capture_output=True)  # fmt: skip
    wait_until(
        f"namespace {namespace} to be gone",
        lambda: api.get(object_path("v1", "namespaces", None, namespace)) is None,
        900,
        1.0,
    )


# ------------------------------------------------------------------------------------------ phases


def run(n: int, keep: bool) -> None:
    with local_cluster() as (kubeconfig, kubectl, audit_path), tempfile.TemporaryDirectory(prefix="xw-bench-") as tmp:
        api = KubeApi(api_client(kubeconfig))
        workdir = Path(tmp)
        audit = Audit(audit_path)
        devices = workdir / "devices.yaml"
        devices.write_text(bench_devices_yaml(1), encoding="utf-8")
        config = parse_devices_config(devices.read_text(encoding="utf-8"), source=str(devices))
        nodes = math.ceil(n / PER_NODE)
        log(f"{n} instances on {nodes} kwok nodes ({RESOURCE}: 8 each); {CHANGED} on bench-gpu-b")
        for i in range(nodes):
            node = bench_node(i)
            try:
                api.create(object_path("v1", "nodes", None), node)
            except ApiError as exc:
                if exc.status != 409:
                    raise
            api.request("PATCH", object_path("v1", "nodes", None, node["metadata"]["name"]) + "/status",
                        body={"status": node["status"]}, content_type="application/merge-patch+json")  # fmt: skip
        wait_until(
            "bench nodes Ready",
            lambda: (
                sum(
                    1
                    for nd in api.list(object_path("v1", "nodes", None), label_selector="xw.dev/bench=true")
                    if any(
                        c["type"] == "Ready" and c["status"] == "True"
                        for c in nd.get("status", {}).get("conditions", [])
                    )
                )
                >= nodes
            ),
            300,
            1.0,
        )
        install_crd(kubectl)
        results: dict[str, float] = {}
        op: Operator | None = None
        try:
            # ---------------------------------------------------------------- 1. direct
            ns = "bench-direct"
            delete_namespace(api, kubectl, ns)
            api.create(
                object_path("v1", "namespaces", None),
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            )
            objects = []
            for i in range(n):
                doc = model_instance(i, n)
                doc["metadata"]["namespace"] = ns
                inst = parse_instance(doc)
                objects += [stamp(o) for o in render_kubernetes(inst, resolve(inst, config).bind(None))]
            deps = Watch(
                kubectl,
                "deployments",
                ns,
                " {.metadata.generation} {.status.observedGeneration} {.spec.replicas} {.status.availableReplicas}",
            )
            time.sleep(1)
            log(f"direct: applying {len(objects)} Deployments and Services")
            t0 = time.monotonic()
            for obj in objects:
                api.apply(obj)
            results["direct_created_s"] = time.monotonic() - t0
            wait_until("direct Deployments Available", lambda: len(deps.first(available)) >= n, 1800, 1.0)
            results["direct_available_s"] = max(deps.first(available).values()) - t0
            deps.stop()
            log(
                f"direct: created in {results['direct_created_s']:.1f}s, "
                f"Available in {results['direct_available_s']:.1f}s; deleting"
            )
            delete_namespace(api, kubectl, ns)

            # ---------------------------------------------------------------- 2. operator
            ns = "bench-op"
            delete_namespace(api, kubectl, ns)
            api.create(
                object_path("v1", "namespaces", None),
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            )
            op = Operator(ns, devices, workdir)
            op.start()
            deps = Watch(
                kubectl,
                "deployments",
                ns,
                " {.metadata.generation} {.status.observedGeneration} {.spec.replicas} {.status.availableReplicas}",
            )
            mis = Watch(kubectl, "modelinstances", ns, " {.status.phase}")
            time.sleep(1)
            log(f"operator: creating {n} ModelInstances")
            path = object_path("xw.dev/v1alpha1", "modelinstances", ns)
            t0 = time.monotonic()
            for i in range(n):
                api.create(path, model_instance(i, n))
            results["client_created_s"] = time.monotonic() - t0
            wait_until("operator Deployments", lambda: len(deps.first(lambda f: True)) >= n, 1800, 1.0)
            results["op_deployments_s"] = max(deps.first(lambda f: True).values()) - t0
            wait_until("instances Ready", lambda: len(mis.first(lambda f: f[1:] == ["Ready"])) >= n, 1800, 1.0)
            ready = mis.first(lambda f: f[1:] == ["Ready"])
            results["op_ready_s"] = max(ready.values()) - t0
            avail = deps.first(available)
            lags = [ready[k] - avail[k] for k in ready if k in avail]
            results["lag_p50_s"], results["lag_p95_s"] = percentile(lags, 0.5), percentile(lags, 0.95)
            results["op_cpu_s"] = op.cpu_seconds()  # start-up + create -> all Ready
            deps.stop()
            mis.stop()
            log(f"operator: Deployments in {results['op_deployments_s']:.1f}s, Ready in {results['op_ready_s']:.1f}s")

            # ---------------------------------------------------------------- 3. idle
            time.sleep(5)
            audit.mark()
            time.sleep(20)
            results["idle_writes"] = len(audit.writes(ns))
            results["rss_mib"], results["rss_peak_mib"] = op.rss_mib()

            # ---------------------------------------------------------------- 4. restart
            op.stop()
            audit.mark()
            t0 = op.start()
            last_count, last_change = -1.0, time.monotonic()
            while time.monotonic() - last_change < 5:
                count = op.reconciles()
                if count != last_count:
                    last_count, last_change = count, time.monotonic()
                time.sleep(0.2)
                if time.monotonic() - t0 > 600:
                    raise SystemExit("the restarted operator never went idle")
            results["restart_idle_s"] = last_change - t0
            results["restart_writes"] = len(audit.writes(ns))
            results["restart_rss_mib"] = op.rss_mib()[0]
            log(f"restart: idle after {results['restart_idle_s']:.1f}s, {results['restart_writes']:.0f} writes")

            # ---------------------------------------------------------------- 5. devices.yaml change
            # A watch (not a polling LIST, which would load the API server and the operator's CPU share).
            hashes = Watch(
                kubectl, "deployments", ns, " {.metadata.annotations.xw\\.dev/spec-hash}", "xw.dev/chip=bench-gpu-b"
            )
            wait_until("the bench-gpu-b Deployments listed", lambda: len(hashes.first(lambda f: True)) >= CHANGED, 60)
            before = {f[0]: f[1] for _, f in hashes.lines if len(f) == 2}
            t0 = time.monotonic()
            tmp_file = devices.with_suffix(".tmp")
            tmp_file.write_text(bench_devices_yaml(2), encoding="utf-8")
            os.replace(tmp_file, devices)
            wait_until(
                f"the {CHANGED} affected Deployments",
                lambda: len(hashes.first(lambda f: len(f) == 2 and f[1] != before[f[0]])) >= CHANGED,
                600,
                0.1,
            )
            changed = hashes.first(lambda f: len(f) == 2 and f[1] != before[f[0]])
            hashes.stop()
            results["config_change_s"] = max(changed.values()) - t0
        finally:
            if op is not None:
                op.stop()  # also on a failure: a stray operator would skew the next run
            if not keep:
                log("cleaning up (namespaces, bench nodes)")
                for ns in ("bench-direct", "bench-op"):
                    subprocess.run(
                        [kubectl, "delete", "namespace", ns, "--ignore-not-found", "--wait=false"], capture_output=True
                    )
                subprocess.run(
                    [kubectl, "delete", "nodes", "-l", "xw.dev/bench=true", "--wait=false"], capture_output=True
                )
        report(n, nodes, results)


def report(n: int, nodes: int, r: dict[str, float]) -> None:
    rows = [
        (
            "all Deployments exist",
            f"{r['op_deployments_s']:.1f} s vs {r['direct_created_s']:.1f} s direct",
            r["op_deployments_s"] / r["direct_created_s"],
            "<= 1.15x",
        ),
        (
            "all Ready vs raw Available",
            f"{r['op_ready_s']:.1f} s vs {r['direct_available_s']:.1f} s",
            r["op_ready_s"] / r["direct_available_s"],
            "<= 1.05x",
        ),
        ("writes while idle (20 s)", f"{r['idle_writes']:.0f}", None, "0"),
        ("writes after restart", f"{r['restart_writes']:.0f}", None, "0"),
        ("restart -> idle", f"{r['restart_idle_s']:.1f} s", None, "<= 15 s"),
        (f"devices.yaml change -> {CHANGED} Deployments", f"{r['config_change_s']:.1f} s", None, "<= 5 s"),
        (
            "Deployment Available -> Ready lag",
            f"p50 {r['lag_p50_s']:.2f} s, p95 {r['lag_p95_s']:.2f} s",
            None,
            "p95 <= 1 s",
        ),
        ("operator CPU, start to all Ready", f"{r['op_cpu_s']:.1f} s in {r['op_ready_s']:.1f} s wall", None, "-"),
        (
            "operator RSS",
            f"{r['rss_mib']:.0f} MiB (peak {r['rss_peak_mib']:.0f}, after restart {r['restart_rss_mib']:.0f})",
            None,
            "<= 150 MiB",
        ),
    ]
    print(
        f"\nbench_scale: {n} instances, {nodes} kwok nodes, one client "
        f"(the client created the ModelInstances in {r['client_created_s']:.1f} s)"
    )
    for what, value, ratio, goal in rows:
        print(f"  {what:<40} {value:<48} {'' if ratio is None else f'x{ratio:.2f}':>7}  goal {goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=int(os.environ.get("XW_BENCH_INSTANCES", "1000")))
    parser.add_argument("--keep", action="store_true", help="leave the namespaces and nodes for inspection")
    args, _ = parser.parse_known_args()  # bench/run.py passes bench names through
    if args.instances < CHANGED:
        raise SystemExit(f"--instances must be at least {CHANGED}")
    run(args.instances, args.keep)


if __name__ == "__main__":
    main()
