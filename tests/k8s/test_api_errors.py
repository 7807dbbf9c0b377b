"""Error classes against the real API server: inputs the CRD accepts but the API server refuses in the
Deployment (422) end Failed with the server's reason and message, an Event, and no further write until
the spec changes. (If a stricter CRD refuses one of them first, that is fine too: asserted as such.)"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from audit_support import AuditWindow
from operator_fixture import OperatorProcess
from test_operator import condition, events_for, get, wait_for, wait_ready
from test_operator import instance as _instance

pytestmark = pytest.mark.usefixtures("operator_log_on_failure")


def instance(name: str, **kwargs: Any) -> dict[str, Any]:
    """test_operator's builder, with the name first (as these tests were written)."""
    return _instance(name=name, **kwargs)


# name -> (spec fields the CRD accepts but the API server refuses, a fragment of the server's message).
# The image: a Deployment with it is accepted and only its Pods are refused (by the ReplicaSet controller,
# forever), so the operator refuses it before writing: the image policy (ImageNotAllowed, when the shipped
# policy is in force) or, with a policy that allows any image, the operator's own check (InvalidSpec).
IMAGE_REASONS = {"ImageNotAllowed": "not a valid image reference", "InvalidSpec": "leading or trailing whitespace"}
REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "tol-exists-value": (
        {"tolerations": [{"key": "k", "operator": "Exists", "value": "v", "effect": "NoSchedule"}]},
        "tolerations[0].operator",
    ),
    "tol-seconds-noschedule": (
        {
            "tolerations": [
                {"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule", "tolerationSeconds": 30}
            ]
        },
        "tolerations[0].effect",
    ),
    "image-whitespace": (
        {"engine": {"name": "vllm", "image": " example.org/engine:1 "}},
        "image",
    ),
    "bad-node-selector": ({"nodeSelector": {"bad key!": "x"}}, "nodeSelector"),
    "cpu-request-above-limit": ({"resources": {"requests": {"cpu": "8"}, "limits": {"cpu": "4"}}}, "cpu"),
    "bad-secret-name": ({"apiKeySecretRef": {"name": "Not_A_Valid.Name"}}, "secretKeyRef.name"),
}


def _doc(name: str, extra: dict[str, Any]) -> dict[str, Any]:
    doc = instance(name, chip="nvidia-t4", count=1)
    doc["spec"].update(extra)
    if "engine" in extra:
        doc["spec"]["engine"] = {**extra["engine"], "args": ["--max-model-len=8192"]}
    return doc


def test_each_422_class_ends_failed_with_the_servers_reason_and_no_retry(
    cluster: Any, namespace: str, xw_operator: OperatorProcess
) -> None:
    accepted = []
    for name, (extra, _) in REFUSED.items():
        proc = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(_doc(name, extra)), check=False)
        if proc.returncode != 0:  # a stricter CRD refuses it up front: no operator involved, equally fine
            assert "Invalid value" in proc.stderr or "invalid" in proc.stderr.lower(), proc.stderr
            continue
        accepted.append(name)

    def failed(name: str) -> dict[str, Any] | None:
        mi = get(cluster, namespace, "mi", name)
        return mi if ((mi or {}).get("status") or {}).get("phase") == "Failed" else None

    for name in accepted:
        mi = wait_for(f"{name} Failed", lambda n=name: failed(n))  # type: ignore[misc]
        ready = condition(mi, "Ready")
        reason = ready["reason"]
        if name == "image-whitespace":
            assert reason in IMAGE_REASONS and IMAGE_REASONS[reason] in ready["message"], ready
        else:
            assert reason == "ApiRejected", ready
            assert "HTTP 422 Invalid" in ready["message"] and "is invalid" in ready["message"], ready["message"]
            assert REFUSED[name][1] in ready["message"], ready["message"]
        assert mi["status"]["observedGeneration"] == mi["metadata"]["generation"]
        assert get(cluster, namespace, "deployment", name) is None
        warnings = [e for e in events_for(cluster, namespace, name) if e["type"] == "Warning"]
        assert [e["reason"] for e in warnings] == [reason], warnings
    print(f"422 classes reaching the operator: {accepted}")

    if cluster.audit_log and accepted:
        time.sleep(3)  # kopf records the permanent failure in its annotations once
        window = AuditWindow(cluster.audit_log)
        time.sleep(10)  # the old operator retried every 5 s: two retries would show here
        assert window.writes(namespace) == [], "writes while the specs stayed unchanged"

    # The spec changes: tried again at once, and this time it works.
    fixes = {"tolerations": [], "nodeSelector": None, "resources": None, "apiKeySecretRef": None}
    for name in accepted:
        patch: dict[str, Any] = {k: v for k, v in fixes.items() if k in REFUSED[name][0]}
        if "engine" in REFUSED[name][0]:
            patch["engine"] = {"image": None}  # back to the image devices.yaml configures
        cluster.kubectl("patch", "mi", name, "-n", namespace, "--type=merge", "-p", json.dumps({"spec": patch}))
    for name in accepted:
        wait_ready(cluster, namespace, name)
