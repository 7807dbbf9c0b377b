"""Which failures heal by themselves and which need a change: the operator's error classes.

- **Permanent**: the API server refused a write with a 4xx other than 409 (Conflict) and 429 (Too Many
  Requests) -- 422 Invalid, 400 BadRequest, 403 Forbidden, 404 on a namespace that is gone... Sending the
  same object again gives the same answer, so the instance goes to ``Failed`` with the server's message
  and nothing is retried until its spec (generation) or devices.yaml changes.
- **Transient**: 409, 429, 5xx, no answer at all (status 0: connection refused or reset, timeouts), and
  the raw connection errors of any HTTP library the process uses (urllib3 under the ``kubernetes``
  client, aiohttp under kopf, requests, plain ``OSError``/``TimeoutError``). Retried with exponential
  backoff up to a cap; never escapes a handler as an unhandled exception.

Pure: no I/O. The kopf handlers and the config-reload path both decide with :func:`is_transient`.
"""

from __future__ import annotations

import http.client
from typing import Any

from xw_operator.k8s.client import ApiError

BACKOFF_BASE = 1.0  # seconds before the first retry
BACKOFF_CAP = 60.0  # never wait longer than this between retries (an API server back after 90 s is seen soon)

# HTTP statuses that heal without a change to the object: optimistic-concurrency conflicts, rate limits.
TRANSIENT_4XX = frozenset({408, 409, 429})


def _library_connection_errors() -> tuple[type[BaseException], ...]:
    """Connection-level exception types of the HTTP libraries that may be installed (imported lazily:
    the operator does not depend on ``requests``)."""
    found: list[type[BaseException]] = [OSError, TimeoutError, http.client.HTTPException, ConnectionError]
    try:
        import urllib3.exceptions

        found.append(urllib3.exceptions.HTTPError)
    except ImportError:  # pragma: no cover - a dependency of kubernetes
        pass
    try:
        import aiohttp

        found.extend([aiohttp.ClientError, aiohttp.ServerTimeoutError])
    except ImportError:  # pragma: no cover - a dependency of kopf
        pass
    try:
        import requests

        found.append(requests.exceptions.RequestException)
    except ImportError:  # pragma: no cover
        pass
    return tuple(found)


CONNECTION_ERRORS = _library_connection_errors()


def is_permanent_api_error(exc: BaseException) -> bool:
    """A refusal that the same request will get again: 4xx other than 408/409/429."""
    return isinstance(exc, ApiError) and 400 <= exc.status < 500 and exc.status not in TRANSIENT_4XX


def is_transient(exc: BaseException) -> bool:
    """Worth retrying unchanged: 408/409/429, 5xx, no answer, or a connection error of any library."""
    if isinstance(exc, ApiError):
        return not is_permanent_api_error(exc)
    status = _status_of(exc)
    if status is not None:
        return status >= 500 or status in TRANSIENT_4XX or status == 0
    return isinstance(exc, CONNECTION_ERRORS)


def _status_of(exc: BaseException) -> int | None:
    """HTTP status of another library's API exception (kubernetes ``ApiException``, kopf's ``APIError``)."""
    for attr in ("status", "code"):
        value: Any = getattr(exc, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def backoff_delay(retry: int, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds before retry number ``retry`` (0 = first): base * 2**retry, capped."""
    if retry < 0:
        retry = 0
    return float(min(cap, base * (2 ** min(retry, 30))))


def rejection_message(kind: str, name: str, exc: ApiError) -> str:
    """One line for status and Event: which object, the server's reason and its own message."""
    reason = f" {exc.api_reason}" if exc.api_reason else ""
    return f"the API server refused {kind} {name} (HTTP {exc.status}{reason}): {exc.message}"
