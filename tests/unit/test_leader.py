"""Leader election rules on an in-memory Lease store with the API server's optimistic concurrency
(the real thing, two processes and a SIGKILL, is tests/k8s/test_faults.py)."""

from __future__ import annotations

import copy
import threading
from typing import Any

from xw_operator.k8s.client import ApiError
from xw_operator.k8s.leader import LeaderElector


class LeaseStore:
    """GET / POST / PUT of one Lease; a PUT with a stale resourceVersion is a 409, like the API server."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0

    def get(self, path: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.lease)

    def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> dict[str, Any]:
        if method == "POST":
            if self.lease is not None:
                raise ApiError(409, "already exists", "AlreadyExists")
        elif method == "PUT":
            assert self.lease is not None
            if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
                raise ApiError(409, "the object has been modified", "Conflict")
        self.rv += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(self.lease)


def elector(store: LeaseStore, who: str, lost: list[str] | None = None, **kw: Any) -> LeaderElector:
    return LeaderElector(
        store,  # type: ignore[arg-type]
        "ns",
        "lease",
        who,
        retry_seconds=0.01,
        on_lost=(lost.append if lost is not None else None),
        **kw,
    )


def test_first_process_creates_the_lease_and_leads() -> None:
    store = LeaseStore()
    a = elector(store, "a")
    assert a.acquire() and a.leader
    assert store.lease is not None and store.lease["spec"]["holderIdentity"] == "a"
    assert store.lease["spec"]["leaseTransitions"] == 0


def test_a_standby_waits_while_the_holder_renews_and_takes_over_once_it_stops() -> None:
    store = LeaseStore()
    assert elector(store, "a").acquire()
    b = elector(store, "b")
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    assert b.acquire(stop) is False  # 0.3 s of watching < the 10 s lease a wrote: b stays standby
    timer.cancel()
    assert b.holder == "a" and not b.leader
    # a's lease says 10 s; nothing renews it. A standby that has watched it unchanged that long takes
    # over; shorten it the way a's own spec would (leaseDurationSeconds is read from the Lease).
    assert store.lease is not None
    store.lease["spec"]["leaseDurationSeconds"] = 1
    assert b.acquire() and b.leader
    assert store.lease["spec"]["holderIdentity"] == "b" and store.lease["spec"]["leaseTransitions"] == 1


def test_a_released_lease_is_taken_at_once() -> None:
    store = LeaseStore()
    a = elector(store, "a")
    assert a.acquire()
    a.release()
    assert store.lease is not None and store.lease["spec"]["holderIdentity"] is None
    assert elector(store, "b").acquire()


def test_a_leader_that_finds_another_holder_gives_up() -> None:
    store = LeaseStore()
    lost: list[str] = []
    a = elector(store, "a", lost, renew_seconds=0.01)
    assert a.acquire()
    assert store.lease is not None
    store.lease["spec"]["holderIdentity"] = "intruder"
    a.start_renewing()
    assert a._thread is not None
    a._thread.join(timeout=5)
    assert lost and "intruder" in lost[0] and not a.leader


def test_a_leader_that_cannot_renew_past_the_deadline_gives_up() -> None:
    store = LeaseStore()
    lost: list[str] = []
    a = elector(store, "a", lost, renew_seconds=0.01, deadline_seconds=0.05)
    assert a.acquire()

    def down(path: str) -> None:
        raise ApiError(0, "API server unreachable")

    store.get = down  # type: ignore[assignment,method-assign]
    a.start_renewing()
    assert a._thread is not None
    a._thread.join(timeout=5)
    assert lost and "could not renew" in lost[0]
