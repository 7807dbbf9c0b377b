"""The operator's Prometheus metrics, served at ``/metrics`` on ``--metrics-port`` (default 9090, 0: off).

What a platform team alerts on: a reconcile that keeps failing or gets slow, a write storm (the no-write
rule broken), instances stuck outside Ready, a devices.yaml that was refused, watch streams that keep
restarting. Everything is wired from the outside (the composition root, ``runner.py``), so the
reconcile/handler code stays free of metrics calls:

- reconciles: :func:`instrument_reconciler` wraps ``Reconciler.reconcile`` (spec -> children) and
  ``refresh_status`` (a child changed -> status), timing each and classifying the outcome;
- API writes: the ``on_write`` hook of :class:`~xw_operator.k8s.client.KubeApi`, which every write goes
  through, counted by verb and kind;
- instances by phase: a LIST of the served namespaces' ModelInstances, at most every 10 s, at scrape time
  (see :meth:`OperatorMetrics.watch_instances` for why not from a kopf handler);
- devices.yaml reloads and rejections: the config watcher's callbacks, wrapped;
- watch restarts: kopf has no hook for its watch streams, but logs their lifecycle from one module; a
  logging filter there counts the restarts it reports (410 Gone -> re-list, an inactive stream
  reconnected, a failed watch request) without letting the debug lines through. The routine reconnect
  when the API server ends a watch after its timeout (300 s here) is not reported by kopf, is normal,
  and is not counted.

A private :class:`~prometheus_client.CollectorRegistry` (plus the process collector: RSS, CPU, open fds)
keeps several operators in one test process apart and avoids the library's global default registry.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import kopf
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from xw_operator.errors import ConfigError, XwError
from xw_operator.k8s.client import KubeApi
from xw_operator.k8s.config_source import Change, ConfigStore
from xw_operator.k8s.reconcile import InvalidSpec, Reconciler

log = logging.getLogger(__name__)

DEFAULT_METRICS_PORT = 9090
PREFIX = "xw_operator"
# Reconciles of an LLM instance take milliseconds (a GET or two, maybe an apply); a slow API server shows
# up in the upper buckets.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PHASES = ("Pending", "Progressing", "Ready", "Degraded", "Failed", "Unknown")
KOPF_WATCH_LOGGER = "kopf._cogs.clients.watching"
KOPF_API_LOGGER = "kopf._cogs.clients.api"

# HTTP method of a write -> Kubernetes verb (server-side apply is a PATCH).
VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
KINDS = {
    "deployments": "Deployment",
    "services": "Service",
    "events": "Event",
    "modelinstances": "ModelInstance",
    "configmaps": "ConfigMap",
    "pods": "Pod",
}

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def write_labels(key: str) -> tuple[str, str]:
    """``"PATCH /apis/apps/v1/namespaces/ns/deployments/x"`` -> ``("patch", "Deployment")``; a
    subresource is part of the kind (``ModelInstance/status``)."""
    method, _, path = key.partition(" ")
    verb = VERBS.get(method.upper(), method.lower())
    parts = path.split("?", 1)[0].strip("/").split("/")
    # /api/v1/... (core group) or /apis/GROUP/VERSION/...; then an optional namespaces/NS.
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]
    if not rest or not rest[0]:
        return verb, "Unknown"
    kind = KINDS.get(rest[0], rest[0])
    return verb, f"{kind}/{rest[2]}" if len(rest) > 2 else kind


class _ConfigCollector(Collector):
    """Whether the devices.yaml in force is the latest one offered (0 while a refused version waits)."""

    def __init__(self, store: ConfigStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self.store.state
        ok = GaugeMetricFamily(
            f"{PREFIX}_devices_config_valid",
            "1 when the newest devices.yaml was accepted; 0 while a refused version is pending (the last good "
            "one stays in force).",
        )
        ok.add_metric([], 0.0 if state.last_error else 1.0)
        yield ok
        info = GaugeMetricFamily(
            f"{PREFIX}_devices_config_info", "The devices.yaml version in force.", labels=["digest"]
        )
        info.add_metric([state.digest or "none"], 1.0)  # none: no valid version seen yet
        yield info


class _PhaseCollector(Collector):
    def __init__(self, phases: Callable[[], Mapping[str, int]]) -> None:
        self.phases = phases

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            f"{PREFIX}_instances", "ModelInstances the operator sees, by status.phase.", labels=["phase"]
        )
        counts = self.phases()
        for phase in PHASES:
            family.add_metric([phase], float(counts.get(phase, 0)))
        yield family


class OperatorMetrics:
    """All metrics of one operator process, on a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.reconciles = self._counter(
            "reconciles",
            "Reconciles by kind (spec: children from the spec; status: status from a changed child) and result "
            "(applied: children written; unchanged: nothing to write; invalid: the spec cannot be realised; "
            "error: the API failed, retried).",
            "kind",
            "result",
        )
        self.duration = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "Wall time of one reconcile, by kind and result.",
            ["kind", "result"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.config_reloads = self._counter("devices_config_reloads", "devices.yaml versions accepted after start-up.")
        self.config_rejections = self._counter(
            "devices_config_rejections",
            "devices.yaml versions refused (invalid or unreadable); the last good one stays in force.",
        )
        self.watch_restarts = self._counter(
            "watch_restarts",
            "Watch streams kopf restarted, by resource and reason (gone: 410, re-listed; inactive: no event for "
            "too long, reconnected; error: a watch request failed). Routine reconnects after the server's "
            "watch timeout are not counted.",
            "resource",
            "reason",
        )
        self.watch_starts = self._counter("watch_streams_started", "Watch streams started, by resource.", "resource")
        self.api_writes = self._counter(
            "api_writes",
            "API writes the operator made, by verb (server-side apply is a patch) and kind.",
            "verb",
            "kind",
        )
        self._list_instances: Callable[[], list[dict[str, Any]]] | None = None
        self._phase_ttl = 10.0
        self._phase_cache: dict[str, int] = {}
        self._phases_at = float("-inf")
        self._phases_lock = threading.Lock()
        self.registry.register(_PhaseCollector(self.phase_counts))
        for reason in ("gone", "inactive", "error"):
            self.watch_restarts.labels("modelinstances", reason)  # exported as 0 before the first one
        self.reconciles.labels("spec", "applied")

    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        """A counter named ``xw_operator_<name>`` (``_total`` added by the client) on this registry."""
        return Counter(f"{PREFIX}_{name}", documentation, labels, registry=self.registry)

    # ---------------------------------------------------------------- wiring

    def watch_api(self, api: KubeApi) -> None:
        api.on_write = self.count_write

    def count_write(self, method: str, path: str) -> None:
        self.api_writes.labels(*write_labels(f"{method} {path}")).inc()

    def watch_config(self, store: ConfigStore) -> None:
        self.registry.register(_ConfigCollector(store))

    def counting(self, callback: Callable[[T], None], counter: Counter) -> Callable[[T], None]:
        """A config-watcher callback that also counts its calls."""

        @functools.wraps(callback)
        def wrapper(arg: T) -> None:
            counter.inc()
            callback(arg)

        return wrapper

    def instrument(self, reconciler: Reconciler) -> None:
        """Time and classify every reconcile and status refresh, whoever calls them (handlers, reloads)."""
        reconciler.reconcile = self._timed("spec", reconciler.reconcile)  # type: ignore[method-assign]
        reconciler.refresh_status = self._timed("status", reconciler.refresh_status)  # type: ignore[method-assign]

    def _timed(self, kind: str, func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = "error"
            try:
                value = func(*args, **kwargs)
                result = "applied" if value else "unchanged"
                return value
            except InvalidSpec:
                result = "invalid"
                raise
            finally:
                self.reconciles.labels(kind, result).inc()
                self.duration.labels(kind, result).observe(time.perf_counter() - start)

        return wrapper  # type: ignore[return-value]

    # ---------------------------------------------------------------- instances by phase

    def watch_instances(self, list_instances: Callable[[], list[dict[str, Any]]], ttl: float = 10.0) -> None:
        """Count instances by ``status.phase`` from a LIST of the served namespaces, at most every ``ttl``
        seconds (scrapes come every 15-60 s). Not from a kopf event handler on ModelInstances: a second
        handler on the resource made kopf process a brand-new instance's creation twice (two status
        writes, two Events; tests/k8s/test_operator.py::test_unknown_chip_fails_without_children...)."""
        self._list_instances = list_instances
        self._phase_ttl = ttl

    def phase_counts(self) -> dict[str, int]:
        with self._phases_lock:
            if self._list_instances is not None and time.monotonic() - self._phases_at >= self._phase_ttl:
                try:
                    items = self._list_instances()
                except Exception as exc:  # keep the last counts; the next scrape retries
                    log.warning("metrics: listing ModelInstances failed: %s", exc)
                else:
                    counts: dict[str, int] = {}
                    for body in items:
                        phase = (body.get("status") or {}).get("phase")
                        key = phase if phase in PHASES else "Unknown"
                        counts[key] = counts.get(key, 0) + 1
                    self._phase_cache, self._phases_at = counts, time.monotonic()
            return dict(self._phase_cache)

    # ---------------------------------------------------------------- watch restarts

    def count_kopf_watch_restarts(self, *, verbose: bool) -> None:
        """Count the watch-stream restarts kopf logs; drop its debug lines unless ``verbose``."""
        watching = logging.getLogger(KOPF_WATCH_LOGGER)
        watching.addFilter(_WatchLogFilter(self, keep_debug=verbose))
        if watching.getEffectiveLevel() > logging.DEBUG:
            watching.setLevel(logging.DEBUG)
        logging.getLogger(KOPF_API_LOGGER).addFilter(_WatchLogFilter(self, keep_debug=True))

    # ---------------------------------------------------------------- serving

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` from a daemon thread; a port in use is a clear start-up error."""
        try:
            start_http_server(port, addr=address, registry=self.registry)
        except OSError as exc:
            raise XwError(
                f"--metrics-port {port}: cannot listen on {address}:{port} ({exc.strerror or exc}); "
                "choose a free port, or 0 to disable metrics"
            ) from None
        log.info("metrics at http://%s:%d/metrics", address, port)


_RESOURCE = re.compile(r"watch-stream for (?P<resource>\S+)", re.IGNORECASE)
_WATCH_URL = re.compile(r"GET \S*/(?P<plural>[a-z0-9.-]+)\?\S*watch=true")


class _WatchLogFilter(logging.Filter):
    """Counts kopf's watch lifecycle records; lets through only what the configured level wants."""

    def __init__(self, metrics: OperatorMetrics, *, keep_debug: bool) -> None:
        super().__init__()
        self.metrics = metrics
        self.keep_debug = keep_debug

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        if record.name == KOPF_API_LOGGER:
            m = _WATCH_URL.search(message)
            if m and record.levelno >= logging.ERROR:
                self.metrics.watch_restarts.labels(m.group("plural"), "error").inc()
            return True
        m = _RESOURCE.search(message)
        resource = _plural(m.group("resource")) if m else "unknown"
        if message.startswith("Restarting the watch-stream"):
            self.metrics.watch_restarts.labels(resource, "gone").inc()
        elif message.endswith("is inactive, reconnecting."):
            self.metrics.watch_restarts.labels(resource, "inactive").inc()
        elif message.startswith("Starting the watch-stream"):
            self.metrics.watch_starts.labels(resource).inc()
        return record.levelno > logging.DEBUG or self.keep_debug


def _plural(resource: str) -> str:
    """kopf prints resources as ``plural.version.group`` (``deployments.v1.apps``); keep the plural."""
    return resource.split(".", 1)[0]


def wire_metrics(
    listen: tuple[str, int],
    api: KubeApi,
    store: ConfigStore,
    reconciler: Reconciler,
    registry: kopf.OperatorRegistry,
    on_change: Callable[[Change], None],
    on_error: Callable[[ConfigError], None],
    *,
    list_instances: Callable[[], list[dict[str, Any]]],
    verbose: bool,
) -> tuple[Callable[[Change], None], Callable[[ConfigError], None]]:
    """Instrument one operator and serve its metrics (nothing when ``port`` is 0); returns the config
    watcher's callbacks, counting."""
    address, port = listen
    if not port:
        return on_change, on_error
    metrics = OperatorMetrics()
    metrics.instrument(reconciler)
    metrics.watch_api(api)
    metrics.watch_config(store)
    metrics.watch_instances(list_instances)
    metrics.count_kopf_watch_restarts(verbose=verbose)
    metrics.serve(port, address)
    return metrics.counting(on_change, metrics.config_reloads), metrics.counting(on_error, metrics.config_rejections)
