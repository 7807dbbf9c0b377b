"""Label and annotation keys on the Kubernetes objects made for a ModelInstance.

They are a contract: renaming one orphans the objects that already carry it.

Shared by the renderer (which puts them on) and the operator (which selects by them), so both agree on
one spelling. The selector is deliberately minimal: a Deployment's selector is immutable, so it holds
only the key that can never change for an instance.
"""

from __future__ import annotations

MANAGED_BY_KEY = "app.kubernetes.io/managed-by"
MANAGED_BY = "xw-operator"
INSTANCE_KEY = "app.kubernetes.io/instance"
NAME_KEY = "app.kubernetes.io/name"  # the engine (vllm, mindie, ...)
MODEL_INSTANCE_KEY = "xw.dev/model-instance"
CHIP_KEY = "xw.dev/chip"

# Bookkeeping annotations of other tools; never copied from a ModelInstance to its children.
LAST_HANDLED_ANNOTATION = "xw.dev/last-handled-configuration"
FOREIGN_ANNOTATION_PREFIXES = ("kopf.zalando.org/", "kubectl.kubernetes.io/")


def selector_labels(name: str) -> dict[str, str]:
    """The Deployment/Service selector for instance ``name``."""
    return {MODEL_INSTANCE_KEY: name}


def instance_labels(name: str, *, engine: str | None = None, chip: str | None = None) -> dict[str, str]:
    """Every label an object of instance ``name`` carries (a superset of :func:`selector_labels`)."""
    labels = {
        MANAGED_BY_KEY: MANAGED_BY,
        INSTANCE_KEY: name,
        MODEL_INSTANCE_KEY: name,
    }
    if engine:
        labels[NAME_KEY] = engine
    if chip:
        labels[CHIP_KEY] = chip
    return labels


def is_bookkeeping_annotation(key: str) -> bool:
    """True for annotations that belong to kopf, kubectl or the operator's own diff base."""
    return key == LAST_HANDLED_ANNOTATION or key.startswith(FOREIGN_ANNOTATION_PREFIXES)


# On pods that reach their chips through hostPath device nodes (no device plugin): nothing allocates
# chips between such pods, so they repel each other (one per node) instead of silently sharing chips.
HOST_DEVICES_KEY = "xw.dev/host-devices"
