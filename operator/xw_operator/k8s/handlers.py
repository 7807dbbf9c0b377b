"""kopf handlers: thin wiring from watch events to :class:`~xw_operator.k8s.reconcile.Reconciler`.

- ModelInstance create/update/resume -> one idempotent ``reconcile`` (level-based: the handler reads the
  object fresh and converges; it never acts on the diff kopf computed).
- Deployment, Service and Pod events (server-side filtered to ``app.kubernetes.io/managed-by=xw-operator``)
  -> recompute the owning instance's status; a Deployment or Service deleted or whose spec someone else
  changed -> reconcile the instance, which puts it back.
- A probe reporting the devices.yaml state on the liveness endpoint.

Handlers are synchronous: kopf runs them in its thread pool, where the blocking HTTP client belongs.
No ``on.delete`` handler exists, so kopf adds no finalizer: owner references let the garbage collector
remove the children, and a stopped operator can never block deletion of an instance or a namespace.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from xw_operator.instance import GROUP, PLURAL, VERSION
from xw_operator.k8s.child_events import ChildEvents
from xw_operator.k8s.client import ApiError
from xw_operator.k8s.config_source import ConfigStore
from xw_operator.k8s.reconcile import InvalidSpec, Reconciler
from xw_operator.labels import MANAGED_BY, MANAGED_BY_KEY, MODEL_INSTANCE_KEY

log = logging.getLogger(__name__)

RETRY_DELAY = 5.0  # seconds before retrying after an API error (conflict, timeout, 5xx)


def _owner(body: Mapping[str, Any]) -> tuple[str, str] | None:
    meta = body.get("metadata", {})
    name = (meta.get("labels") or {}).get(MODEL_INSTANCE_KEY)
    return (meta["namespace"], name) if name and meta.get("namespace") else None


def register(
    registry: kopf.OperatorRegistry, reconciler: Reconciler, store: ConfigStore, *, multi_node: bool = False
) -> None:
    """Register every handler on ``registry`` (no module-level globals: tests can build several).

    ``multi_node`` adds the LeaderWorkerSet watch: only then, so an operator without multi-node support
    needs neither the LWS CRD nor RBAC on it."""
    selector: dict[str, str] = {MANAGED_BY_KEY: MANAGED_BY}
    child_events = ChildEvents()  # which child events can change status (the rest cost no API call)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A private registry has none of kopf's default login handlers; the same credentials as KubeApi.
        return kopf.login_via_client(**kwargs)

    @kopf.on.resume(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    def reconcile(namespace: str | None, name: str, **_: Any) -> None:
        assert namespace is not None  # ModelInstance is namespaced
        try:
            reconciler.reconcile(namespace, name)
        except InvalidSpec as exc:
            # Status and an Event already say why; retrying cannot help until the spec or config changes.
            raise kopf.PermanentError(str(exc)) from None
        except ApiError as exc:
            raise kopf.TemporaryError(f"API error, retrying: {exc}", delay=RETRY_DELAY) from None

    @kopf.on.event("apps", "v1", "deployments", labels=selector, registry=registry)
    @kopf.on.event("", "v1", "services", labels=selector, registry=registry)
    @kopf.on.event("", "v1", "pods", labels=selector, registry=registry)
    def child_changed(body: Mapping[str, Any], type: str | None = None, **_: Any) -> None:
        owner = _owner(body)
        if owner is None or not child_events.matters(type, body):
            return
        kind = body.get("kind")
        try:
            if kind != "Pod" and (type == "DELETED" or reconciler.drifted(body)):
                # Level-based: a child deleted or edited by someone else is put back. (When the instance
                # itself is being deleted, reconcile sees that and does nothing.)
                log.warning(
                    "%s %s/%s was %s outside xw-operator; reconciling",
                    kind,
                    *owner,
                    "deleted" if type == "DELETED" else "changed",
                )
                if type == "DELETED":
                    reconciler.forget(body)  # a drifted child keeps its record: that is how it is seen as stale
                # On InvalidSpec the status already says why; the last valid spec's children stay.
                with contextlib.suppress(InvalidSpec):
                    reconciler.reconcile(*owner)
                return
            reconciler.refresh_status(*owner)
        except ApiError as exc:
            # The next event of this child (or the instance) recomputes status from scratch.
            log.warning("reconcile/status refresh of %s/%s failed: %s", *owner, exc)

    if multi_node:
        from xw_operator.render_lws import LWS_API_VERSION, LWS_PLURAL

        group, version = LWS_API_VERSION.split("/")
        kopf.on.event(group, version, LWS_PLURAL, labels=selector, registry=registry)(child_changed)

    @kopf.on.probe(id="devicesConfig", registry=registry)
    def devices_config(**_: Any) -> dict[str, Any]:
        s = store.state
        return {
            "source": s.source,
            "digest": s.digest,
            "reloads": s.reloads,
            "lastError": s.last_error,
            "chips": len(s.chips),
        }
