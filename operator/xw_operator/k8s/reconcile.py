"""Desired vs actual for one ModelInstance: apply children only on difference, then refresh status.

No-write rule: every rendered child carries ``xw.dev/spec-hash``, a hash of exactly what was applied.
A child whose annotation equals the hash of the current rendering (and that still names the instance as
its controller) is left alone: no dry-run, no apply. Anything else -- a missing child, a spec or
devices.yaml change, a recreated instance (new uid in the owner reference) -- is server-side applied as
field manager ``xw-operator``, which also removes fields a previous rendering set and this one doesn't.
What runs is exactly what we rendered (drift.py): a child whose managedFields show another manager
owning spec fields, our labels or the ownerReference, or that lost our labels or ownerReference, is put
back at once -- by SSA when something of ours is missing, by a PUT of the rendering when someone *added*
fields (SSA can never take those away). Child watch events trigger the check.

Error classes (failures.py): a write the API server refuses for good (4xx other than 408/409/429) turns the
instance Failed with reason ``ApiRejected`` and the server's message, remembered per (uid, generation,
devices.yaml digest) so nothing is sent again until one of them changes; a crash while rendering is
``Failed`` with reason ``RenderError``. Transient errors propagate to the caller, which backs off.

Status is written the same way: computed from scratch, compared with what is stored (after the CRD
model's normalisation), and patched only when it differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from xw_operator.devices import DevicesConfig
from xw_operator.errors import XwError
from xw_operator.instance import GROUP, PLURAL, VERSION, ModelInstance, ModelInstanceStatus, parse_instance
from xw_operator.k8s.client import FIELD_MANAGER, ApiError, KubeApi, object_path, path_of
from xw_operator.k8s.drift import foreign_fields, missing_metadata, replacement
from xw_operator.k8s.events import EventSpec, now_rfc3339, post_event, transition_event
from xw_operator.k8s.failures import is_permanent_api_error, rejection_message
from xw_operator.k8s.node_health import (
    DeviceFault,
    device_faults,
    device_requests,
    devices_withdrawn,
    health_fingerprint,
    health_view,
)
from xw_operator.k8s.ownership import (
    NameConflict,
    ensure_controlled,
    owned_or_none,
    revocation_message,
    withdraw_workload,
)
from xw_operator.k8s.status import Failure, Observed, compute_status, status_differs, status_patch
from xw_operator.k8s.status_groups import observe_groups
from xw_operator.labels import MANAGED_BY, MANAGED_BY_KEY, MODEL_INSTANCE_KEY, is_bookkeeping_annotation
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


API_REJECTED = "ApiRejected"  # status reason: the API server refused a child for good (e.g. 422 Invalid)
RENDER_ERROR = "RenderError"  # status reason: resolve/render crashed on this input (a bug; never retried)


class ChildRejected(Exception):
    """The API server refused a write of one child with a permanent (4xx) error."""

    def __init__(self, child: Mapping[str, Any], error: ApiError) -> None:
        meta = child.get("metadata", {})
        self.failure = Failure(API_REJECTED, rejection_message(str(child.get("kind")), str(meta.get("name")), error))
        super().__init__(self.failure.message)
        self.error = error


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
        preflight(instance, children, where)
    except XwError as exc:
        raise InvalidSpec(classify_failure(exc)) from None
    except Exception as exc:  # a crash on some input: Failed with the cause, never a retry loop
        log.exception("rendering %s crashed", where)
        failure = Failure(RENDER_ERROR, f"{where} could not be rendered: {type(exc).__name__}: {exc}"[:1000])
        raise InvalidSpec(failure) from None
    return Desired(instance, plan, children)


def preflight(instance: ModelInstance, children: tuple[Obj, ...], where: str) -> None:
    """What the API server accepts in a Deployment but refuses in every Pod created from it: an image
    with leading or trailing whitespace. Caught here, the instance is Failed at once instead of a
    Deployment whose ReplicaSet fails to create pods forever."""
    for child in children:
        template = (child.get("spec") or {}).get("template") or {}
        for container in (template.get("spec") or {}).get("containers") or []:
            image = str(container.get("image") or "")
            if image != image.strip():
                origin = "spec.engine.image" if instance.spec.engine.image else "the image devices.yaml configures"
                raise XwError(
                    f"{where}: {origin} {image!r} has leading or trailing whitespace, which the API server "
                    "refuses in a Pod; remove it"
                )


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


def workload_fingerprint(workload: Mapping[str, Any]) -> str:
    """What of a Deployment or LeaderWorkerSet status is computed from: its generation, status, spec-hash
    annotation, labels, owners and deletion mark (not resourceVersion or managedFields, which every
    write moves)."""
    meta = workload.get("metadata", {})
    seen = (
        meta.get("generation"),
        meta.get("deletionTimestamp"),
        (meta.get("annotations") or {}).get(SPEC_HASH_ANNOTATION),
        meta.get("labels"),
        [(o.get("uid"), o.get("controller")) for o in meta.get("ownerReferences") or []],
        workload.get("status"),
    )
    return hashlib.sha256(json.dumps(seen, sort_keys=True, default=str).encode()).hexdigest()[:20]


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


@dataclass(frozen=True)
class Converged:
    """What :func:`apply_children` did: ``Kind/name`` of each child written, and every child as now stored
    (the status that follows reads the workload from here instead of asking the API server again)."""

    applied: list[str]
    stored: dict[ChildKey, Obj]
    created: frozenset[ChildKey] = frozenset()  # did not exist before: a new workload has no pods yet


def apply_children(api: KubeApi, desired: Desired, generations: dict[ChildKey, int] | None = None) -> Converged:
    """Make each child exactly its rendering.

    ``generations`` remembers the generation each of our applies produced. A later spec change by
    someone else (``kubectl edit``, ``kubectl set image``) bumps the generation past it, so the child
    no longer counts as current and is applied again. A child first seen as current (e.g. after an
    operator restart) sets the baseline without a write. Fields someone else added or owns are found in
    managedFields (drift.py) and removed by :func:`restore_child`.

    Raises :class:`ChildRejected` when the API server refuses a write for good (4xx other than 408/409/429).
    """
    generations = generations if generations is not None else {}
    keys = [child_key(c) for c in desired.children]
    lives = {key: api.get(_path(c)) for key, c in zip(keys, desired.children, strict=True)}
    # Before any write: every name must be free or ours (ownership.py); raises NameConflict.
    ensure_controlled(desired.children, lives, keys, desired.instance.metadata.model_dump())
    applied, stored, created = [], {}, set()
    for child, key in zip(desired.children, keys, strict=True):
        try:
            now, written = converge_child(api, child, lives[key], generations.get(key))
        except ApiError as exc:
            if is_permanent_api_error(exc):
                raise ChildRejected(child, exc) from None
            raise
        stored[key] = now
        if lives[key] is None:
            created.add(key)
        if (gen := generation_of(now)) is not None:
            generations[key] = gen
        if written:
            applied.append(f"{child['kind']}/{child['metadata']['name']}")
    return Converged(applied, stored, frozenset(created))


def converge_child(api: KubeApi, child: Obj, live: Obj | None, known_generation: int | None) -> tuple[Obj, bool]:
    """One child: nothing (``(live, False)``), SSA, or restore; returns the object now stored and
    whether it was written. (A separate step so an ownership check can run before any write.)"""
    if live is not None and not live.get("metadata", {}).get("deletionTimestamp"):
        foreign = foreign_fields(live, list((child["metadata"].get("labels") or {}).keys()))
        if foreign:
            log.warning(
                "%s %s/%s: fields set by another client (%s); putting the rendering back",
                child["kind"],
                child["metadata"].get("namespace"),
                child["metadata"]["name"],
                "; ".join(foreign[:5]),
            )
            return restore_child(api, child, live), True
        if is_current(child, live, known_generation) and not missing_metadata(child, live):
            return live, False
    return api.apply(child), True


def restore_child(api: KubeApi, desired: Obj, live: Obj) -> Obj:
    """Make ``live`` exactly ``desired`` when other clients added fields that SSA cannot take back.

    1. a PUT of the rendering (with the live resourceVersion: a concurrent change makes it fail with 409
       and the next event retries) whose managedFields keep only our own and the ``status`` entries:
       every field others added is removed and no foreign manager is left;
    2. a server-side apply of the same rendering (no value changes) records our apply entry for exactly
       its fields -- later applies own, and may remove, every field of the rendering;
    3. managedFields without the PUT's own ``Update`` entry, which would otherwise keep co-owning fields
       that a later rendering drops.
    (managedFields are never emptied: an apply to an object without them makes a ``before-first-apply``
    manager own everything. A dry-run apply cannot replace step 2: merged with the foreign fields, the
    object may be invalid, e.g. two Service ports named ``http``.)
    """
    api.replace(replacement(desired, live))
    stored = api.apply(desired)
    for _ in range(3):
        entries = stored.get("metadata", {}).get("managedFields") or []
        kept = [e for e in entries if not (e.get("manager") == FIELD_MANAGER and e.get("operation") == "Update")]
        if len(kept) == len(entries):
            return stored
        patch = {"metadata": {"resourceVersion": stored["metadata"]["resourceVersion"], "managedFields": kept}}
        try:
            return api.merge_patch(_path(desired), patch)
        except ApiError as exc:
            # 409: the Deployment controller wrote in between (status, revision annotation): look again.
            if exc.status != 409:
                raise
            fresh = api.get(_path(desired))
            if fresh is None:
                raise
            stored = fresh
    return stored


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
        # Permanent API refusals: (namespace, name) -> ((uid, generation, config version), failure).
        self.rejections: dict[tuple[str, str], tuple[tuple[Any, ...], Failure]] = {}
        # (uid, generation) of each instance's last reconcile: a caller's older body is read again.
        self.reconciled_generations: dict[tuple[str, str], tuple[Any, Any]] = {}
        # Fingerprint of each workload as the last status computation saw it; see seen_workload.
        self.observed_workloads: dict[ChildKey, str] = {}
        # Nodes as last seen by the node watch (None: deleted); see node_health.
        self.nodes: dict[str, Obj | None] = {}
        self.evict_on_device_loss = True
        self.namespaces: list[str] | None = None  # None: all namespaces (used to find pods on a node)

    @property
    def config(self) -> DevicesConfig:
        config: DevicesConfig = self.config_source.current
        return config

    def _attempt_key(self, body: Mapping[str, Any]) -> tuple[Any, ...]:
        """What a permanent refusal depends on: the instance (uid, generation) and the devices.yaml version."""
        meta = body.get("metadata", {})
        state = getattr(self.config_source, "state", None)
        version = getattr(state, "digest", None) or id(self.config)
        return meta.get("uid"), meta.get("generation"), version

    def _remembered_rejection(self, body: Mapping[str, Any]) -> Failure | None:
        meta = body.get("metadata", {})
        memo = self.rejections.get((meta.get("namespace"), meta.get("name")))
        return memo[1] if memo is not None and memo[0] == self._attempt_key(body) else None

    def reconcile(self, namespace: str, name: str, body: Mapping[str, Any] | None = None) -> list[str]:
        """Make the children match the instance, then refresh status. Raises InvalidSpec for bad input
        and for a permanent API refusal (status Failed either way); transient errors propagate.

        ``body``: the instance as kopf just delivered it, which saves a GET per reconcile. kopf handles
        one instance's events in order, so a newer spec always follows with its own reconcile; a body
        older than a generation already reconciled (another path read it fresh) is not used, and a
        status written since is caught by the status patch's resourceVersion precondition
        (:meth:`_write_status`). Absent: read fresh."""
        with self.locks.hold(namespace, name):
            given = body is not None and not self._older_than_reconciled(body)
            body = dict(body) if given and body is not None else self.api.get(instance_path(namespace, name))
            if body is None or body["metadata"].get("deletionTimestamp"):
                return []
            meta = body["metadata"]
            self.reconciled_generations[(namespace, name)] = (meta.get("uid"), meta.get("generation"))
            try:
                desired = desired_state(body, self.config, multi_node=self.multi_node)
                if (failure := self._remembered_rejection(body)) is not None:
                    raise InvalidSpec(failure)  # same spec, same config: the same refusal; send nothing
                try:
                    converged = apply_children(self.api, desired, self.generations)
                except ChildRejected as exc:
                    log.warning("ModelInstance %s/%s: %s", namespace, name, exc)
                    self.rejections[(namespace, name)] = (self._attempt_key(body), exc.failure)
                    raise InvalidSpec(exc.failure) from None
                except NameConflict as exc:
                    # The transition Event (Warning, reason NameConflict) names the existing object.
                    raise InvalidSpec(classify_failure(exc)) from None
            except InvalidSpec as exc:
                withdrawn = withdraw_workload(  # revocation
                    self.api, body, exc.failure.reason, SPEC_HASH_ANNOTATION, multi_node=self.multi_node
                )
                if withdrawn is not None and (gen := generation_of(withdrawn)) is not None:
                    self.generations[child_key(withdrawn)] = gen  # our own write: not drift
                failed = exc.failure
                self._write_status(body, lambda b: self._observe(b, None, failed), maybe_stale=given)
                raise
            self.rejections.pop((namespace, name), None)
            if converged.applied:
                log.info("ModelInstance %s/%s: applied %s", namespace, name, ", ".join(converged.applied))
            key = child_key(desired.deployment)
            workload, new_workload = converged.stored.get(key), key in converged.created
            self._write_status(
                body,
                lambda b: self._observe(b, desired, None, workload=workload, new_workload=new_workload),
                maybe_stale=given,
            )
            return converged.applied

    def _older_than_reconciled(self, body: Mapping[str, Any]) -> bool:
        meta = body.get("metadata", {})
        uid, generation = self.reconciled_generations.get((meta.get("namespace"), meta.get("name")), (None, None))
        return bool(uid == meta.get("uid") and generation is not None and generation > (meta.get("generation") or 0))

    def forget(self, child: Mapping[str, Any]) -> None:
        """Drop what we remembered of a child that someone else deleted or changed."""
        self.generations.pop(child_key(child), None)
        self.observed_workloads.pop(child_key(child), None)

    def seen_workload(self, workload: Mapping[str, Any]) -> bool:
        """The last status computed for this workload's instance saw it exactly like this (same
        :func:`workload_fingerprint`): an event carrying it cannot change status. Saves the refresh --
        and its requests -- for the event of our own apply and for updates of fields status ignores."""
        return self.observed_workloads.get(child_key(workload)) == workload_fingerprint(workload)

    def drifted(self, child: Mapping[str, Any]) -> bool:
        """Cheap check on a watch event: the child's spec changed since our last apply (generation),
        another manager owns spec/labels/ownerReferences, or our controller reference is gone. The
        reconcile that follows compares the live object with the rendering exactly (no write if clean)."""
        known = self.generations.get(child_key(child))
        live = generation_of(child)
        if known is not None and live is not None and live != known:
            return True
        meta = child.get("metadata", {})
        owned = any(o.get("controller") and o.get("kind") == "ModelInstance" for o in meta.get("ownerReferences") or [])
        return not owned or bool(foreign_fields(child, list((meta.get("labels") or {}).keys())))

    def refresh_status(self, namespace: str, name: str) -> None:
        """Recompute status from the live children (a Deployment or Pod changed)."""
        with self.locks.hold(namespace, name):
            body = self.api.get(instance_path(namespace, name))
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            try:
                desired: Desired | None = desired_state(body, self.config, multi_node=self.multi_node)
                failure = self._remembered_rejection(body)
            except InvalidSpec as exc:
                desired, failure = None, exc.failure
            self._write_status(body, lambda b: self._observe(b, None if failure else desired, failure))

    def _observe(
        self,
        body: Obj,
        desired: Desired | None,
        failure: Failure | None,
        *,
        workload: Obj | None = None,
        new_workload: bool = False,
    ) -> Observed:
        """Everything status depends on. ``workload``: the Deployment (or LeaderWorkerSet) as a write of
        ours just returned it, saving a GET; ``new_workload``: that write created it, so it has no pods
        yet. Otherwise the instance's pods come from one LIST by its label (not the namespace's: that list
        grows with every instance, and so would each refresh)."""
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
        dep = workload if workload is not None else self.api.get(_path(want))
        pods = (
            []
            if new_workload
            else self.api.list(
                object_path("v1", "pods", namespace),
                label_selector=f"{MANAGED_BY_KEY}={MANAGED_BY},{MODEL_INSTANCE_KEY}={name}",
            )
        )
        faults = self._device_faults(pods)
        self._evict(body, faults)
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
            extra_problems=tuple(f.problem for f in faults),
        )

    # ------------------------------------------------------------------------------ accelerator health

    def _device_faults(self, pods: list[Obj]) -> list[DeviceFault]:
        """Faults of the nodes ``pods`` run on. The other xw pods of a node are listed only for a node
        that withdrew devices (the rare case): on any other node nothing can be short."""
        nodes = {str(p["spec"]["nodeName"]) for p in pods if (p.get("spec") or {}).get("nodeName")}
        known = {n: self.nodes[n] for n in nodes if n in self.nodes}
        if not known:
            return []
        wanted = {r for p in pods for r in device_requests(p)}
        short = [n for n, node in known.items() if node is not None and devices_withdrawn(node, wanted)]
        node_pods = {n: self._pods_on_node(n) for n in short}
        return device_faults(pods, node_pods, known)

    def _evict(self, body: Obj, faults: list[DeviceFault]) -> None:
        """Delete pods that lost their devices so their Deployment reschedules them (unless disabled)."""
        if not self.evict_on_device_loss:
            return
        for fault in faults:
            for pod in fault.pods:
                meta = pod["metadata"]
                log.warning(
                    "deleting pod %s/%s for rescheduling: %s", meta["namespace"], meta["name"], fault.problem.message
                )
                try:
                    self.api.delete(object_path("v1", "pods", meta["namespace"], meta["name"]), uid=meta.get("uid"))
                except ApiError as exc:
                    if exc.status not in (404, 409):
                        raise
                    continue
                post_event(
                    self.api,
                    body,
                    EventSpec("Warning", "PodRescheduled", f"deleted pod {meta['name']}: {fault.problem.message}"),
                )

    def node_changed(self, name: str, node: Obj | None) -> bool:
        """Record a node from the watch; True when its readiness or extended allocatable changed (a node
        seen for the first time counts only when it is unhealthy: start-up stays quiet)."""
        before = self.nodes.get(name, "unseen")
        node = health_view(node) if node is not None else None
        self.nodes[name] = node
        if node is None:
            return before != "unseen" and before is not None
        now = health_fingerprint(node)
        if before == "unseen":
            return not now[0]
        return before is None or health_fingerprint(before) != now  # type: ignore[arg-type]

    def instances_on_node(self, node: str) -> set[tuple[str, str]]:
        """(namespace, name) of every instance with a pod on ``node``."""
        out = set()
        for pod in self._pods_on_node(node):
            meta = pod.get("metadata", {})
            inst = (meta.get("labels") or {}).get(MODEL_INSTANCE_KEY)
            if inst:
                out.add((str(meta.get("namespace")), str(inst)))
        return out

    def _pods_on_node(self, node: str) -> list[Obj]:
        """Every xw pod on ``node`` in the namespaces this operator watches."""
        selector = f"{MANAGED_BY_KEY}={MANAGED_BY}"
        paths = (
            [object_path("v1", "pods", None)]
            if self.namespaces is None
            else [object_path("v1", "pods", ns) for ns in self.namespaces]
        )
        return [
            pod
            for path in paths
            for pod in self.api.list(path, label_selector=selector, field_selector=f"spec.nodeName={node}")
        ]

    def _write_status(self, body: Obj, observe: Callable[[Obj], Observed], *, maybe_stale: bool = False) -> None:
        """Patch status when what ``observe(body)`` gives differs from what ``body`` stores.

        ``maybe_stale``: ``body`` came from the caller, not a GET under this instance's lock, and a status
        refresh may have written since. The patch then carries the body's resourceVersion: a merge patch
        computed against an older status could leave fields behind and announce a transition twice, so a
        conflict (409) re-reads the instance and computes again -- unless its spec moved on (a newer
        generation reconciles by its own event; this rendering must not claim it)."""
        observed = observe(body)
        current = normalise_status(body.get("status"))
        desired = normalise_status(compute_status(observed, now=now_rfc3339()))
        if status_differs(current, desired):
            meta = body["metadata"]
            patch: Obj = {"status": status_patch(current, desired)}
            if maybe_stale and meta.get("resourceVersion"):
                patch["metadata"] = {"resourceVersion": meta["resourceVersion"]}
            try:
                self.api.merge_patch(instance_path(meta["namespace"], meta["name"], status=True), patch)
            except ApiError as exc:
                if exc.status != 409 or not maybe_stale:
                    raise
                fresh = self.api.get(instance_path(meta["namespace"], meta["name"]))
                same = fresh is not None and fresh["metadata"].get("uid") == meta.get("uid")
                if same and fresh is not None and fresh["metadata"].get("generation") == meta.get("generation"):
                    self._write_status(fresh, observe)
                return
            event = transition_event(current, desired)
            if event is not None:
                post_event(self.api, body, event)
        if observed.deployment is not None:  # only once stored: a failed write must not hide the next event
            self.observed_workloads[child_key(observed.deployment)] = workload_fingerprint(observed.deployment)
