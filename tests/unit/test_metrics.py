"""The operator's metrics module without a cluster: labels of API writes, reconcile classification, the
phase gauge and the watch-restart signal taken from kopf's own log records. (The integration tier scrapes
the real operator's /metrics: tests/k8s/test_day2.py.)"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from xw_operator.k8s.client import KubeApi
from xw_operator.k8s.metrics import KOPF_API_LOGGER, KOPF_WATCH_LOGGER, OperatorMetrics, write_labels
from xw_operator.k8s.reconcile import InvalidSpec
from xw_operator.k8s.status import Failure


def samples(metrics: OperatorMetrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


@pytest.mark.parametrize(
    ("key", "labels"),
    [
        ("PATCH /apis/apps/v1/namespaces/ns/deployments/qwen", ("patch", "Deployment")),
        ("PATCH /api/v1/namespaces/ns/services/qwen", ("patch", "Service")),
        ("PATCH /apis/xw.dev/v1alpha1/namespaces/ns/modelinstances/qwen/status", ("patch", "ModelInstance/status")),
        ("POST /api/v1/namespaces/ns/events", ("create", "Event")),
    ],
)
def test_write_labels_name_the_verb_and_kind(key: str, labels: tuple[str, str]) -> None:
    assert write_labels(key) == labels


def test_every_write_through_the_client_is_counted() -> None:
    metrics = OperatorMetrics()
    api = KubeApi(api_client=SimpleNamespace())  # no transport needed: on_write is called directly
    metrics.watch_api(api)
    assert api.on_write is not None
    api.on_write("PATCH", "/apis/apps/v1/namespaces/ns/deployments/qwen")
    writes = samples(metrics, "xw_operator_api_writes_total")
    assert writes[(("kind", "Deployment"), ("verb", "patch"))] == 1


class Twice:
    """Stands in for the Reconciler's two entry points (instrument() only wraps attributes)."""

    def __init__(self) -> None:
        self.outcome: Any = []

    def reconcile(self, namespace: str, name: str) -> list[str]:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return list(self.outcome)

    def refresh_status(self, namespace: str, name: str) -> None:
        return None


def test_reconciles_are_counted_and_timed_by_result() -> None:
    metrics = OperatorMetrics()
    target = Twice()
    metrics.instrument(target)  # type: ignore[arg-type]
    target.outcome = ["Deployment/a"]
    target.reconcile("ns", "a")
    target.outcome = []
    target.reconcile("ns", "a")
    target.outcome = InvalidSpec(Failure("UnknownChip", "unknown chip"))
    with pytest.raises(InvalidSpec):
        target.reconcile("ns", "a")
    target.outcome = RuntimeError("API down")
    with pytest.raises(RuntimeError):
        target.reconcile("ns", "a")
    target.refresh_status("ns", "a")
    counts = samples(metrics, "xw_operator_reconciles_total")
    for result in ("applied", "unchanged", "invalid", "error"):
        assert counts[(("kind", "spec"), ("result", result))] == 1, result
    assert counts[(("kind", "status"), ("result", "unchanged"))] == 1
    assert (
        samples(metrics, "xw_operator_reconcile_duration_seconds_count")[(("kind", "spec"), ("result", "error"))] == 1
    )


def test_phase_gauge_counts_the_listed_instances_by_phase() -> None:
    listed: list[dict[str, Any]] = [{"metadata": {"name": "a"}}, {"status": {"phase": "Ready"}}]
    metrics = OperatorMetrics()
    metrics.watch_instances(lambda: listed, ttl=0)
    gauge = samples(metrics, "xw_operator_instances")
    assert (gauge[(("phase", "Ready"),)], gauge[(("phase", "Unknown"),)], gauge[(("phase", "Failed"),)]) == (1, 1, 0)
    listed.append({"status": {"phase": "Failed"}})
    assert samples(metrics, "xw_operator_instances")[(("phase", "Failed"),)] == 1


def test_watch_restarts_are_counted_from_kopf_records_whose_debug_lines_stay_hidden() -> None:
    metrics = OperatorMetrics()
    metrics.count_kopf_watch_restarts(verbose=False)
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep()
    watching = logging.getLogger(KOPF_WATCH_LOGGER)
    watching.addHandler(handler)
    try:
        watching.debug("Starting the watch-stream for modelinstances.v1alpha1.xw.dev cluster-wide.")
        watching.debug("Restarting the watch-stream for deployments.v1.apps cluster-wide.")
        watching.debug("Watch-stream for pods.v1 cluster-wide is inactive, reconnecting.")
        logging.getLogger(KOPF_API_LOGGER).error(
            "Request attempt #1/9 failed; will retry: GET https://h/api/v1/pods?watch=true&x=1 -> boom"
        )
    finally:
        watching.removeHandler(handler)
        for f in list(watching.filters):
            watching.removeFilter(f)
        for f in list(logging.getLogger(KOPF_API_LOGGER).filters):
            logging.getLogger(KOPF_API_LOGGER).removeFilter(f)
    restarts = samples(metrics, "xw_operator_watch_restarts_total")
    assert restarts[(("reason", "gone"), ("resource", "deployments"))] == 1
    assert restarts[(("reason", "inactive"), ("resource", "pods"))] == 1
    assert restarts[(("reason", "error"), ("resource", "pods"))] == 1
    assert samples(metrics, "xw_operator_watch_streams_started_total")[(("resource", "modelinstances"),)] == 1
    assert seen == [], "kopf's debug lines leaked into the log without --verbose"
