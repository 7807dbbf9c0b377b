"""Leader election on a coordination.k8s.io/v1 Lease: one active reconciler among 2+ replicas.

Design (simple on purpose, the same rules as client-go's leaderelection):

- The process acquires the Lease *before* it starts kopf and the devices.yaml watcher, so a standby
  has no watch, no handler and no writer running: it cannot write anything but the Lease.
- A Lease is free when it has no holder (released on a clean shutdown) or when its record (holder,
  renewTime, transitions) has not changed for ``leaseDurationSeconds`` *as observed locally* -- no
  comparison of clocks between machines. Takeover is a PUT with the observed resourceVersion, so two
  standbys cannot both win.
- The leader renews every ``renew`` seconds from a thread. If it cannot renew for ``deadline`` seconds
  (< the lease duration, so it stops before anyone may take over), or finds another holder, it exits
  the process at once with code 3 -- the kubelet restarts it as a standby. Exiting is the one way to
  guarantee that no handler still running in some thread writes after leadership is lost.

Timing (defaults): lease 10 s, renew 2 s, deadline 7 s, standby retry 1 s: a standby takes over at most
~12 s after the leader died (its last renewal + lease duration + one retry), then starts kopf.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from xw_operator.k8s.client import ApiError, KubeApi, object_path

log = logging.getLogger(__name__)

LOST_EXIT_CODE = 3


def micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_lease_reference(reference: str) -> tuple[str, str]:
    from xw_operator.errors import ConfigError

    namespace, sep, name = reference.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ConfigError(f"--leader-election-lease must be NAMESPACE/NAME, got {reference!r}")
    return namespace, name


class LeaderElector:
    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_seconds: int = 10,
        renew_seconds: float = 2.0,
        deadline_seconds: float = 7.0,
        retry_seconds: float = 1.0,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.deadline_seconds = deadline_seconds
        self.retry_seconds = retry_seconds
        self.on_lost = on_lost or _exit_process
        self.leader = False
        self.holder: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def path(self) -> str:
        return object_path("coordination.k8s.io/v1", "leases", self.namespace, self.name)

    def status(self) -> dict[str, Any]:
        return {
            "lease": f"{self.namespace}/{self.name}",
            "identity": self.identity,
            "leader": self.leader,
            "holder": self.holder,
        }

    def _spec(self, transitions: int, acquire_time: str | None = None) -> dict[str, Any]:
        now = micro_time()
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "acquireTime": acquire_time or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Block until this process holds the Lease (True) or ``stop`` is set (False)."""
        stop = stop or self._stop
        observed: tuple[Any, ...] | None = None
        observed_at = time.monotonic()
        announced = False
        while not stop.is_set():
            try:
                lease = self.api.get(self.path)
                if lease is None:
                    body = {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": self._spec(0),
                    }
                    self.api.request("POST", object_path("coordination.k8s.io/v1", "leases", self.namespace), body=body)
                    return self._won("created")
                spec = lease.get("spec") or {}
                holder = spec.get("holderIdentity") or None
                self.holder = holder
                record = (holder, spec.get("renewTime"), spec.get("leaseTransitions"))
                if record != observed:
                    observed, observed_at = record, time.monotonic()
                duration = int(spec.get("leaseDurationSeconds") or self.lease_seconds)
                expired = time.monotonic() - observed_at >= duration
                if holder is None or holder == self.identity or expired:
                    transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
                    lease["spec"] = self._spec(transitions)
                    self.api.request("PUT", self.path, body=lease)
                    return self._won(f"taken over from {holder}" if holder and holder != self.identity else "acquired")
                if not announced:
                    log.info("standby: Lease %s/%s is held by %s; waiting", self.namespace, self.name, holder)
                    announced = True
            except ApiError as exc:
                # 409: someone else won the race (or renewed) -- look again. Anything else: retry.
                if exc.status != 409:
                    log.warning("leader election: %s", exc)
            except (KeyError, TypeError, ValueError) as exc:  # a malformed Lease: log and look again
                log.warning("leader election: unexpected Lease content: %s", exc)
            stop.wait(self.retry_seconds)
        return False

    def _won(self, how: str) -> bool:
        self.leader = True
        self.holder = self.identity
        log.info("leader election: %s Lease %s/%s as %s", how, self.namespace, self.name, self.identity)
        return True

    def start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="lease-renewer", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        try:
            self._renew_until_stopped()
        except BaseException as exc:  # a dead renewer must never leave a leader that no longer renews
            self._lost(f"renewal thread crashed: {type(exc).__name__}: {exc}")

    def _renew_until_stopped(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.renew_seconds):
            try:
                lease = self.api.get(self.path)
                holder = ((lease or {}).get("spec") or {}).get("holderIdentity")
                if lease is None or holder != self.identity:
                    self._lost(f"the Lease is now held by {holder or 'nobody'}")
                    return
                spec = lease["spec"]
                spec["renewTime"] = micro_time()
                self.api.request("PUT", self.path, body=lease)
                last_ok = time.monotonic()
            except Exception as exc:  # ApiError, or a malformed Lease: the same as a failed renewal
                silent = time.monotonic() - last_ok
                log.warning("leader election: renewal failed (%.0fs since the last one): %s", silent, exc)
                if silent >= self.deadline_seconds:
                    self._lost(f"could not renew for {silent:.0f}s")
                    return

    def _lost(self, why: str) -> None:
        self.leader = False
        if self._stop.is_set():
            return
        log.critical(
            "leader election: lost Lease %s/%s (%s); exiting so that no stale write can happen",
            self.namespace,
            self.name,
            why,
        )
        self.on_lost(why)

    def release(self) -> None:
        """Clean shutdown: stop renewing and free the Lease so a standby takes over at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self.leader:
            return
        self.leader = False
        try:
            lease = self.api.get(self.path)
            if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = None
                lease["spec"]["leaseDurationSeconds"] = 1
                self.api.request("PUT", self.path, body=lease)
                log.info("leader election: released Lease %s/%s", self.namespace, self.name)
        except ApiError as exc:
            log.warning("leader election: could not release the Lease: %s", exc)


def _exit_process(why: str) -> None:
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(LOST_EXIT_CODE)
