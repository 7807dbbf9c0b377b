"""Desired vs actual for one ModelInstance: apply children only on difference, then refresh status.

No-write rule: every rendered child carries ``xw.dev/spec-hash``, a hash of exactly what was applied.
A child whose annotation equals the hash of the current rendering (and that still names the instance as
its controller) is left alone: no dry-run, no apply. Anything else -- a missing child, a spec or
devices.yaml change, a recreated instance (new uid in the owner reference) -- is server-side applied as
field manager ``xw-operator``, which also removes fields a previous rendering set and this one doesn't.
Trade-off, documented in docs/operator.md: a manual edit of a field we own is reverted on the next
change of the instance or of its chip profile, not instantly.

Status is written the same way: computed from scratch, compared with what is stored (after the CRD
model's normalisation), and patched only when it differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from xw_operator.devices import DevicesConfig
from xw_operator.errors import XwError
from xw_operator.instance import GROUP, PLURAL, VERSION, ModelInstance, ModelInstanceStatus, parse_instance
from xw_operator.k8s.client import KubeApi, object_path, path_of
from xw_operator.k8s.events import now_rfc3339, post_event, transition_event
from xw_operator.k8s.ownership import (
    NameConflict,
    ensure_controlled,
    owned_or_none,
    revocation_message,
    withdraw_workload,
)
from xw_operator.k8s.status import Failure, Observed, compute_status, status_differs, status_patch
from xw_operator.k8s.status_groups import observe_groups
from xw_operator.labels import MODEL_INSTANCE_KEY, is_bookkeeping_annotation
from xw_operator.plan import Plan, resolve
from xw_operator.render_kubernetes import endpoint
from xw_operator.render_lws import render_workload

log = logging.getLogger(__name__)

SPEC_HASH_ANNOTATION = "xw.dev/spec-hash"
WORKLOAD_KINDS = ("Deployment", "LeaderWorkerSet")
API_VERSION = f"{GROUP}/{VERSION}"

Obj = dict[str, Any]


class InvalidSpec(XwError):
    """The instance cannot be realised; status says why. kopf must not retry it (PermanentError)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass(frozen=True)
class Desired:
    """What the cluster should hold for one instance."""

    instance: ModelInstance
    plan: Plan
    children: tuple[Obj, ...]  # each stamped with SPEC_HASH_ANNOTATION

    @property
    def deployment(self) -> Obj:
        """The workload: a Deployment, or a LeaderWorkerSet for a multi-node instance."""
        return next(c for c in self.children if c["kind"] in WORKLOAD_KINDS)

    @property
    def endpoint(self) -> str:
        return endpoint(self.instance)


# ---------------------------------------------------------------------------------------------- pure


def spec_hash(obj: Mapping[str, Any]) -> str:
    """Stable hash of a rendered object (key order does not matter; the hash annotation itself is excluded)."""
    meta = dict(obj.get("metadata", {}))
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != SPEC_HASH_ANNOTATION}
    meta["annotations"] = annotations
    canonical = json.dumps({**obj, "metadata": meta}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def _strip_bookkeeping(meta: Obj) -> None:
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if not is_bookkeeping_annotation(k)}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)


def stamp(obj: Mapping[str, Any]) -> Obj:
    """A copy without kopf/kubectl bookkeeping annotations, carrying its own spec hash."""
    out: Obj = json.loads(json.dumps(obj))
    _strip_bookkeeping(out["metadata"])
    template_meta = out.get("spec", {}).get("template", {}).get("metadata")
    if template_meta is not None:
        _strip_bookkeeping(template_meta)
    out["metadata"].setdefault("annotations", {})[SPEC_HASH_ANNOTATION] = spec_hash(out)
    return out


def classify_failure(exc: XwError) -> Failure:
    """Reason for the Failed phase: the error type's own reason (UnknownChip, NoSandbox, ...)."""
    return Failure(exc.reason, revocation_message(exc.reason, str(exc)))


def desired_state(body: Mapping[str, Any], config: DevicesConfig, *, multi_node: bool = True) -> Desired:
    """Parse, resolve and render; every bad-input error becomes :class:`InvalidSpec`.

    ``multi_node=False`` (an operator started without ``--multi-node``) refuses instances that need a
    LeaderWorkerSet, which that operator may neither write nor watch."""
    meta = body.get("metadata", {})
    where = f"ModelInstance {meta.get('namespace')}/{meta.get('name')}"
    try:
        instance = parse_instance(dict(body), source=where)
        if instance.spec.devices.nodes > 1 and not multi_node:
            raise XwError(
                f"spec.devices.nodes is {instance.spec.devices.nodes} but this operator runs without multi-node "
                "support; an administrator enables it (Helm value multiNode.enabled, LeaderWorkerSet "
                "controller installed), or use nodes: 1",
                reason="MultiNodeDisabled",
            )
        plan = resolve(instance, config).bind(None)  # the device plugin (or the node) picks the chips
        children = tuple(stamp(obj) for obj in render_workload(instance, plan))
    except XwError as exc:
        raise InvalidSpec(classify_failure(exc)) from None
    return Desired(instance, plan, children)


def is_current(desired: Mapping[str, Any], live: Mapping[str, Any] | None, known_generation: int | None = None) -> bool:
    """The live child was applied from exactly this rendering, is not being deleted and, when we know
    the generation our last apply produced, nobody has changed its spec since."""
    if live is None or live.get("metadata", {}).get("deletionTimestamp"):
        return False
    want = desired["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    have = (live.get("metadata", {}).get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
    owners = {o.get("uid") for o in live.get("metadata", {}).get("ownerReferences") or []}
    wanted_owners = {o.get("uid") for o in desired["metadata"].get("ownerReferences") or []}
    if known_generation is not None and generation_of(live) not in (None, known_generation):
        return False
    return bool(want == have and wanted_owners <= owners)


def generation_of(obj: Mapping[str, Any] | None) -> int | None:
    """metadata.generation: bumped by the API server on every spec change (Deployments have it)."""
    value = (obj or {}).get("metadata", {}).get("generation")
    return int(value) if value is not None else None


ChildKey = tuple[str, str, str]  # kind, namespace, name


def child_key(obj: Mapping[str, Any]) -> ChildKey:
    meta = obj.get("metadata", {})
    return str(obj.get("kind")), str(meta.get("namespace")), str(meta.get("name"))


def normalise_status(status: Mapping[str, Any] | None) -> Obj:
    """Status as the CRD stores it (its schema is generated from ModelInstanceStatus; unknown keys pruned)."""
    model = ModelInstanceStatus.model_validate(dict(status or {}))
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


# ---------------------------------------------------------------------------------------------- I/O


class InstanceLocks:
    """One lock per instance: the reconcile, child-event and config-reload paths never interleave on one."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}

    @contextmanager
    def hold(self, namespace: str, name: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault((namespace, name), threading.Lock())
        with lock:
            yield


def instance_path(namespace: str, name: str, *, status: bool = False) -> str:
    return object_path(API_VERSION, PLURAL, namespace, name) + ("/status" if status else "")


def apply_children(api: KubeApi, desired: Desired, generations: dict[ChildKey, int] | None = None) -> list[str]:
    """Server-side apply each child that is not current; returns ``Kind/name`` of those applied.

    ``generations`` remembers the generation each of our applies produced. A later spec change by
    someone else (``kubectl edit``, ``kubectl set image``) bumps the generation past it, so the child
    no longer counts as current and is applied again: drift is corrected. A child first seen as
    current (e.g. after an operator restart) sets the baseline without a write.
    """
    generations = generations if generations is not None else {}
    keys = [child_key(c) for c in desired.children]
    lives = {key: api.get(_path(c)) for key, c in zip(keys, desired.children, strict=True)}
    # Before any write: every name must be free or ours (ownership.py); raises NameConflict.
    ensure_controlled(desired.children, lives, keys, desired.instance.metadata.model_dump())
    applied = []
    for child, key in zip(desired.children, keys, strict=True):
        live = lives[key]
        if is_current(child, live, generations.get(key)):
            if (gen := generation_of(live)) is not None:
                generations[key] = gen
            continue
        result = api.apply(child)
        if (gen := generation_of(result)) is not None:
            generations[key] = gen
        applied.append(f"{child['kind']}/{child['metadata']['name']}")
    return applied


def _path(obj: Mapping[str, Any]) -> str:
    return path_of(dict(obj))


class Reconciler:
    """The operator's behaviour, independent of kopf: handlers and the config watcher call these."""

    def __init__(self, api: KubeApi, config_source: Any, *, multi_node: bool = False) -> None:
        self.api = api
        self.multi_node = multi_node
        self.config_source = config_source  # anything with a ``.current`` DevicesConfig
        self.locks = InstanceLocks()
        # Generation of each child after our last apply (or first sight); see apply_children.
        self.generations: dict[ChildKey, int] = {}

    @property
    def config(self) -> DevicesConfig:
        config: DevicesConfig = self.config_source.current
        return config

    def reconcile(self, namespace: str, name: str) -> list[str]:
        """Make the children match the instance, then refresh status. Raises InvalidSpec for bad input."""
        with self.locks.hold(namespace, name):
            body = self.api.get(instance_path(namespace, name))
            if body is None or body["metadata"].get("deletionTimestamp"):
                return []
            try:
                desired = desired_state(body, self.config, multi_node=self.multi_node)
            except InvalidSpec as exc:
                withdrawn = withdraw_workload(  # revocation
                    self.api, body, exc.failure.reason, SPEC_HASH_ANNOTATION, multi_node=self.multi_node
                )
                if withdrawn is not None and (gen := generation_of(withdrawn)) is not None:
                    self.generations[child_key(withdrawn)] = gen  # our own write: not drift
                self._write_status(body, self._observe(body, None, exc.failure))
                raise
            try:
                applied = apply_children(self.api, desired, self.generations)
            except NameConflict as exc:
                failure = classify_failure(exc)
                # The transition Event (Warning, reason NameConflict) names the existing object.
                self._write_status(body, self._observe(body, None, failure))
                raise InvalidSpec(failure) from None
            if applied:
                log.info("ModelInstance %s/%s: applied %s", namespace, name, ", ".join(applied))
            self._write_status(body, self._observe(body, desired, None))
            return applied

    def forget(self, child: Mapping[str, Any]) -> None:
        """Drop what we remembered of a child that someone else deleted or changed."""
        self.generations.pop(child_key(child), None)

    def drifted(self, child: Mapping[str, Any]) -> bool:
        """A child's spec changed since our last apply: someone else edited it."""
        known = self.generations.get(child_key(child))
        live = generation_of(child)
        return known is not None and live is not None and live != known

    def refresh_status(self, namespace: str, name: str) -> None:
        """Recompute status from the live children (a Deployment or Pod changed)."""
        with self.locks.hold(namespace, name):
            body = self.api.get(instance_path(namespace, name))
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            try:
                desired: Desired | None = desired_state(body, self.config, multi_node=self.multi_node)
                failure = None
            except InvalidSpec as exc:
                desired, failure = None, exc.failure
            self._write_status(body, self._observe(body, desired, failure))

    def _observe(self, body: Obj, desired: Desired | None, failure: Failure | None) -> Observed:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        generation = int(meta.get("generation") or 1)
        previous = normalise_status(body.get("status"))
        if desired is None:
            dep = owned_or_none(self.api.get(object_path("apps/v1", "deployments", namespace, name)), meta)
            return Observed(
                generation=generation,
                desired_replicas=int((body.get("spec") or {}).get("replicas", 1) or 0),
                endpoint=None,
                image=None,
                failure=failure,
                deployment=dep,
                previous=previous,
            )
        want = desired.deployment
        dep = self.api.get(_path(want))
        pods = self.api.list(object_path("v1", "pods", namespace), label_selector=f"{MODEL_INSTANCE_KEY}={name}")
        groups = observe_groups(desired.plan, want, dep, desired.instance.spec.replicas, pods)
        return Observed(
            generation=generation,
            desired_replicas=desired.instance.spec.replicas,
            endpoint=desired.endpoint,
            image=desired.plan.image,
            deployment=dep,
            pods=pods,
            children_current=is_current(want, dep),
            previous=previous,
            complete=groups.complete if groups else None,
            problems=groups.problems if groups else None,
            ready_replicas=groups.ready if groups else None,
        )

    def _write_status(self, body: Obj, observed: Observed) -> None:
        current = normalise_status(body.get("status"))
        desired = normalise_status(compute_status(observed, now=now_rfc3339()))
        if not status_differs(current, desired):
            return
        meta = body["metadata"]
        self.api.merge_patch(
            instance_path(meta["namespace"], meta["name"], status=True),
            {"status": status_patch(current, desired)},
        )
        event = transition_event(current, desired)
        if event is not None:
            post_event(self.api, body, event)
