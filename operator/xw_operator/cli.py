"""The ``xw`` command line. Thin: parse options, call pure functions or a backend, print.

Exit codes: 0 success; 2 bad input (one clear line on stderr, nothing on stdout); 1 runtime failure.
"""

from __future__ import annotations

import json
from typing import Any

import click
import yaml

from xw_operator import __version__
from xw_operator.cli_support import devices_config_option, handle_errors, load_config
from xw_operator.crd import crd_yaml
from xw_operator.devices import DevicesConfig
from xw_operator.errors import XwError
from xw_operator.instance import ModelInstance, load_instances
from xw_operator.multinode import refuse_multi_node_on_docker
from xw_operator.plan import Plan, resolve
from xw_operator.policy import Backend
from xw_operator.render_docker import render_docker
from xw_operator.render_lws import render_workload
from xw_operator.settings import settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xw")
def main() -> None:
    """xw: run LLM inference engines on any AI accelerator, on Kubernetes or one Docker host."""


def resolve_for(
    instance: ModelInstance, config: DevicesConfig, arch: str | None, backend: Backend = "kubernetes"
) -> Plan:
    """resolve() and bind(None) with the instance named in the error, since a file may hold several.

    Unbound, the plan uses spec.devices.indices or the topology-best set of an empty host.
    """
    try:
        return resolve(instance, config, arch=arch, backend=backend).bind(None)
    except XwError as exc:
        raise type(exc)(f"ModelInstance {instance.name}: {exc}", reason=exc.reason) from None


def render_instance_kubernetes(
    instance: ModelInstance, config: DevicesConfig, arch: str | None
) -> list[dict[str, Any]]:
    """The Deployment (or, multi-node, LeaderWorkerSet) and Service of one instance (no owner reference:
    a file has no uid)."""
    plan = resolve_for(instance, config, arch)
    try:
        return render_workload(instance, plan)
    except XwError as exc:
        raise type(exc)(f"ModelInstance {instance.name}: {exc}", reason=exc.reason) from None


def render_instance_docker(
    instance: ModelInstance, config: DevicesConfig, arch: str | None, server_name: str
) -> dict[str, Any]:
    """What `xw run` would create, except the host port when spec.port is not given (run picks it)."""
    refuse_multi_node_on_docker(instance.spec.devices.nodes, f"ModelInstance {instance.name}")
    plan = resolve_for(instance, config, arch, "docker")
    # Docker mode backs an engine's work directory with <state dir>/work/<instance> (xw run creates it).
    work = str(settings().state_dir.expanduser() / "work" / instance.name) if plan.work_dir else None
    return render_docker(plan, server_name=server_name, host_port=plan.requested_host_port, work_host_dir=work)


@main.command()
@click.option(
    "-f", "--filename", "filename", required=True, type=click.Path(dir_okay=False), help="ModelInstance YAML."
)
@devices_config_option
@click.option(
    "--arch",
    type=click.Choice(["amd64", "arm64"]),
    default=None,
    help="CPU architecture of the target nodes (default: the one the chip has an image for).",
)
@click.option("--backend", type=click.Choice(["kubernetes", "docker"]), default="kubernetes", show_default=True)
@click.option(
    "--server-name",
    default="render",
    show_default=True,
    help="Docker backend: the host's server name used in container names and labels.",
)
@handle_errors
def render(filename: str, devices_config: str | None, arch: str | None, backend: str, server_name: str) -> None:
    """Print what FILE's ModelInstances become, without touching a cluster or a host.

    Kubernetes: multi-document YAML of the objects. Docker: a JSON list of container-create parameters;
    device indices come from spec.devices.indices or the topology-best set of an empty host, and the host
    port is spec.port or, without it, null: `xw run` picks a free one from XW_PORT_RANGE.
    """
    config = load_config(devices_config)
    instances = load_instances(filename)
    if backend == "docker":
        out = [render_instance_docker(i, config, arch, server_name) for i in instances]
        click.echo(json.dumps(out, indent=2))
        return
    objects = [obj for i in instances for obj in render_instance_kubernetes(i, config, arch)]
    click.echo(yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False), nl=False)


@main.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write to this file instead of stdout (e.g. crds/modelinstances.xw.dev.yaml).",
)
def crds(output: str | None) -> None:
    """Print the ModelInstance CustomResourceDefinition, generated from the API models."""
    text = crd_yaml()
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
        return
    click.echo(text, nl=False)


from xw_operator.docker_mode.cli import COMMANDS as DOCKER_COMMANDS  # noqa: E402  (Docker mode: run, ps, ...)

for _command in DOCKER_COMMANDS:
    main.add_command(_command)


@main.command("operator")
@click.option("-n", "--namespace", "namespaces", multiple=True, help="Namespace to watch (repeatable).")
@click.option("-A", "--all-namespaces", is_flag=True, help="Watch every namespace (the default without -n).")
@devices_config_option
@click.option(
    "--devices-configmap",
    default=None,
    metavar="NAMESPACE/NAME",
    help="Read devices.yaml (key devices.yaml) from this ConfigMap instead of a file; reloaded on change.",
)
@click.option(
    "--liveness",
    default="http://0.0.0.0:8080/healthz",
    show_default=True,
    help="Liveness endpoint URL; an empty string disables it.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=9090,
    show_default=True,
    help="Serve Prometheus metrics at http://ADDRESS:PORT/metrics; 0 disables them.",
)
@click.option("--metrics-address", default="0.0.0.0", show_default=True, help="Metrics endpoint address.")
@click.option(
    "--leader-election-lease",
    default=None,
    metavar="NAMESPACE/NAME",
    envvar="XW_LEADER_ELECTION_LEASE",
    help="Run as one of several replicas: only the holder of this coordination.k8s.io Lease reconciles.",
)
@click.option(
    "--last-good-configmap",
    default=None,
    metavar="NAMESPACE/NAME",
    envvar="XW_LAST_GOOD_CONFIGMAP",
    help="Persist every accepted devices.yaml here; used at start-up when the current one is invalid.",
)
@click.option(
    "--evict-on-device-loss/--no-evict-on-device-loss",
    default=True,
    show_default=True,
    help="Delete pods whose node lost devices or went NotReady, so their Deployment reschedules them.",
)
@click.option(
    "--watch-nodes/--no-watch-nodes",
    default=True,
    show_default=True,
    help="Watch nodes for accelerator health (needs get/list/watch on nodes).",
)
@click.option("--json-logs", is_flag=True, help="One JSON object per log line.")
@click.option(
    "--multi-node",
    is_flag=True,
    envvar="XW_MULTI_NODE",
    help="Serve multi-node instances (spec.devices.nodes > 1) as LeaderWorkerSets: needs the LWS CRD and "
    "controller and RBAC on leaderworkersets. Without it such instances are Failed (MultiNodeDisabled).",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@handle_errors
def operator_command(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    devices_config: str | None,
    devices_configmap: str | None,
    liveness: str,
    metrics_port: int,
    metrics_address: str,
    leader_election_lease: str | None,
    last_good_configmap: str | None,
    evict_on_device_loss: bool,
    watch_nodes: bool,
    json_logs: bool,
    multi_node: bool,
    verbose: bool,
) -> None:
    """Run the Kubernetes operator: reconcile ModelInstances into Deployments (or LeaderWorkerSets) and
    Services."""
    if namespaces and all_namespaces:
        raise XwError("give --namespace or --all-namespaces, not both")
    from xw_operator.k8s.runner import run_operator  # kopf is heavy; only this command needs it

    run_operator(
        namespaces=namespaces,
        all_namespaces=all_namespaces,
        devices_config=devices_config,
        devices_configmap=devices_configmap,
        liveness=liveness,
        json_logs=json_logs,
        verbose=verbose,
        multi_node=multi_node,
        metrics_port=metrics_port,
        metrics_address=metrics_address,
        leader_election_lease=leader_election_lease,
        last_good_configmap=last_good_configmap,
        evict_on_device_loss=evict_on_device_loss,
        watch_nodes=watch_nodes,
    )


if __name__ == "__main__":  # pragma: no cover
    main()
