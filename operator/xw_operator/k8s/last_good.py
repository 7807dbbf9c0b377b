"""The last devices.yaml the operator accepted, persisted in a ConfigMap it owns.

Why: an operator (re)started while its devices.yaml is invalid must not depend on a human. It starts
with the version it last accepted, reports the invalid one, and keeps reconciling. Memory is not enough
(the pod restarts, a new leader takes over), so every accepted version is written to a ConfigMap in the
operator's namespace -- only when its digest differs from what is stored, so a restart writes nothing.

Failures here never stop the operator: persisting is best effort (logged), loading returns None.
"""

from __future__ import annotations

import logging
from typing import Any

from xw_operator.k8s.client import ApiError, KubeApi, object_path
from xw_operator.k8s.config_source import RECIPE_KEYS, Snapshot

log = logging.getLogger(__name__)

KEY = "devices.yaml"
DIGEST_ANNOTATION = "xw.dev/devices-digest"
SOURCE_ANNOTATION = "xw.dev/devices-source"


class LastGoodStore:
    """GET / create / merge-patch of one named ConfigMap (RBAC: get+patch on that name; create only when
    the chart did not pre-create it)."""

    def __init__(self, api: KubeApi, namespace: str, name: str) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.description = f"ConfigMap {namespace}/{name}"
        self._stored_digest: str | None = None

    @property
    def path(self) -> str:
        return object_path("v1", "configmaps", self.namespace, self.name)

    @property
    def involved_object(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": self.namespace, "name": self.name}}

    def load(self) -> Snapshot | None:
        """The persisted version (devices.yaml and the recipe files stored with it), or None when there is
        none, it cannot be read, or its content does not match its recorded digest."""
        try:
            cm = self.api.get(self.path)
        except ApiError as exc:
            log.warning("cannot read the last good devices config from %s: %s", self.description, exc)
            return None
        if cm is None:
            return None
        data = cm.get("data") or {}
        text = data.get(KEY)
        digest = ((cm.get("metadata") or {}).get("annotations") or {}).get(DIGEST_ANNOTATION)
        if not text or not digest:
            return None
        extras = tuple((k, str(data[k])) for k in RECIPE_KEYS if k in data)  # the order the sources use
        snapshot = Snapshot(str(text), f"last good devices config in {self.description}", extras)
        if snapshot.digest != digest:
            log.warning("the last good devices config in %s does not match its digest; ignored", self.description)
            return None
        self._stored_digest = str(digest)
        return snapshot

    def save(self, snapshot: Snapshot) -> None:
        """Persist an accepted version (devices.yaml plus its recipe files); no write when it is already
        the stored one."""
        digest, text, origin = snapshot.digest, snapshot.text, snapshot.origin
        if digest == self._stored_digest:
            return
        meta = {"annotations": {DIGEST_ANNOTATION: digest, SOURCE_ANNOTATION: origin[:250]}}
        try:
            cm = self.api.get(self.path)
            stored = ((cm or {}).get("metadata", {}).get("annotations") or {}).get(DIGEST_ANNOTATION)
            if cm is not None and stored == digest:
                self._stored_digest = digest
                return
            if cm is None:
                body = {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": self.name,
                        "namespace": self.namespace,
                        "labels": {"app.kubernetes.io/managed-by": "xw-operator"},
                        **meta,
                    },
                    "data": {KEY: text, **dict(snapshot.extras)},
                }
                self.api.create(object_path("v1", "configmaps", self.namespace), body)
            else:
                # Keys of recipe files no longer present are removed (null in a merge patch).
                stale = {k: None for k in (cm.get("data") or {}) if k != KEY and k not in dict(snapshot.extras)}
                patch = {"metadata": meta, "data": {KEY: text, **dict(snapshot.extras), **stale}}
                self.api.merge_patch(self.path, patch)
            self._stored_digest = digest
            log.info("devices config %s persisted as the last good version in %s", digest, self.description)
        except ApiError as exc:
            log.warning("could not persist the last good devices config in %s: %s", self.description, exc)
