"""The administrator's policy: what a ModelInstance author may ask for. Pure: no I/O.

A namespace user writes ModelInstances; an administrator writes devices.yaml. Everything that reaches a
host -- paths, images, privilege, placement -- must therefore be granted by devices.yaml. ``resolve()``
calls :func:`check_instance` and :func:`check_image`; a refusal is a :class:`PolicyRefused` whose
``reason`` names the rule (``HostPathNotAllowed``, ``ImageNotAllowed``, ``PlacementNotAllowed``), so the
operator's status and the CLI say which rule fired without parsing text.

The checks work on strings only (no filesystem access): they cannot resolve symlinks on a node. That is
why hostPath prefixes are compared component by component after normalisation, ``..``/``.``/empty
components are refused outright, and docs/security.md tells administrators that an allowed directory
must not contain symlinks leading out of it (the kubelet follows them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any, Literal

from xw_operator.errors import PolicyRefused

Backend = Literal["kubernetes", "docker"]

# Node labels and taints that belong to the control plane: a ModelInstance never selects or tolerates them.
CONTROL_PLANE_PREFIX = "node-role.kubernetes.io/"
MSG_TOLERATE_ALL = (
    "a toleration with operator Exists must name a key: without one it tolerates every taint, "
    "defeating taint-based isolation of node pools"
)
MSG_CONTROL_PLANE = "control-plane node labels and taints (node-role.kubernetes.io/*) may not be used"

DEFAULT_REGISTRY = "docker.io"
# The reference grammar of distribution/reference, simplified: lower-case path components separated by
# '/', an optional ':tag' and an optional '@digest'. Anything else is refused before matching.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?"
_REFERENCE = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{32,}))?$"
)


# ------------------------------------------------------------------------------------------ host paths


def normalise_host_path(path: str) -> PurePosixPath | None:
    """The path as components, or None when it is not a plain absolute path.

    ``..`` and ``.`` components and empty components (``//``) are refused rather than normalised: a
    policy check must judge exactly the string the kubelet will mount. One trailing slash is allowed.
    """
    if not path.startswith("/") or "\x00" in path:
        return None
    body = path[1:].removesuffix("/")
    parts = body.split("/") if body else []
    if any(p in ("", ".", "..") for p in parts):
        return None
    return PurePosixPath("/", *parts)


def host_path_refusal(path: str, *, allow: bool, prefixes: Iterable[str], backend: Backend) -> str | None:
    """Why a ``hostPath`` model source is refused, or None when it is allowed.

    Kubernetes (a shared cluster): allowed only under a listed prefix; none listed means refused.
    Docker mode (one's own host): any directory unless prefixes are listed. ``allow: false`` refuses it
    on both. Matching is per path component: ``/data/models-evil`` is not under ``/data/models``.
    """
    if not allow:
        return (
            "spec.model.source.hostPath is disabled by the cluster administrator "
            "(devices.yaml policy.allow_model_host_path: false); use pvc or huggingFace"
        )
    normal = normalise_host_path(path)
    if normal is None:
        return f"spec.model.source.hostPath {path!r} must be a plain absolute path (no '..', '.' or empty components)"
    allowed = [p for p in (normalise_host_path(x) for x in prefixes) if p is not None]
    if not allowed:
        if backend == "docker":
            return None
        return (
            f"spec.model.source.hostPath {path} is not allowed on this cluster: the administrator lists no "
            "directories (devices.yaml policy.model_host_path_prefixes); use pvc or huggingFace"
        )
    if any(normal == prefix or normal.is_relative_to(prefix) for prefix in allowed):
        return None
    listed = ", ".join(str(p) for p in allowed)
    return f"spec.model.source.hostPath {path} is outside the allowed directories ({listed})"


# ------------------------------------------------------------------------------------------ images


def parse_image(reference: str) -> tuple[str, str] | None:
    """(``registry/repository`` fully qualified as Docker does, the rest) or None when not a reference.

    ``vllm/vllm-openai:v1`` → (``docker.io/vllm/vllm-openai``, ``:v1``); ``nginx`` →
    (``docker.io/library/nginx``, ``""``). Qualifying first means ``vllm/x`` and ``docker.io/vllm/x``
    are judged the same.
    """
    match = _REFERENCE.match(reference)
    if not match:
        return None
    domain, path = match.group("domain"), match.group("path")
    if domain is not None and not _is_registry(domain):
        # Docker: a first component without '.'/':' that isn't localhost is a path, not a registry.
        path, domain = f"{domain}/{path}", None
        if not re.fullmatch(rf"{_COMPONENT}(?:/{_COMPONENT})*", path):
            return None
    domain = (domain or DEFAULT_REGISTRY).lower()
    if domain == "index.docker.io":
        domain = DEFAULT_REGISTRY
    if domain == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    tag, digest = match.group("tag"), match.group("digest")
    rest = (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    return f"{domain}/{path}", rest


def _is_registry(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def prefix_parts(prefix: str) -> list[str] | None:
    """An admin prefix as path components, or None when it is not one.

    ``quay.io`` (a whole registry), ``quay.io/ascend`` and ``vllm/vllm-openai`` (Docker Hub, qualified as
    ``docker.io/vllm/vllm-openai``). Unlike an image, a Docker Hub prefix gets no ``library/``: official
    images are allowed with ``docker.io/library/<name>``. Tags and digests are not prefixes.
    """
    text = prefix.strip().rstrip("/")
    if not text or any(c in text for c in "@ \t"):
        return None
    head, _, rest = text.partition("/")
    if _is_registry(head):
        registry, path = head.lower(), rest
    else:
        registry, path = DEFAULT_REGISTRY, text
    if registry == "index.docker.io":
        registry = DEFAULT_REGISTRY
    if path and not re.fullmatch(rf"{_COMPONENT}(?:/{_COMPONENT})*", path):
        return None
    return [registry, *path.split("/")] if path else [registry]


def image_allowed(image: str, configured: Iterable[str], prefixes: Iterable[str]) -> bool:
    """True when ``image`` is one devices.yaml names for the chip and engine, or lies under an allowed
    registry/repository prefix, compared on path-component boundaries (``quay.io/ascend`` allows
    ``quay.io/ascend/vllm:1`` but not ``quay.io/ascend-evil/vllm:1``)."""
    parsed = parse_image(image)
    if parsed is None:
        return False
    if any(parse_image(c) == parsed for c in configured):
        return True
    repo_parts = parsed[0].split("/")
    for prefix in prefixes:
        parts = prefix_parts(prefix)
        if parts and repo_parts[: len(parts)] == parts:
            return True
    return False


def check_image(image: str, *, configured: Iterable[str], prefixes: Iterable[str], chip: str, engine: str) -> None:
    configured = [c for c in configured if c]
    if image_allowed(image, configured, prefixes):
        return
    if parse_image(image) is None:
        raise PolicyRefused(f"spec.engine.image {image!r} is not a valid image reference", reason="ImageNotAllowed")
    allowed = sorted(set(configured)) + [f"{p}/*" for p in prefixes]
    raise PolicyRefused(
        f"spec.engine.image {image} is not allowed for chip {chip} engine {engine}; allowed: "
        f"{', '.join(allowed) or 'none'} (an administrator can add registry/repository prefixes to "
        "devices.yaml policy.allowed_image_prefixes)",
        reason="ImageNotAllowed",
    )


# ------------------------------------------------------------------------------------------ placement


def toleration_refusal(toleration: Mapping[str, Any]) -> str | None:
    key = toleration.get("key") or ""
    if toleration.get("operator") == "Exists" and not key:
        return MSG_TOLERATE_ALL
    if key.startswith(CONTROL_PLANE_PREFIX):
        return MSG_CONTROL_PLANE
    return None


def _as_dict(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(by_alias=True, exclude_none=True) if callable(dump) else value


def _node_terms(affinity: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    node = affinity.get("nodeAffinity") or {}
    terms: list[Mapping[str, Any]] = []
    required = node.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms.extend(required.get("nodeSelectorTerms") or [])
    terms.extend(p.get("preference") or {} for p in node.get("preferredDuringSchedulingIgnoredDuringExecution") or [])
    return terms


def _contradicts(expr: Mapping[str, Any], wanted: str) -> bool:
    operator, values = expr.get("operator"), list(expr.get("values") or [])
    return (
        (operator == "In" and wanted not in values)
        or (operator == "NotIn" and wanted in values)
        or operator == "DoesNotExist"
    )


def placement_refusal(
    node_selector: Mapping[str, str],
    tolerations: Iterable[Any],
    affinity: Any,
    profile_selector: Mapping[str, str],
    chip: str,
) -> str | None:
    """Why the requested placement is refused: a tolerate-everything toleration, control-plane labels or
    taints, or a node selection contradicting the chip profile's (pods that could never schedule, or --
    with a profile key overridden -- pods on nodes the administrator did not give this chip's privileges)."""
    for i, toleration in enumerate(tolerations):
        why = toleration_refusal(_as_dict(toleration))
        if why:
            return f"spec.tolerations[{i}]: {why}"
    for key, value in node_selector.items():
        if key.startswith(CONTROL_PLANE_PREFIX):
            return f"spec.nodeSelector.{key}: {MSG_CONTROL_PLANE}"
        if key in profile_selector and profile_selector[key] != value:
            return (
                f"spec.nodeSelector.{key}: {value!r} contradicts chip {chip}'s node selector "
                f"{key}={profile_selector[key]!r} (devices.yaml); remove it"
            )
    for term in _node_terms(_as_dict(affinity) or {}):
        for field in ("matchExpressions", "matchFields"):
            for expr in term.get(field) or []:
                key = str(expr.get("key") or "")
                if key.startswith(CONTROL_PLANE_PREFIX):
                    return f"spec.affinity.nodeAffinity: {MSG_CONTROL_PLANE}"
                if (
                    field == "matchExpressions"
                    and key in profile_selector
                    and _contradicts(expr, profile_selector[key])
                ):
                    return (
                        f"spec.affinity.nodeAffinity: {key} {expr.get('operator')} {list(expr.get('values') or [])} "
                        f"contradicts chip {chip}'s node selector {key}={profile_selector[key]!r} (devices.yaml)"
                    )
    return None
