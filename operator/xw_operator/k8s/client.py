"""A small JSON client for the few API calls the operator makes.

The generated ``kubernetes`` client turns every object into model classes; the operator works on plain
dicts (kopf bodies, rendered manifests, status patches), so this wraps ``ApiClient`` transport only and
speaks JSON. Every write goes through :meth:`KubeApi.write`, which counts it: the no-write rule is
measured, not assumed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

log = logging.getLogger(__name__)

FIELD_MANAGER = "xw-operator"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_CONTENT_TYPE = "application/merge-patch+json"

Obj = dict[str, Any]


class ApiError(Exception):
    """A non-2xx answer from the API server, with its status code and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


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
}


def path_of(obj: Obj) -> str:
    """REST path of a manifest (only the kinds the operator writes)."""
    meta = obj["metadata"]
    return object_path(obj["apiVersion"], PLURALS[obj["kind"]], meta.get("namespace"), meta["name"])


class KubeApi:
    """Thread-safe enough for kopf's executor threads: urllib3's pool is, and nothing else is shared."""

    def __init__(self, api_client: Any | None = None, *, timeout: float = 30.0) -> None:
        self.api_client = api_client if api_client is not None else load_api_client()
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
        _, url, headers, _, _ = self.api_client.param_serialize(
            method=method, resource_path=path, header_params=headers, auth_settings=["BearerToken"]
        )
        if query:
            url += "?" + urlencode(query)
        response = self.api_client.call_api(
            method, url, header_params=headers, body=body, _request_timeout=self.timeout
        )
        raw = response.read()
        text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw or "")
        data: Any = json.loads(text) if text else {}
        if not 200 <= response.status < 300:
            message = data.get("message", text) if isinstance(data, dict) else text
            raise ApiError(response.status, message)
        return data if isinstance(data, dict) else {}

    def get(self, path: str) -> Obj | None:
        try:
            return self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, path: str, *, label_selector: str | None = None) -> list[Obj]:
        query = {"labelSelector": label_selector} if label_selector else None
        items: list[Obj] = self.request("GET", path, query=query).get("items", [])
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

    def merge_patch(self, path: str, patch: Obj) -> Obj:
        return self.write("PATCH", path, patch, content_type=MERGE_CONTENT_TYPE, fieldManager=FIELD_MANAGER)

    def create(self, path: str, obj: Obj) -> Obj:
        return self.write("POST", path, obj, content_type="application/json", fieldManager=FIELD_MANAGER)
