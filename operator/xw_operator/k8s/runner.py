"""Start the operator: settings, devices.yaml source, handlers, the config watcher, then kopf.

Decisions (see docs/operator.md):
- ``standalone=True``: no kopf peering. High availability is leader election on a Lease (leader.py),
  acquired *before* kopf and the config watcher start: a standby runs nothing that writes.
- Start-up never depends on a human: devices.yaml invalid at start -> the persisted last good version
  (last_good.py), or no configuration at all (nothing reconciled, /healthz and an Event say why).
- No finalizer: owner references + garbage collection remove the children.
- kopf's record of the last handled spec lives in memory (handled.py), its retry progress in annotations
  under ``xw.dev/`` (never in ``status``, which the CRD schema prunes and which is ours), and kopf never
  posts Events from log lines.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import kopf

from xw_operator.errors import ConfigError
from xw_operator.instance import GROUP, PLURAL, VERSION
from xw_operator.k8s import memory
from xw_operator.k8s.client import KubeApi, object_path, process_identity
from xw_operator.k8s.config_source import (
    Change,
    ConfigMapSource,
    ConfigStore,
    ConfigWatcher,
    FileSource,
    Source,
    parse_configmap_reference,
)
from xw_operator.k8s.events import EventSpec, post_event
from xw_operator.k8s.failures import is_transient
from xw_operator.k8s.handled import HandledSpecs, RetryProgress
from xw_operator.k8s.handlers import register
from xw_operator.k8s.health import StandbyHealthServer
from xw_operator.k8s.last_good import LastGoodStore
from xw_operator.k8s.leader import LeaderElector, parse_lease_reference
from xw_operator.k8s.metrics import DEFAULT_METRICS_PORT, wire_metrics
from xw_operator.k8s.reconcile import InvalidSpec, Reconciler
from xw_operator.k8s.status import FAILED
from xw_operator.labels import MANAGED_BY, MANAGED_BY_KEY
from xw_operator.settings import settings as env_settings

log = logging.getLogger("xw_operator.operator")

DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"
PREFIX = "xw.dev"
LIST_PAGE_SIZE = 100


def operator_settings(executor: ThreadPoolExecutor, handled: HandledSpecs) -> kopf.OperatorSettings:
    """kopf's settings; ``executor`` runs the synchronous handlers (and, via handlers.register, the
    blocking part of child and node events); ``handled`` keeps the last handled spec of each instance
    in memory (handled.py: no annotation write per instance)."""
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = f"{PREFIX}/finalizer"  # unused (no deletion handlers), but ours if ever
    # Written only while a handler is being retried (a transient error), and removed when it succeeds.
    settings.persistence.progress_storage = RetryProgress(prefix=PREFIX)
    settings.persistence.diffbase_storage = handled
    # Watches end server-side before any proxy/LB idle timeout can cut them silently; the client timeout
    # is the safety net if the server never closes.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # kopf's own API calls retry for ~3 min before giving up (default ~1 min): an API server or etcd that is
    # down for 90 s is ridden out without an error escaping.
    settings.networking.error_backoffs = (1, 1, 2, 3, 5, 8, 13, 21, 30, 30, 30, 30)
    # Only our children are streamed: no cluster-wide Pod traffic through the operator.
    selector = f"{MANAGED_BY_KEY}={MANAGED_BY}"
    settings.watching.label_selectors["deployments"] = selector
    settings.watching.label_selectors["services"] = selector
    settings.watching.label_selectors["pods"] = selector
    settings.watching.label_selectors["leaderworkersets"] = selector
    # Initial listings in pages: at 1,000 instances one unpaged LIST of Deployments is megabytes of JSON
    # decoded at once, a peak CPython's allocator keeps as resident memory long after (k8s/memory.py).
    settings.watching.chunk_size = LIST_PAGE_SIZE
    settings.posting.loggers = False
    settings.posting.level = logging.WARNING
    # Resource discovery once at start-up: no list/watch of CRDs or namespaces needed (least privilege).
    settings.scanning.disabled = True
    settings.execution.executor = executor  # sized by the caller (XW_MAX_WORKERS)
    return settings


def make_source(api: KubeApi, devices_config: str | None, devices_configmap: str | None) -> Source:
    from xw_operator.devices import default_devices_config_path

    if devices_config and devices_configmap:
        raise ConfigError("give either --devices-config or --devices-configmap, not both")
    if devices_configmap:
        return ConfigMapSource(api, devices_configmap)
    return FileSource(default_devices_config_path(devices_config))


@dataclass(eq=False)  # identity semantics: it holds a lock and pending work
class ConfigReactions:
    """What happens when devices.yaml changes: re-reconcile affected instances, or report a refusal.

    A reload is never lost: the chips it changed stay *pending* until every affected instance was
    reached (reconciled, or found invalid -- its status then says so). Listing instances failing, or a
    transient error on any of them, leaves them pending, and every later poll of the watcher retries
    (instances already converged cost a GET each, no write: the spec-hash rule)."""

    api: KubeApi
    reconciler: Reconciler
    source: Source
    namespaces: Sequence[str]
    all_namespaces: bool
    store: ConfigStore | None = None
    last_good: LastGoodStore | None = None
    # Chips whose change has not reached every affected instance yet (guarded by _lock).
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _pending: set[str] = field(default_factory=set, init=False)
    _pending_all: bool = field(default=False, init=False)
    _retry_failed: bool = field(default=False, init=False)

    def instances(self) -> list[dict[str, Any]]:
        if self.all_namespaces:
            return self.api.list(object_path(f"{GROUP}/{VERSION}", PLURAL, None))
        return [i for ns in self.namespaces for i in self.api.list(object_path(f"{GROUP}/{VERSION}", PLURAL, ns))]

    def on_change(self, change: Change) -> None:
        log.info(
            "devices config reloaded (version %s); changed chip profiles: %s",
            change.digest,
            "all (first valid version)" if change.everything else ", ".join(sorted(change.chips)) or "none",
        )
        # A policy change (tightened or relaxed) can affect every instance, whatever its chip.
        policy_changed = change.old is not None and change.old.policy != change.new.policy
        with self._lock:
            self._pending |= set(change.chips)
            self._pending_all = self._pending_all or change.everything or policy_changed
            # Failed instances are always retried on a reload (the new version may fix them).
            self._retry_failed = True
        self.flush()

    def has_pending(self) -> bool:
        with self._lock:
            return bool(self._pending or self._pending_all or self._retry_failed)

    def flush(self) -> bool:
        """Reach every instance the pending changes affect; True when none is left pending."""
        with self._lock:
            chips, everything = set(self._pending), self._pending_all
            retry_failed = self._retry_failed
        self._publish(chips, everything)
        if not (chips or everything or retry_failed):
            return True
        try:
            instances = self.instances()
        except Exception as exc:
            log.warning("devices config change not applied yet (listing instances failed, will retry): %s", exc)
            return False
        affected = [
            body
            for body in instances
            if everything
            or ((body.get("spec") or {}).get("devices") or {}).get("chip") in chips
            or (body.get("status") or {}).get("phase") == FAILED  # untouched ones cannot render differently
        ]
        # In parallel, as kopf's handlers run: 100 affected instances must not wait for each other in turn.
        with ThreadPoolExecutor(max_workers=env_settings().max_workers, thread_name_prefix="devices-reload") as pool:
            complete = all(pool.map(self._reconcile_after_change, affected))
        if complete:
            with self._lock:
                self._pending -= chips
                if everything:
                    self._pending_all = False
                self._retry_failed = False
                chips, everything = set(self._pending), self._pending_all
            self._publish(chips, everything)
        return complete

    def _reconcile_after_change(self, body: dict[str, Any]) -> bool:
        """Reconcile one affected instance; False when it must be retried (a transient failure)."""
        meta = body["metadata"]
        try:
            # Read fresh (no body): the listing may be older than a spec change reconciled since.
            applied = self.reconciler.reconcile(meta["namespace"], meta["name"])
            log.info("re-reconciled %s/%s after config change: %s", meta["namespace"], meta["name"], applied)
        except InvalidSpec as exc:
            log.warning("%s/%s is invalid under the new devices config: %s", meta["namespace"], meta["name"], exc)
        except Exception as exc:
            if is_transient(exc):
                log.warning("re-reconcile of %s/%s failed, will retry: %s", meta["namespace"], meta["name"], exc)
            else:
                log.exception("re-reconcile of %s/%s failed, will retry", meta["namespace"], meta["name"])
            return False
        return True

    def _publish(self, chips: set[str], everything: bool) -> None:
        if self.store is not None:
            self.store.state.pending = ["*"] if everything else sorted(chips)

    def on_idle(self) -> None:
        if self.has_pending():
            self.flush()

    def involved_object(self) -> dict[str, Any] | None:
        """What a config Event is about: the source ConfigMap, else the operator Pod, else the last-good
        ConfigMap (the operator's own object, also when it runs outside the cluster)."""
        if isinstance(self.source, ConfigMapSource):
            return self.source.involved_object
        if (env := env_settings()).pod_name and env.pod_namespace:
            return {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": env.pod_name, "namespace": env.pod_namespace},
            }
        if self.last_good is not None:
            return self.last_good.involved_object
        return None

    def on_error(self, error: ConfigError) -> None:
        if self.store is not None and not self.store.ready:
            log.error("devices config invalid and no good version was ever seen; reconciling nothing: %s", error)
            event = EventSpec(
                "Warning", "NoDevicesConfig", f"no valid devices.yaml seen yet, nothing is reconciled: {error}"
            )
        else:
            in_force = self.store.state.in_force if self.store is not None else "source"
            which = "the persisted last good version" if in_force == "last-good" else "the last good version"
            log.error("devices config refused, %s stays in force: %s", which, error)
            event = EventSpec("Warning", "InvalidDevicesConfig", f"refused, {which} stays in force: {error}")
        involved = self.involved_object()
        if involved is not None:
            post_event(self.api, involved, event)


def run_operator(
    namespaces: Sequence[str] = (),
    all_namespaces: bool = False,
    devices_config: str | None = None,
    devices_configmap: str | None = None,
    liveness: str | None = DEFAULT_LIVENESS,
    json_logs: bool = False,
    verbose: bool = False,
    multi_node: bool = False,
    leader_election_lease: str | None = None,
    last_good_configmap: str | None = None,
    evict_on_device_loss: bool = True,
    watch_nodes: bool = True,
    metrics_port: int = DEFAULT_METRICS_PORT,
    metrics_address: str = "0.0.0.0",
) -> None:
    """Run until SIGTERM/SIGINT. An invalid devices.yaml never stops it (see the module docstring)."""
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.FULL)
    memory.tune_malloc()  # before any thread starts (memory.py: RSS after bursts)
    clusterwide = all_namespaces or not namespaces
    api = KubeApi()
    source = make_source(api, devices_config, devices_configmap)
    last_good = LastGoodStore(api, *parse_configmap_reference(last_good_configmap)) if last_good_configmap else None
    elector = (
        LeaderElector(api, *parse_lease_reference(leader_election_lease), process_identity())
        if leader_election_lease
        else None
    )
    if elector is not None:
        # Standby: nothing but the Lease and a /healthz until this process leads.
        standby = StandbyHealthServer(liveness, lambda: {"leaderElection": elector.status()}) if liveness else None
        if standby is not None:
            standby.start()
        try:
            elector.acquire()
        finally:
            if standby is not None:
                standby.stop()
        elector.start_renewing()
    try:
        _run_leader(
            api,
            source,
            last_good,
            namespaces,
            clusterwide,
            liveness,
            evict_on_device_loss,
            watch_nodes,
            elector,
            multi_node,
            (metrics_address, metrics_port),
            verbose,
        )
    finally:
        if elector is not None:
            elector.release()


def _run_leader(
    api: KubeApi,
    source: Source,
    last_good: LastGoodStore | None,
    namespaces: Sequence[str],
    clusterwide: bool,
    liveness: str | None,
    evict_on_device_loss: bool,
    watch_nodes: bool,
    elector: LeaderElector | None,
    multi_node: bool = False,
    metrics_listen: tuple[str, int] = ("0.0.0.0", DEFAULT_METRICS_PORT),
    verbose: bool = False,
) -> None:
    store = ConfigStore(source, last_good)
    log.info(
        "devices config from %s (version %s, %s, %d chip keys); watching %s",
        source.description,
        store.state.digest,
        store.state.in_force,
        len(store.state.chips),
        "all namespaces" if clusterwide else ", ".join(namespaces),
    )
    reconciler = Reconciler(api, store, multi_node=multi_node)
    reconciler.evict_on_device_loss = evict_on_device_loss
    reconciler.namespaces = None if clusterwide else list(namespaces)
    registry = kopf.OperatorRegistry()
    executor = ThreadPoolExecutor(max_workers=env_settings().max_workers, thread_name_prefix="handler")
    handled = HandledSpecs(prefix=PREFIX)
    register(
        registry, reconciler, store, multi_node=multi_node, watch_nodes=watch_nodes, executor=executor, handled=handled
    )
    if elector is not None:

        @kopf.on.probe(id="leaderElection", registry=registry)
        def leader_probe(**_: Any) -> dict[str, Any]:
            return elector.status()

    reactions = ConfigReactions(api, reconciler, source, namespaces, clusterwide, store, last_good)
    # Metrics are wired here, from the outside: reconcile/handler code carries no metrics calls.
    on_change, on_error = wire_metrics(
        metrics_listen,
        api,
        store,
        reconciler,
        registry,
        reactions.on_change,
        reactions.on_error,
        list_instances=reactions.instances,
        verbose=verbose,
    )
    if store.startup_error is not None:
        on_error(store.startup_error)
    watcher = ConfigWatcher(
        store,
        interval=env_settings().config_poll_seconds,
        on_change=on_change,
        on_error=on_error,
        on_idle=reactions.on_idle,
    )
    watcher.start()
    trimmer = memory.Trimmer().start()
    try:
        kopf.run(
            registry=registry,
            settings=operator_settings(executor, handled),
            standalone=True,
            clusterwide=clusterwide,
            namespaces=[] if clusterwide else list(namespaces),
            liveness_endpoint=liveness or None,
        )
    finally:
        trimmer.stop()
        watcher.stop()
