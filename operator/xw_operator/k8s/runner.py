"""Start the operator: settings, devices.yaml source, handlers, the config watcher, then kopf.

Decisions (see docs/operator.md):
- ``standalone=True``: no peering CRDs or RBAC. One replica only (the chart uses ``Recreate``); two
  operators would both reconcile -- harmless thanks to idempotence, but they would race on status.
- No finalizer: owner references + garbage collection remove the children.
- kopf bookkeeping lives in annotations under ``xw.dev/`` (never in ``status``, which the CRD schema
  prunes and which is ours), and kopf never posts Events from log lines.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from xw_operator.errors import ConfigError
from xw_operator.instance import GROUP, PLURAL, VERSION
from xw_operator.k8s.client import KubeApi, object_path
from xw_operator.k8s.config_source import Change, ConfigMapSource, ConfigStore, ConfigWatcher, FileSource, Source
from xw_operator.k8s.events import EventSpec, post_event
from xw_operator.k8s.handlers import register
from xw_operator.k8s.metrics import DEFAULT_METRICS_PORT, wire_metrics
from xw_operator.k8s.reconcile import InvalidSpec, Reconciler
from xw_operator.k8s.status import FAILED
from xw_operator.labels import MANAGED_BY, MANAGED_BY_KEY
from xw_operator.settings import settings as env_settings

log = logging.getLogger("xw_operator.operator")

DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"
PREFIX = "xw.dev"


def operator_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = f"{PREFIX}/finalizer"  # unused (no deletion handlers), but ours if ever
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    # Watches end server-side before any proxy/LB idle timeout can cut them silently; the client timeout
    # is the safety net if the server never closes.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # Only our children are streamed: no cluster-wide Pod traffic through the operator.
    selector = f"{MANAGED_BY_KEY}={MANAGED_BY}"
    settings.watching.label_selectors["deployments"] = selector
    settings.watching.label_selectors["pods"] = selector
    settings.watching.label_selectors["leaderworkersets"] = selector
    settings.posting.loggers = False
    settings.posting.level = logging.WARNING
    # Resource discovery once at start-up: no list/watch of CRDs or namespaces needed (least privilege).
    settings.scanning.disabled = True
    settings.execution.max_workers = env_settings().max_workers
    return settings


def make_source(api: KubeApi, devices_config: str | None, devices_configmap: str | None) -> Source:
    from xw_operator.devices import default_devices_config_path

    if devices_config and devices_configmap:
        raise ConfigError("give either --devices-config or --devices-configmap, not both")
    if devices_configmap:
        return ConfigMapSource(api, devices_configmap)
    return FileSource(default_devices_config_path(devices_config))


class ConfigReactions:
    """What happens when devices.yaml changes: re-reconcile affected instances, or report a refusal."""

    def __init__(
        self, api: KubeApi, reconciler: Reconciler, source: Source, namespaces: Sequence[str], all_namespaces: bool
    ) -> None:
        self.api = api
        self.reconciler = reconciler
        self.source = source
        self.namespaces = namespaces
        self.all_namespaces = all_namespaces

    def instances(self) -> list[dict[str, Any]]:
        if self.all_namespaces:
            return self.api.list(object_path(f"{GROUP}/{VERSION}", PLURAL, None))
        return [i for ns in self.namespaces for i in self.api.list(object_path(f"{GROUP}/{VERSION}", PLURAL, ns))]

    def on_change(self, change: Change) -> None:
        log.info(
            "devices config reloaded (version %s); changed chip profiles: %s",
            change.digest,
            ", ".join(sorted(change.chips)) or "none",
        )
        # A policy change (tightened or relaxed) can affect every instance, whatever its chip.
        policy_changed = change.old.policy != change.new.policy
        affected = [
            body
            for body in self.instances()
            if policy_changed
            or ((body.get("spec") or {}).get("devices") or {}).get("chip") in change.chips
            or (body.get("status") or {}).get("phase") == FAILED  # untouched ones cannot render differently
        ]
        # In parallel, as kopf's handlers run: 100 affected instances must not wait for each other in turn.
        with ThreadPoolExecutor(max_workers=env_settings().max_workers, thread_name_prefix="devices-reload") as pool:
            list(pool.map(self._reconcile_after_change, affected))

    def _reconcile_after_change(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        try:
            applied = self.reconciler.reconcile(meta["namespace"], meta["name"])
            log.info("re-reconciled %s/%s after config change: %s", meta["namespace"], meta["name"], applied)
        except InvalidSpec as exc:
            log.warning("%s/%s is invalid under the new devices config: %s", meta["namespace"], meta["name"], exc)
        except Exception:
            log.exception("re-reconcile of %s/%s failed", meta["namespace"], meta["name"])

    def on_error(self, error: ConfigError) -> None:
        log.error("devices config refused, keeping the last good version: %s", error)
        event = EventSpec("Warning", "InvalidDevicesConfig", f"refused, last good version stays in force: {error}")
        if isinstance(self.source, ConfigMapSource):
            post_event(self.api, self.source.involved_object, event)
        elif (env := env_settings()).pod_name and env.pod_namespace:
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": env.pod_name, "namespace": env.pod_namespace},
            }
            post_event(self.api, pod, event)


def run_operator(
    namespaces: Sequence[str] = (),
    all_namespaces: bool = False,
    devices_config: str | None = None,
    devices_configmap: str | None = None,
    liveness: str | None = DEFAULT_LIVENESS,
    json_logs: bool = False,
    verbose: bool = False,
    multi_node: bool = False,
    metrics_port: int = DEFAULT_METRICS_PORT,
    metrics_address: str = "0.0.0.0",
) -> None:
    """Run until SIGTERM/SIGINT. Raises ConfigError when the initial devices.yaml is unusable."""
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.FULL)
    clusterwide = all_namespaces or not namespaces
    api = KubeApi()
    source = make_source(api, devices_config, devices_configmap)
    store = ConfigStore(source)
    log.info(
        "devices config from %s (version %s, %d chip keys); watching %s",
        source.description,
        store.state.digest,
        len(store.state.chips),
        "all namespaces" if clusterwide else ", ".join(namespaces),
    )
    reconciler = Reconciler(api, store, multi_node=multi_node)
    registry = kopf.OperatorRegistry()
    register(registry, reconciler, store, multi_node=multi_node)
    reactions = ConfigReactions(api, reconciler, source, namespaces, clusterwide)
    # Metrics are wired here, from the outside: reconcile/handler code carries no metrics calls.
    on_change, on_error = wire_metrics(
        (metrics_address, metrics_port),
        api,
        store,
        reconciler,
        registry,
        reactions.on_change,
        reactions.on_error,
        list_instances=reactions.instances,
        verbose=verbose,
    )
    watcher = ConfigWatcher(store, interval=env_settings().config_poll_seconds, on_change=on_change, on_error=on_error)
    watcher.start()
    try:
        kopf.run(
            registry=registry,
            settings=operator_settings(),
            standalone=True,
            clusterwide=clusterwide,
            namespaces=[] if clusterwide else list(namespaces),
            liveness_endpoint=liveness or None,
        )
    finally:
        watcher.stop()
