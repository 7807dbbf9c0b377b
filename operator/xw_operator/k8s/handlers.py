"""kopf handlers: thin wiring from watch events to :class:`~xw_operator.k8s.reconcile.Reconciler`.

- ModelInstance create/update/resume -> one idempotent ``reconcile`` of the body kopf delivered
  (level-based: it converges on the whole object and never acts on the diff kopf computed).
- Deployment, Service and Pod events (server-side filtered to ``app.kubernetes.io/managed-by=xw-operator``)
  -> recompute the owning instance's status; a Deployment or Service deleted or whose spec someone else
  changed -> reconcile the instance, which puts it back.
- Node events (readiness, allocatable devices changed) -> refresh the status of instances with pods there.
- A probe reporting the devices.yaml state on the liveness endpoint.
- Errors: bad input and permanent API refusals -> ``kopf.PermanentError`` (status Failed already says
  why); transient errors -> ``kopf.TemporaryError`` with exponential backoff (failures.py); nothing else
  escapes a handler.

The ModelInstance handler is synchronous: kopf runs it in its thread pool, where the blocking HTTP client
belongs. Child and node events are decided in the event loop (most need nothing) and only their
blocking part goes to the same pool.
No ``on.delete`` handler exists, so kopf adds no finalizer: owner references let the garbage collector
remove the children, and a stopped operator can never block deletion of an instance or a namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Mapping
from concurrent.futures import Executor
from typing import Any

import kopf

from xw_operator.instance import GROUP, PLURAL, VERSION
from xw_operator.k8s.child_events import ChildEvents
from xw_operator.k8s.config_source import ConfigStore
from xw_operator.k8s.failures import backoff_delay, is_permanent_api_error, is_transient
from xw_operator.k8s.handled import HandledSpecs
from xw_operator.k8s.reconcile import InvalidSpec, Reconciler
from xw_operator.labels import MANAGED_BY, MANAGED_BY_KEY, MODEL_INSTANCE_KEY

log = logging.getLogger(__name__)


def _owner(body: Mapping[str, Any]) -> tuple[str, str] | None:
    meta = body.get("metadata", {})
    name = (meta.get("labels") or {}).get(MODEL_INSTANCE_KEY)
    return (meta["namespace"], name) if name and meta.get("namespace") else None


def register(
    registry: kopf.OperatorRegistry,
    reconciler: Reconciler,
    store: ConfigStore,
    *,
    multi_node: bool = False,
    watch_nodes: bool = True,
    executor: Executor | None = None,
    handled: HandledSpecs | None = None,
) -> None:
    """Register every handler on ``registry`` (no module-level globals: tests can build several).

    ``executor``: where the blocking work of child and node events runs -- the pool kopf runs the
    synchronous handlers in (settings.execution.executor), so one limit bounds all API work.
    ``handled``: kopf's in-memory record of handled specs, whose entries go with their instances.

    ``multi_node`` adds the LeaderWorkerSet watch: only then, so an operator without multi-node support
    needs neither the LWS CRD nor RBAC on it. ``watch_nodes`` adds the node watch (accelerator health)."""
    selector: dict[str, str] = {MANAGED_BY_KEY: MANAGED_BY}
    child_events = ChildEvents()  # which child events can change status (the rest cost no API call)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A private registry has none of kopf's default login handlers; the same credentials as KubeApi.
        return kopf.login_via_client(**kwargs)

    @kopf.on.resume(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    def reconcile(namespace: str | None, name: str, body: Mapping[str, Any], retry: int = 0, **_: Any) -> None:
        assert namespace is not None  # ModelInstance is namespaced
        if not store.ready:
            log.warning("%s/%s not reconciled: %s", namespace, name, store.state.last_error)
            return  # the first valid devices.yaml re-reconciles every instance (ConfigReactions)
        try:
            reconciler.reconcile(namespace, name, body=body)
        except InvalidSpec as exc:
            # Status and an Event already say why; retrying cannot help until the spec or config changes.
            raise kopf.PermanentError(str(exc)) from None
        except Exception as exc:
            raise handler_error(exc, f"{namespace}/{name}", retry) from None

    def refresh_child_owner(body: Mapping[str, Any], type: str | None, owner: tuple[str, str], repair: bool) -> None:
        """The blocking half of a child event (in a worker thread): put the child back, or refresh status."""
        kind = body.get("kind")
        try:
            if repair:
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
        except Exception as exc:
            # Never raised: the next event of this child (or the instance) recomputes status from scratch.
            if is_transient(exc):
                log.warning("reconcile/status refresh of %s/%s failed, will retry on the next event: %s", *owner, exc)
            else:
                log.exception("reconcile/status refresh of %s/%s failed", *owner)

    if handled is not None:

        @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
        async def instance_event(body: Mapping[str, Any], type: str | None = None, **_: Any) -> None:
            if type == "DELETED":
                handled.forget(str(body.get("metadata", {}).get("uid")))

    @kopf.on.event("apps", "v1", "deployments", labels=selector, registry=registry)
    @kopf.on.event("", "v1", "services", labels=selector, registry=registry)
    @kopf.on.event("", "v1", "pods", labels=selector, registry=registry)
    async def child_changed(body: Mapping[str, Any], type: str | None = None, **_: Any) -> None:
        # Decided here, in the event loop: most child events need nothing (the initial listing after a
        # restart, problem-free Pods, our own applies), and a thread hand-off per event would cost more
        # CPU and memory (queued jobs) than the decision itself.
        owner = _owner(body)
        if owner is None or not store.ready or not child_events.matters(type, body):
            return
        kind = body.get("kind")
        try:
            repair = kind != "Pod" and (type == "DELETED" or reconciler.drifted(body))
            if not repair and kind != "Pod" and reconciler.seen_workload(body):
                return  # status was computed from exactly this state (e.g. the event of our own apply)
        except Exception:
            log.exception("checking %s %s/%s failed; refreshing its instance", kind, *owner)
            repair = False
        await asyncio.get_running_loop().run_in_executor(
            executor, functools.partial(refresh_child_owner, dict(body), type, owner, repair)
        )

    if watch_nodes:

        def refresh_node_instances(name: str) -> None:
            try:
                affected = reconciler.instances_on_node(name)
                log.info("node %s changed (readiness or devices); refreshing %d instance(s)", name, len(affected))
                for namespace, instance in sorted(affected):
                    reconciler.refresh_status(namespace, instance)
            except Exception as exc:
                # A later pod or node event recomputes it; the node cache already holds the new state.
                log.warning("status refresh after node %s changed failed: %s", name, exc)

        @kopf.on.event("", "v1", "nodes", registry=registry)
        async def node_changed(body: Mapping[str, Any], name: str, type: str | None = None, **_: Any) -> None:
            # Accelerator health: a node that went NotReady or whose allocatable devices dropped changes
            # the status of the instances with pods on it (and may get those pods rescheduled). Heartbeats
            # (most node events) are told apart in the event loop, without a thread.
            if not store.ready or not reconciler.node_changed(name, None if type == "DELETED" else dict(body)):
                return
            await asyncio.get_running_loop().run_in_executor(executor, refresh_node_instances, name)

    if multi_node:
        from xw_operator.render_lws import LWS_API_VERSION, LWS_PLURAL

        group, version = LWS_API_VERSION.split("/")
        kopf.on.event(group, version, LWS_PLURAL, labels=selector, registry=registry)(child_changed)

    @kopf.on.probe(id="devicesConfig", registry=registry)
    def devices_config(**_: Any) -> dict[str, Any]:
        return store.health()


def handler_error(exc: Exception, what: str, retry: int) -> kopf.TemporaryError | kopf.PermanentError:
    """The kopf outcome of an unexpected exception: transient ones back off exponentially (capped);
    anything else would fail again the same way, so it is logged once and not retried until the
    instance changes."""
    if is_transient(exc):
        delay = backoff_delay(retry)
        log.warning("%s: transient error (retry %d in %.0fs): %s", what, retry + 1, delay, exc)
        return kopf.TemporaryError(f"transient error, retrying in {delay:.0f}s: {exc}", delay=delay)
    if is_permanent_api_error(exc):
        return kopf.PermanentError(f"the API server refused a request: {exc}")
    log.error("%s: unexpected error; not retried until the instance changes", what, exc_info=exc)
    return kopf.PermanentError(f"unexpected error: {type(exc).__name__}: {exc}")
