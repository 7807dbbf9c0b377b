"""Error classes: what heals by itself (backoff) and what needs a change (Failed, no retry)."""

from __future__ import annotations

import socket

import aiohttp
import pytest
import requests
import urllib3

from xw_operator.k8s.client import ApiError
from xw_operator.k8s.failures import BACKOFF_CAP, backoff_delay, is_permanent_api_error, is_transient, rejection_message


@pytest.mark.parametrize("status", [400, 403, 404, 410, 413, 415, 422])
def test_4xx_other_than_408_409_429_is_permanent(status: int) -> None:
    exc = ApiError(status, "nope", "Invalid")
    assert is_permanent_api_error(exc) and not is_transient(exc)


@pytest.mark.parametrize("status", [0, 408, 409, 429, 500, 502, 503, 504])
def test_conflicts_rate_limits_5xx_and_no_answer_are_transient(status: int) -> None:
    exc = ApiError(status, "later")
    assert is_transient(exc) and not is_permanent_api_error(exc)


@pytest.mark.parametrize(
    "exc",
    [
        urllib3.exceptions.MaxRetryError(None, "/x", reason=None),  # type: ignore[arg-type]
        urllib3.exceptions.ReadTimeoutError(None, "/x", "read timed out"),  # type: ignore[arg-type]
        urllib3.exceptions.ProtocolError("connection aborted"),
        requests.exceptions.ConnectionError("refused"),
        requests.exceptions.Timeout("slow"),
        aiohttp.ClientConnectionError("reset"),
        aiohttp.ServerTimeoutError("slow"),
        ConnectionRefusedError(111, "refused"),
        TimeoutError("slow"),
        socket.gaierror("no such host"),
        OSError(104, "reset by peer"),
    ],
)
def test_connection_errors_of_every_library_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


def test_bugs_are_not_transient() -> None:
    assert not is_transient(KeyError("spec"))
    assert not is_transient(RecursionError())


def test_backoff_doubles_and_is_capped() -> None:
    delays = [backoff_delay(n) for n in range(12)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(delays) == BACKOFF_CAP and delays[-1] == BACKOFF_CAP
    assert backoff_delay(10_000) == BACKOFF_CAP


def test_rejection_message_names_object_reason_and_server_message() -> None:
    msg = rejection_message("Deployment", "m", ApiError(422, 'Deployment.apps "m" is invalid: spec.x', "Invalid"))
    assert msg == 'the API server refused Deployment m (HTTP 422 Invalid): Deployment.apps "m" is invalid: spec.x'
