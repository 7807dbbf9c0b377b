"""A small JSON client for the few API calls the operator makes.

The generated ``kubernetes`` client turns every object into model classes; the operator works on plain
dicts (kopf bodies, rendered manifests, status patches), so this wraps ``ApiClient`` transport only and
speaks JSON. Every write goes through :meth:`KubeApi.write`, which counts it: the no-write rule is
measured, not assumed.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

log = logging.getLogger(__name__)

FIELD_MANAGER = "xw-operator"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_CONTENT_TYPE = "application/merge-patch+json"

Obj = dict[str, Any]


class ApiError(Exception):
    """A non-2xx answer from the API server, with its status code, message and the Status ``reason``
    (``Invalid``, ``Forbidden``, ...). ``status == 0`` means no answer at all (connection refused, reset,
    timeout): see :mod:`xw_operator.k8s.failures` for which errors are transient."""

    def __init__(self, status: int, message: str, api_reason: str = "") -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.api_reason = api_reason


# Everything the transport can raise when the API server is unreachable or answers garbage: urllib3's
# errors (MaxRetryError, ProtocolError, ReadTimeoutError...), socket/OS errors, http.client errors and a
# body that is not JSON (a proxy's HTML page). They become ApiError(0, ...) so callers handle one type.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
    ValueError,
)


def load_api_client() -> Any:
    """In-cluster service account when running in a pod, else $KUBECONFIG / ~/.kube/config."""
    configuration = k8s_client.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return k8s_client.ApiClient(configuration)


def object_path(api_version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    """REST path of a collection or object: ``/api/v1/...`` for the core group, ``/apis/G/V/...`` else."""
    prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = prefix + (f"/namespaces/{quote(namespace)}" if namespace else "") + f"/{plural}"
    return path + (f"/{quote(name)}" if name else "")


PLURALS = {
    "Deployment": "deployments",
    "Service": "services",
    "Pod": "pods",
    "ConfigMap": "configmaps",
    "LeaderWorkerSet": "leaderworkersets",
    "Lease": "leases",
}


def process_identity() -> str:
    """Who this operator process is, in Lease holders, Event reporters and its User-Agent: the pod name
    when running in a pod (downward API), else host and pid -- unique per process either way."""
    from xw_operator.settings import settings

    return settings().pod_name or f"{socket.gethostname()}-{os.getpid()}"


def path_of(obj: Obj) -> str:
    """REST path of a manifest (only the kinds the operator writes)."""
    meta = obj["metadata"]
    return object_path(obj["apiVersion"], PLURALS[obj["kind"]], meta.get("namespace"), meta["name"])


class KubeApi:
    """Thread-safe enough for kopf's executor threads: urllib3's pool is, and nothing else is shared."""

    def __init__(self, api_client: Any | None = None, *, timeout: float = 30.0) -> None:
        self.api_client = api_client if api_client is not None else load_api_client()
        # A per-process User-Agent: the audit log then tells which replica wrote what.
        self.api_client.user_agent = f"xw-operator/{process_identity()}"
        self.timeout = timeout
        # Called with (method, path) before every write: the operator's metrics count writes here.
        self.on_write: Callable[[str, str], None] | None = None

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Obj:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            _, url, headers, _, _ = self.api_client.param_serialize(
                method=method, resource_path=path, header_params=headers, auth_settings=["BearerToken"]
            )
            if query:
                url += "?" + urlencode(query)
            response = self.api_client.call_api(
                method, url, header_params=headers, body=body, _request_timeout=self.timeout
            )
            raw = response.read()
            status = int(response.status)
        except TRANSPORT_ERRORS as exc:
            raise ApiError(0, f"API server unreachable ({method} {path}): {type(exc).__name__}: {exc}") from None
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw or "")
        try:
            data: Any = json.loads(text) if text else {}
        except ValueError:
            data = None
        if not 200 <= status < 300:
            message = str(data.get("message", text)) if isinstance(data, dict) else text[:500]
            reason = str(data.get("reason", "")) if isinstance(data, dict) else ""
            raise ApiError(status, message, reason)
        if data is None:
            raise ApiError(0, f"API server answered {method} {path} with a body that is not JSON: {text[:200]!r}")
        return data if isinstance(data, dict) else {}

    def get(self, path: str) -> Obj | None:
        try:
            return self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, path: str, *, label_selector: str | None = None, field_selector: str | None = None) -> list[Obj]:
        query = {"labelSelector": label_selector} if label_selector else {}
        if field_selector:
            query["fieldSelector"] = field_selector
        items: list[Obj] = self.request("GET", path, query=query or None).get("items", [])
        return items

    def write(self, method: str, path: str, body: Any, *, content_type: str | None = None, **query: str) -> Obj:
        log.debug("write %s %s", method, path)
        if self.on_write is not None:
            self.on_write(method, path)
        return self.request(method, path, query=query or None, body=body, content_type=content_type)

    def apply(self, obj: Obj) -> Obj:
        """Server-side apply as field manager ``xw-operator``; force: the operator owns these fields."""
        return self.write(
            "PATCH", path_of(obj), obj, content_type=APPLY_CONTENT_TYPE, fieldManager=FIELD_MANAGER, force="true"
        )

    def replace(self, obj: Obj) -> Obj:
        """PUT: the object becomes exactly ``obj`` (optimistic concurrency on its resourceVersion)."""
        return self.write("PUT", path_of(obj), obj, content_type="application/json", fieldManager=FIELD_MANAGER)

    def delete(self, path: str, *, uid: str | None = None) -> Obj:
        """DELETE, optionally only if the object still has this uid (never a namesake created since)."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}} if uid else None
        return self.write("DELETE", path, body, content_type="application/json" if body else None)

    def merge_patch(self, path: str, patch: Obj) -> Obj:
        return self.write("PATCH", path, patch, content_type=MERGE_CONTENT_TYPE, fieldManager=FIELD_MANAGER)

    def create(self, path: str, obj: Obj) -> Obj:
        return self.write("POST", path, obj, content_type="application/json", fieldManager=FIELD_MANAGER)
