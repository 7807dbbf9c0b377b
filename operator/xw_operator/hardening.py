"""Hardening of engine pods on Kubernetes: security contexts and tenant-private writable mounts. Pure.

Defaults (docs/security.md): ``seccompProfile: RuntimeDefault``; ``allowPrivilegeEscalation: false``
unless the container is privileged (the API server refuses the combination); capabilities
``drop: [ALL]`` plus exactly the profile's ``add``; no ServiceAccount token; no service links. A chip
profile -- never a ModelInstance -- may relax one of these with ``kubernetes.relax`` in devices.yaml
(e.g. a driver that needs an unconfined seccomp profile), so every exception is visible in admin config.

Writable host mounts (a profile's ``/root/.cache``) are never shared between namespaces: on a shared
node one tenant could otherwise read or tamper with another's gated weights and remote code. Policy
``writable_host_mounts`` picks how: ``per-namespace`` (default) mounts ``<host>/xw-namespaces/<ns>``,
created by the kubelet, so a namespace keeps its cache across restarts; ``emptyDir`` gives each pod its
own scratch space. Docker mode keeps the mount as written (one's own host, one user).
"""

from __future__ import annotations

from typing import Any

from xw_operator.devices import KubernetesProfile, VolumeSpec

NAMESPACE_DIR = "xw-namespaces"
DEFAULT_NAMESPACE = "default"


def _relaxed(profile: KubernetesProfile | None) -> set[str]:
    return set(profile.relax) if profile else set()


def container_security_context(
    profile: KubernetesProfile | None, *, privileged: bool, capabilities: tuple[str, ...]
) -> dict[str, Any]:
    relaxed = _relaxed(profile)
    security: dict[str, Any] = {"privileged": privileged}
    if not privileged and "allowPrivilegeEscalation" not in relaxed:
        security["allowPrivilegeEscalation"] = False
    caps: dict[str, Any] = {}
    if capabilities:
        caps["add"] = list(capabilities)
    if "dropCapabilities" not in relaxed:
        caps["drop"] = ["ALL"]
    if caps:
        security["capabilities"] = caps
    if "seccomp" not in relaxed:
        security["seccompProfile"] = {"type": "RuntimeDefault"}
    return security


def pod_security_fields(profile: KubernetesProfile | None) -> dict[str, Any]:
    """The engine needs no API access; service links would inject e.g. VLLM_PORT=tcp://... into an
    instance named "vllm", which vLLM then fails to parse -- and they leak the namespace's Services."""
    relaxed = _relaxed(profile)
    fields: dict[str, Any] = {
        "automountServiceAccountToken": "serviceAccountToken" in relaxed,
        "enableServiceLinks": "serviceLinks" in relaxed,
    }
    if "seccomp" not in relaxed:
        # Also at pod level, so any container added later (an init container, a sidecar) inherits it.
        fields["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}}
    return fields


def writable_mount_source(volume: VolumeSpec, namespace: str | None, mode: str) -> dict[str, Any]:
    """The volume source for a writable host mount, private to the namespace (see the module doc)."""
    if mode == "emptyDir":
        return {"emptyDir": {}}
    base = volume.host.rstrip("/") or ""
    path = f"{base}/{NAMESPACE_DIR}/{namespace or DEFAULT_NAMESPACE}"
    return {"hostPath": {"path": path, "type": "DirectoryOrCreate"}}
