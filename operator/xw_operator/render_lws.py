"""ModelInstance + Plan → a LeaderWorkerSet and the Service of its leaders (multi-node). Pure: no I/O.

A replica that needs ``spec.devices.nodes`` > 1 nodes is one LeaderWorkerSet group (sigs.k8s.io/lws):
a leader pod, which runs the engine's API server, plus ``nodes - 1`` worker pods; the group is created,
restarted (``RecreateGroupOnPodRestart``) and scaled as a unit, one group per replica.

- Both pod templates start from :func:`render_kubernetes.pod_template`, so every pod of a group gets the
  chip's whole sandbox (device-plugin resources, driver mounts, shm, capabilities, node selector) exactly
  as a single-node pod does; only the engine container's command, arguments, environment, ports and
  probes differ per role, from the engine's multi-node contract (:mod:`xw_operator.multinode`).
- Each pod of a group lands on its own node: a required pod anti-affinity on ``kubernetes.io/hostname``
  whose selector is narrowed to the pod's own group by ``matchLabelKeys`` on the group key label the
  LWS webhook sets. Different groups may share a node when the accelerators allow it.
- ``spec.devices.topologyKey`` keeps a group within one domain (rack, switch, zone): a required pod
  affinity to the pod's own group on that key (the leader, first of its group, matches itself).
- The LeaderWorkerSet is named ``<name>-lws``: the LWS controller creates a headless Service named after
  the set (its pods' DNS subdomain, through which workers reach the leader), and ``<name>`` is the
  instance's own Service, which selects the leaders only.
- Every field the LWS webhook would default is set explicitly, so what is applied is what runs and
  server-side apply never fights the webhook.
"""

from __future__ import annotations

import copy
from typing import Any

from xw_operator.errors import ResolveError
from xw_operator.instance import ModelInstance
from xw_operator.labels import selector_labels
from xw_operator.multinode import RoleSpec, role_spec
from xw_operator.plan import Plan
from xw_operator.render_kubernetes import (
    ENGINE_CONTAINER,
    _escape,
    owned_metadata,
    pod_template,
    render_kubernetes,
    service,
)

LWS_API_VERSION = "leaderworkerset.x-k8s.io/v1"
LWS_KIND = "LeaderWorkerSet"
LWS_PLURAL = "leaderworkersets"
LWS_SUFFIX = "-lws"
# Labels the LWS controller and its pod webhook put on every pod of a set.
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
LWS_GROUP_KEY_LABEL = "leaderworkerset.sigs.k8s.io/group-key"
LWS_GROUP_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/group-index"
LWS_WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"
# Ours: which role a pod plays; the instance's Service selects the leaders by it.
ROLE_KEY = "xw.dev/role"
LEADER, WORKER = "leader", "worker"
HOSTNAME_KEY = "kubernetes.io/hostname"
# Longest instance name whose derived names stay valid: the LWS name's StatefulSet pods carry a
# controller-revision-hash label "<name>-lws-<group>-<10-char hash>" limited to 63 characters.
MAX_MULTI_NODE_NAME = 40


def lws_name(instance_name: str) -> str:
    return instance_name + LWS_SUFFIX


def is_multi_node(plan: Plan) -> bool:
    return plan.nodes > 1


def render_workload(instance: ModelInstance, plan: Plan) -> list[dict[str, Any]]:
    """The objects of an instance: a Deployment + Service (one node per replica), else a LeaderWorkerSet
    + Service. The single-node path is :func:`render_kubernetes` unchanged."""
    if not is_multi_node(plan):
        return render_kubernetes(instance, plan)
    return render_lws(instance, plan)


def render_lws(instance: ModelInstance, plan: Plan) -> list[dict[str, Any]]:
    """The LeaderWorkerSet and the Service of its leaders (in that order)."""
    if len(instance.name) > MAX_MULTI_NODE_NAME:
        raise ResolveError(
            f"metadata.name {instance.name!r} is {len(instance.name)} characters; a multi-node instance's "
            f"name may have at most {MAX_MULTI_NODE_NAME} (its LeaderWorkerSet's pods derive longer names)"
        )
    leader = role_spec(plan, LEADER)
    worker = role_spec(plan, WORKER)
    meta = owned_metadata(instance, plan)
    meta["name"] = lws_name(instance.name)
    lws = {
        "apiVersion": LWS_API_VERSION,
        "kind": LWS_KIND,
        "metadata": meta,
        "spec": {
            "replicas": instance.spec.replicas,
            # Workers start with the leader, not after it is Ready: a vLLM leader is Ready only once the
            # workers have joined its Ray cluster, so LeaderReady would deadlock.
            "startupPolicy": "LeaderCreated",
            "rolloutStrategy": _rollout(instance),
            "networkConfig": {"subdomainPolicy": "Shared"},
            "leaderWorkerTemplate": {
                "size": plan.nodes,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": _template(instance, plan, LEADER, leader),
                "workerTemplate": _template(instance, plan, WORKER, worker),
            },
        },
    }
    svc = service(instance, plan)
    svc["spec"]["selector"] = {**svc["spec"]["selector"], ROLE_KEY: LEADER}
    return [lws, svc]


def _rollout(instance: ModelInstance) -> dict[str, Any]:
    """LWS only rolls: Recreate replaces every group at once (frees the accelerators first),
    RollingUpdate surges one spare group at a time and never drops below the desired count."""
    if instance.spec.strategy == "RollingUpdate":
        config: dict[str, Any] = {"maxUnavailable": 0, "maxSurge": 1, "partition": 0}
    else:
        config = {"maxUnavailable": "100%", "maxSurge": 0, "partition": 0}
    return {"type": "RollingUpdate", "rollingUpdateConfiguration": config}


def _template(instance: ModelInstance, plan: Plan, role: str, spec: RoleSpec) -> dict[str, Any]:
    template = copy.deepcopy(pod_template(instance, plan))
    template["metadata"]["labels"][ROLE_KEY] = role
    pod = template["spec"]
    _place(pod, instance)
    container = next(c for c in pod["containers"] if c["name"] == ENGINE_CONTAINER)
    _apply_role(container, instance, spec)
    return template


def _place(pod: dict[str, Any], instance: ModelInstance) -> None:
    """One pod of a group per node; optionally the whole group in one topology domain."""
    group_selector = {"matchLabels": selector_labels(instance.name)}
    affinity = pod.setdefault("affinity", {})
    anti = affinity.setdefault("podAntiAffinity", {})
    anti.setdefault("requiredDuringSchedulingIgnoredDuringExecution", []).append(
        {
            "labelSelector": copy.deepcopy(group_selector),
            "matchLabelKeys": [LWS_GROUP_KEY_LABEL],
            "topologyKey": HOSTNAME_KEY,
        }
    )
    key = instance.spec.devices.topology_key
    if key:
        together = affinity.setdefault("podAffinity", {})
        together.setdefault("requiredDuringSchedulingIgnoredDuringExecution", []).append(
            {
                "labelSelector": copy.deepcopy(group_selector),
                "matchLabelKeys": [LWS_GROUP_KEY_LABEL],
                "topologyKey": key,
            }
        )


def _apply_role(container: dict[str, Any], instance: ModelInstance, spec: RoleSpec) -> None:
    """Command, args and contract variables of the role; workers serve no HTTP, so no port or probes."""
    for key in ("command", "args"):
        container.pop(key, None)
    # Escaped like single-node commands ($(VAR) stays literal); the contracts' shell scripts use ${VAR}.
    if spec.command:
        container["command"] = [_escape(c) for c in spec.command]
    if spec.args:
        container["args"] = [_escape(a) for a in spec.args]
    user = {v.name for v in instance.spec.engine.env}
    env: list[dict[str, Any]] = list(container.get("env", []))
    for name, value in spec.env:
        if name in user:
            continue  # the user's value wins over the contract's default
        entry: dict[str, Any] = (
            {"name": name, "value": value}
            if isinstance(value, str)
            else {"name": name, "valueFrom": {"fieldRef": {"fieldPath": value.field_ref}}}
        )
        env = [e for e in env if e["name"] != name]
        env.append(entry)
    container["env"] = env
    # Move the container's keys back into the order single-node pods have (readable diffs).
    order = ["name", "image", "imagePullPolicy", "command", "args", "ports", "env", "resources", "securityContext"]
    if not spec.serves:
        for key in ("ports", "startupProbe", "livenessProbe", "readinessProbe"):
            container.pop(key, None)
    rest = {k: container[k] for k in container if k not in order}
    ordered = {k: container[k] for k in order if k in container}
    container.clear()
    container.update(ordered)
    container.update(rest)
