"""ModelInstance + Plan → Kubernetes objects (a Deployment and a Service). Pure: no I/O, no kopf.

Two ways a pod reaches its accelerators:

* **device-plugin mode** (the chip profile has ``kubernetes.resource_name``): the pod requests ``count`` of
  the extended resource; the plugin picks the devices and injects their nodes and visibility variables.
  So no device node is mounted here (indexed *or* control: the plugin injects both), the sandbox's
  ``device_env`` and the profile's ``plugin_env`` variables are dropped (a static
  ``ASCEND_VISIBLE_DEVICES=0,...,7`` would expose every chip on the node), and the pod is not privileged
  unless the profile says ``privileged: true`` (a privileged container sees every device and silently
  undoes the allocation). Capabilities, driver mounts, shm and static env still apply.
* **host-device mode** (no ``resource_name``): every device node of the plan is a ``hostPath`` volume and
  the container is privileged, always: without it the device cgroup denies access to the mounted nodes.
  Nothing allocates chips between pods in this mode, so such pods carry ``xw.dev/host-devices: "true"``
  and a required pod anti-affinity on it: at most one per node, rather than two silently sharing chips.

The output is deterministic (same input → byte-identical YAML) so the operator can compare desired with
actual, and it carries nothing from the ModelInstance's own metadata besides name and namespace: kopf's
and kubectl's bookkeeping annotations never reach the children.
"""

from __future__ import annotations

import math
import re
from typing import Any

from xw_operator.errors import ResolveError
from xw_operator.hardening import container_security_context, pod_security_fields, writable_mount_source
from xw_operator.instance import API_VERSION, KIND, ModelInstance
from xw_operator.labels import HOST_DEVICES_KEY, instance_labels, selector_labels
from xw_operator.mounts import volume_read_only
from xw_operator.plan import Plan

ENGINE_CONTAINER = "engine"
PORT_NAME = "http"
SHM_PATH = "/dev/shm"
HF_CACHE_PATH = "/root/.cache/huggingface"
HF_TOKEN_ENV = "HF_TOKEN"
# vLLM reads its API key from VLLM_API_KEY; other engines get the generic name (custom images read it).
API_KEY_ENV = {"vllm": "VLLM_API_KEY"}
DEFAULT_API_KEY_ENV = "API_KEY"
HEALTH_PATH = "/health"
MODELS_PATH = "/v1/models"
PROBE_TIMEOUT_SECONDS = 5  # busy engines answer slowly; the 1 s default flaps
STARTUP_PERIOD_SECONDS = 10
# After the startup budget the Deployment may still be progressing; don't report it stalled before that.
PROGRESS_MARGIN_SECONDS = 600
ARCH_LABEL = "kubernetes.io/arch"
_SLUG = re.compile(r"[^a-z0-9]+")


def endpoint(instance: ModelInstance) -> str:
    """The OpenAI-compatible base URL the Service gives inside the cluster (``status.endpoint``).

    An instance without a namespace (a file given to ``xw render``) is assumed to land in ``default``.
    """
    namespace = instance.metadata.namespace or "default"
    return f"http://{instance.name}.{namespace}.svc:{instance.spec.port}/v1"


def device_plugin_mode(plan: Plan) -> bool:
    return bool(plan.kubernetes and plan.kubernetes.resource_name)


def render_kubernetes(instance: ModelInstance, plan: Plan) -> list[dict[str, Any]]:
    """The Deployment and the Service for ``instance`` (in that order).

    Without ``metadata.uid`` (e.g. ``xw render`` of a file) the objects carry no owner reference, since
    the API server rejects one without a uid; the operator always renders from the stored object.
    """
    return [_deployment(instance, plan), _service(instance, plan)]


def _metadata(instance: ModelInstance, plan: Plan) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": instance.name}
    if instance.metadata.namespace:
        meta["namespace"] = instance.metadata.namespace
    meta["labels"] = instance_labels(instance.name, engine=plan.engine, chip=plan.chip)
    if instance.metadata.uid:
        meta["ownerReferences"] = [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": instance.name,
                "uid": instance.metadata.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return meta


def _service(instance: ModelInstance, plan: Plan) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(instance, plan),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(instance.name),
            "ports": [{"name": PORT_NAME, "protocol": "TCP", "port": plan.port, "targetPort": PORT_NAME}],
        },
    }


def _strategy(instance: ModelInstance) -> dict[str, Any]:
    if instance.spec.strategy == "RollingUpdate":
        # A new pod needs free accelerators before an old one goes: surge one at a time, never drop below.
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    return {"type": "Recreate"}


def _deployment(instance: ModelInstance, plan: Plan) -> dict[str, Any]:
    startup = instance.spec.probes.startup_timeout_seconds
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(instance, plan),
        "spec": {
            "replicas": instance.spec.replicas,
            "selector": {"matchLabels": selector_labels(instance.name)},
            "strategy": _strategy(instance),
            "progressDeadlineSeconds": startup + PROGRESS_MARGIN_SECONDS,
            "revisionHistoryLimit": 3,
            "template": pod_template(instance, plan),
        },
    }


def pod_template(instance: ModelInstance, plan: Plan) -> dict[str, Any]:
    """The engine pod (labels + spec) with the chip's whole sandbox: the Deployment's template, and the
    base of both LeaderWorkerSet templates (:mod:`xw_operator.render_lws`), so every pod of an instance
    gets the same devices, driver mounts, shm, capabilities and hardening."""
    return {"metadata": {"labels": _pod_labels(instance, plan)}, "spec": _pod_spec(instance, plan)}


def service(instance: ModelInstance, plan: Plan) -> dict[str, Any]:
    """The instance's Service (``<name>``, port ``spec.port`` -> the engine's ``http`` port)."""
    return _service(instance, plan)


def owned_metadata(instance: ModelInstance, plan: Plan) -> dict[str, Any]:
    """name, namespace, the instance's labels and its controller owner reference (when it has a uid)."""
    return _metadata(instance, plan)


def _pod_spec(instance: ModelInstance, plan: Plan) -> dict[str, Any]:
    volumes, mounts = _volumes(plan)
    spec: dict[str, Any] = pod_security_fields(plan.kubernetes)  # hardening.py says why
    if plan.kubernetes and plan.kubernetes.runtime_class_name:
        spec["runtimeClassName"] = plan.kubernetes.runtime_class_name
    spec["nodeSelector"] = _node_selector(instance, plan)
    _set_unless_empty(spec, tolerations=_tolerations(instance, plan), affinity=_affinity(instance, plan))
    spec["containers"] = [_container(instance, plan, mounts)]
    spec["volumes"] = volumes
    return spec


def _set_unless_empty(target: dict[str, Any], **fields: Any) -> None:
    """Add the fields that have a value, in the given order: empty lists and maps stay out of the objects."""
    target.update({key: value for key, value in fields.items() if value})


def _pod_labels(instance: ModelInstance, plan: Plan) -> dict[str, str]:
    labels = instance_labels(instance.name, engine=plan.engine, chip=plan.chip)
    if not device_plugin_mode(plan):
        labels[HOST_DEVICES_KEY] = "true"
    return labels


def _affinity(instance: ModelInstance, plan: Plan) -> dict[str, Any] | None:
    """The user's affinity, plus, in host-device mode, one such pod per node (see the module doc)."""
    affinity = instance.spec.affinity.to_kubernetes() if instance.spec.affinity else {}
    if not device_plugin_mode(plan):
        anti = affinity.setdefault("podAntiAffinity", {})
        anti.setdefault("requiredDuringSchedulingIgnoredDuringExecution", []).append(
            {
                "labelSelector": {"matchLabels": {HOST_DEVICES_KEY: "true"}},
                "topologyKey": "kubernetes.io/hostname",
                "namespaceSelector": {},  # every namespace: chips are a node-wide resource
            }
        )
    return affinity or None


def _node_selector(instance: ModelInstance, plan: Plan) -> dict[str, str]:
    """Architecture pin < chip profile < spec, where the spec may not contradict the chip profile.

    The architecture is pinned because engine images are single-arch (Ascend arm64, NVIDIA amd64); a user
    with a multi-arch ``spec.engine.image`` may override it. A spec value that contradicts the profile's
    selector would leave the pods unschedulable without a word, so it is refused.
    """
    profile = dict(plan.kubernetes.node_selector) if plan.kubernetes else {}
    for key, value in instance.spec.node_selector.items():
        if key in profile and profile[key] != value:
            raise ResolveError(
                f"spec.nodeSelector.{key}: {value!r} contradicts chip {plan.chip}'s node selector "
                f"{key}={profile[key]!r} (devices.yaml); remove it"
            )
    return {ARCH_LABEL: plan.arch, **profile, **instance.spec.node_selector}


def _tolerations(instance: ModelInstance, plan: Plan) -> list[dict[str, Any]]:
    merged: list[dict[str, Any]] = list(plan.kubernetes.tolerations) if plan.kubernetes else []
    for toleration in instance.spec.tolerations:
        item = toleration.model_dump(by_alias=True, exclude_none=True)
        if item not in merged:
            merged.append(item)
    return merged


def _escape(text: str) -> str:
    """Kubernetes expands ``$(VAR)`` in command, args and env values; ours are literal (as in Docker)."""
    return text.replace("$(", "$$(")


def _env(instance: ModelInstance, plan: Plan) -> list[dict[str, Any]]:
    """The plan's environment (already in precedence order), minus allocation-owned variables in
    device-plugin mode, plus variables read from Secrets."""
    dropped = set(plan.device_visibility_env) if device_plugin_mode(plan) else set()
    env: list[dict[str, Any]] = [{"name": k, "value": _escape(v)} for k, v in plan.env if k not in dropped]
    secrets: list[tuple[str, str, str, str]] = []  # (env name, secret, key, spec field)
    ref = instance.spec.api_key_secret_ref
    if ref is not None:
        secrets.append((API_KEY_ENV.get(plan.engine, DEFAULT_API_KEY_ENV), ref.name, ref.key, "apiKeySecretRef"))
    hf = plan.model
    if hf.hf_token_secret and hf.hf_token_key:
        secrets.append((HF_TOKEN_ENV, hf.hf_token_secret, hf.hf_token_key, "model.source.huggingFace.tokenSecretRef"))
    for name, secret, key, field in secrets:
        if any(e["name"] == name for e in env):
            raise ResolveError(
                f"spec.engine.env: {name} is set from the Secret in spec.{field}; remove the literal value"
            )
        env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    return env


def _http_probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
        "failureThreshold": failures,
    }


def _probes(instance: ModelInstance, plan: Plan) -> dict[str, Any]:
    """Startup with a long budget (model loading), then liveness on the health path.

    Paths come from the engine definition. Readiness asks the ready path (vLLM's /v1/models lists the
    model only once it is served; its /health can answer earlier); with an API key that route needs a
    token the kubelet doesn't have, so the health path then.
    """
    budget = instance.spec.probes.startup_timeout_seconds
    ready_path = plan.ready_path if instance.spec.api_key_secret_ref is None else plan.health_path
    return {
        "startupProbe": _http_probe(
            plan.health_path, period=STARTUP_PERIOD_SECONDS, failures=math.ceil(budget / STARTUP_PERIOD_SECONDS)
        ),
        "livenessProbe": _http_probe(plan.health_path, period=20, failures=3),
        "readinessProbe": _http_probe(ready_path, period=10, failures=3),
    }


def _resources(instance: ModelInstance, plan: Plan) -> dict[str, Any]:
    user = instance.spec.resources
    limits: dict[str, Any] = dict(user.limits) if user else {}
    requests: dict[str, Any] = dict(user.requests) if user else {}
    if plan.kubernetes and plan.kubernetes.resource_name:
        # Extended resources: requests default to limits, and the plugin allocates exactly this many.
        limits[plan.kubernetes.resource_name] = plan.device_count
    out: dict[str, Any] = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def _privileged(plan: Plan) -> bool:
    if device_plugin_mode(plan):
        return bool(plan.kubernetes and plan.kubernetes.privileged)
    return True


def _container(instance: ModelInstance, plan: Plan, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = {"name": ENGINE_CONTAINER, "image": plan.image, "imagePullPolicy": "IfNotPresent"}
    if plan.command:
        container["command"] = [_escape(c) for c in plan.command]
    if plan.args:
        container["args"] = [_escape(a) for a in plan.args]
    container["ports"] = [{"name": PORT_NAME, "containerPort": plan.container_port, "protocol": "TCP"}]
    _set_unless_empty(container, env=_env(instance, plan), resources=_resources(instance, plan))
    container["securityContext"] = container_security_context(
        plan.kubernetes, privileged=_privileged(plan), capabilities=plan.capabilities
    )
    container.update(_probes(instance, plan))
    container["volumeMounts"] = mounts
    return container


def _slug(path: str) -> str:
    return _SLUG.sub("-", path.lower()).strip("-") or "root"


def _covers(parent: str, path: str) -> bool:
    parent = parent.rstrip("/")
    return path == parent or path.startswith(parent + "/")


def _volumes(plan: Plan) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and the engine's mounts: model, shm, driver mounts, then device nodes (host-device mode)."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    names: set[str] = set()
    targets: dict[str, str] = {}

    def add(base: str, source: dict[str, Any], target: str, read_only: bool, **extra: Any) -> None:
        name = base[:63].rstrip("-")
        counter = 1
        while name in names:
            counter += 1
            suffix = f"-{counter}"
            name = base[: 63 - len(suffix)].rstrip("-") + suffix
        names.add(name)
        key = target.rstrip("/") or "/"
        if key in targets:
            raise ResolveError(
                f"chip {plan.chip}: two volumes mount at {key} ({targets[key]} and {base}); "
                "fix the volumes of its devices.yaml entry"
            )
        targets[key] = base
        volumes.append({"name": name, **source})
        mount: dict[str, Any] = {"name": name, "mountPath": target}
        if read_only:
            mount["readOnly"] = True
        mount.update(extra)
        mounts.append(mount)

    source = plan.model
    if source.host_path:
        add("model", {"hostPath": {"path": source.host_path, "type": "Directory"}}, plan.model_path, True)
    elif source.pvc_claim:
        extra = {"subPath": source.pvc_sub_path} if source.pvc_sub_path else {}
        claim = {"persistentVolumeClaim": {"claimName": source.pvc_claim, "readOnly": True}}
        add("model", claim, plan.model_path, True, **extra)
    add("shm", {"emptyDir": {"medium": "Memory", "sizeLimit": _quantity(plan.shm_bytes)}}, SHM_PATH, False)
    for volume in plan.volumes:
        read_only = volume_read_only(volume)  # the rule Docker mode shares (xw_operator.mounts)
        host = {"hostPath": {"path": volume.host, "type": ""}}
        add(
            f"host-{_slug(volume.container)}",
            host if read_only else writable_mount_source(volume, plan.namespace, plan.writable_host_mounts),
            volume.container,
            read_only,
        )
    if source.kind == "huggingFace" and not any(_covers(v.container, HF_CACHE_PATH) for v in plan.volumes):
        add("hf-cache", {"emptyDir": {}}, HF_CACHE_PATH, False)
    if plan.work_dir:  # the engine's writable work copy (e.g. MLGuider's converted weights)
        add("work", {"emptyDir": {}}, plan.work_dir, False)
    if not device_plugin_mode(plan):
        for node in plan.device_nodes:
            # Indexed nodes are character devices; unindexed entries may be directories (/dev/dri).
            kind = "CharDevice" if re.search(r"\d$", node.host) else ""
            add(
                f"dev-{_slug(node.container.removeprefix('/dev/'))}",
                {"hostPath": {"path": node.host, "type": kind}},
                node.container,
                False,
            )
    return volumes, mounts


def _quantity(size: int) -> str:
    """Bytes as the largest exact binary unit (100 GiB → "100Gi"), so the output stays readable."""
    for unit, factor in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)
