"""Plan → Docker container-create parameters. Pure; the Docker runtime passes them to the SDK.

Label keys are the seed system's (contract) so containers it created remain recognisable.
"""

from __future__ import annotations

from typing import Any

from xw_operator.errors import XwError
from xw_operator.mounts import volume_read_only
from xw_operator.plan import Plan, Resolved

LABEL_RUNTIME = "xw.runtime"
LABEL_MODEL_ID = "xw.model_id"
LABEL_ALIAS = "xw.alias"
LABEL_INSTANCE_ID = "xw.instance_id"
LABEL_BACKEND_TYPE = "xw.backend_type"
LABEL_DEPLOYMENT_MODE = "xw.deployment_mode"
LABEL_DEVICE_INDICES = "xw.device_indices"
LABEL_SERVER_NAME = "xw.server_name"
LABEL_CHIP = "xw.chip"  # ours: indices are per chip type, so the type must be on the container too
LABEL_HOST_PORT = "xw.host_port"  # ours: the reserved port, readable without inspecting bindings
# Ours: what readiness asks, from the engine definition ("" ready path: the health path alone decides).
LABEL_HEALTH_PATH = "xw.health_path"
LABEL_READY_PATH = "xw.ready_path"
DEPLOYMENT_MODE = "docker"
LOOPBACK = "127.0.0.1"


def container_name(instance: str, server_name: str) -> str:
    return f"{instance}-{server_name}"


def docker_labels(plan: Plan, *, server_name: str, host_port: int | None) -> dict[str, str]:
    labels = {
        LABEL_RUNTIME: f"{plan.engine}-docker",
        LABEL_MODEL_ID: plan.served_model_name,
        LABEL_ALIAS: plan.name,
        LABEL_INSTANCE_ID: plan.name,
        LABEL_BACKEND_TYPE: plan.engine,
        LABEL_DEPLOYMENT_MODE: DEPLOYMENT_MODE,
        LABEL_DEVICE_INDICES: ",".join(str(i) for i in plan.device_indices),
        LABEL_SERVER_NAME: server_name,
        LABEL_CHIP: plan.chip,
        LABEL_HEALTH_PATH: plan.health_path,
        LABEL_READY_PATH: plan.ready_path if plan.ready_lists_model else "",
    }
    if host_port is not None:
        labels[LABEL_HOST_PORT] = str(host_port)
    return labels


def docker_model_volume(plan: Resolved) -> str | None:
    """The model's bind mount (``host:container:ro``), None when the engine downloads the weights.

    Docker mode has no PersistentVolumeClaims; this is the one place that says so. The runtime calls it
    before pulling anything, ``xw render`` through :func:`render_docker`.
    """
    source = plan.model
    if source.kind == "pvc":
        raise XwError(
            f"ModelInstance {plan.name}: spec.model.source.pvc exists only on Kubernetes; "
            "use hostPath or huggingFace in Docker mode"
        )
    if source.host_path:
        return f"{source.host_path}:{plan.model_path}:ro"
    return None


def docker_volumes(plan: Plan, work_host_dir: str | None = None) -> list[str]:
    """Bind mounts: the model read-only, the engine's work directory, then the sandbox volumes, each
    read-only unless its devices.yaml entry says ``:rw`` or it is a cache (:func:`volume_read_only`, the
    rule the Kubernetes renderer shares)."""
    volumes = [f"{v.host}:{v.container}:{'ro' if volume_read_only(v) else 'rw'}" for v in plan.volumes]
    if plan.work_dir and work_host_dir:
        volumes.insert(0, f"{work_host_dir}:{plan.work_dir}:rw")
    model_volume = docker_model_volume(plan)
    if model_volume:
        volumes.insert(0, model_volume)
    return volumes


def render_docker(
    plan: Plan, *, server_name: str, host_port: int | None, work_host_dir: str | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``docker.containers.create``, ready to pass to the SDK as they are.

    ``host_port`` is what ``xw run`` allocated. ``None`` (``xw render`` of an instance without
    ``spec.port``) renders the port as ``null`` and no ``xw.host_port`` label: run picks a free port from
    XW_PORT_RANGE at that moment, which a render cannot know. ``work_host_dir`` backs the engine
    definition's writable ``work_dir`` (the runtime creates it).
    """
    volumes = docker_volumes(plan, work_host_dir)
    params: dict[str, Any] = {
        "name": container_name(plan.name, server_name),
        "image": plan.image,
        # Like Kubernetes' command/args: an engine with an explicit command replaces the image's
        # ENTRYPOINT (images differ in theirs); otherwise the image's own entrypoint gets the args.
        "entrypoint": list(plan.command) if plan.command else None,
        "command": list(plan.args) or None,
        "environment": dict(plan.env),
        "devices": [str(d) for d in plan.device_nodes],
        "volumes": volumes,
        "privileged": plan.privileged,
        "cap_add": list(plan.capabilities),
        "shm_size": plan.shm_bytes,
        "runtime": plan.runtime,
        "labels": docker_labels(plan, server_name=server_name, host_port=host_port),
        # A tuple: the SDK reads a list as several bindings without a host IP (published on every
        # interface); (ip, port) binds loopback only. JSON output shows it as a two-element list.
        "ports": {f"{plan.container_port}/tcp": (LOOPBACK, host_port)},
        # "always", not "unless-stopped": only "always" is honoured after a dockerd SIGKILL; `xw stop`
        # sets "no" so a stopped instance stays stopped (see docker_mode/runtime.py).
        "restart_policy": {"Name": "always"},
        "init": True,
    }
    return params
