"""Counting writes in the local cluster's audit log (Metadata level, write verbs only; hack/cluster.sh).

Tests take an offset, let time pass, and read what was written after it -- the no-write rule measured
where it matters, at the API server, whoever the client was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


class AuditWindow:
    def __init__(self, audit_log: str) -> None:
        self.path = Path(audit_log)
        self.offset = self.path.stat().st_size

    def entries(self) -> list[dict[str, Any]]:
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read().decode("utf-8", errors="replace")
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    def writes(
        self, namespace: str | None = None, *, resources: set[str] | None = None, user: str | None = None
    ) -> list[str]:
        """``verb resource/name (user, user agent, code)`` of every write after the offset."""
        out = []
        for e in self.entries():
            ref = e.get("objectRef") or {}
            if e.get("verb") not in WRITE_VERBS or e.get("stage") != "ResponseComplete":
                continue
            if namespace is not None and ref.get("namespace") != namespace:
                continue
            if resources is not None and ref.get("resource") not in resources:
                continue
            who = (e.get("user") or {}).get("username", "?")
            if user is not None and who != user:
                continue
            code = (e.get("responseStatus") or {}).get("code")
            out.append(
                f"{e['verb']} {ref.get('resource')}{'/' + ref['subresource'] if ref.get('subresource') else ''}"
                f"/{ref.get('name')} ({who}, {e.get('userAgent', '?')[:40]}, {code})"
            )
        return out
