"""ModelInstance status from what the cluster shows. Pure: no I/O, the clock is a parameter.

Status is the GitOps contract (Argo CD health, ``kubectl wait --for=condition=Ready``), so it is a
function of observable state only -- the instance, the resolve outcome, the live Deployment and its
Pods -- and is recomputed from scratch whenever any of them changes (level-based, never incremental).
Messages carry no timestamps or ages, so recomputing an unchanged world gives an identical status and
the operator writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Phases (the CRD documents them on status.phase).
PENDING = "Pending"
PROGRESSING = "Progressing"
READY = "Ready"
DEGRADED = "Degraded"
FAILED = "Failed"

# Condition types.
COND_READY = "Ready"
COND_PROGRESSING = "Progressing"
COND_DEGRADED = "Degraded"
# kstatus' "abnormal-true" pair (sigs.k8s.io/cli-utils/pkg/kstatus), which Flux's health checks and
# `kubectl wait`-less GitOps tools read: Reconciling=True -> InProgress, Stalled=True -> Failed. Without
# Stalled, kstatus can only say InProgress for a Failed instance (Ready=False) and Flux would wait forever.
COND_RECONCILING = "Reconciling"
COND_STALLED = "Stalled"
CONDITION_TYPES = (COND_READY, COND_PROGRESSING, COND_DEGRADED, COND_RECONCILING, COND_STALLED)

# Container waiting reasons that will not fix themselves without a change (image, spec or node).
BROKEN_WAITING_REASONS = (
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
)

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class Failure:
    """The spec cannot be realised (resolve/validation error): phase Failed until the spec or config changes."""

    reason: str
    message: str


@dataclass(frozen=True)
class Problem:
    """Something wrong with the running children that a human should see."""

    reason: str
    message: str


@dataclass(frozen=True)
class Observed:
    """Everything status depends on, gathered by the caller."""

    generation: int
    desired_replicas: int
    endpoint: str | None
    image: str | None
    failure: Failure | None = None
    deployment: Obj | None = None
    pods: Sequence[Obj] = field(default_factory=tuple)
    # The live children carry the spec hash of the current rendering (the operator applied this generation).
    children_current: bool = False
    previous: Obj = field(default_factory=dict)
    # Multi-node (LeaderWorkerSet) instances: ``deployment`` holds the LeaderWorkerSet and these replace
    # the Deployment-specific rollout check and problem list (see k8s/status_groups.py).
    complete: bool | None = None
    problems: Sequence[Problem] | None = None
    ready_replicas: int | None = None
    # Problems found outside the Deployment and its Pods (node_health: devices withdrawn, node NotReady).
    extra_problems: Sequence[Problem] = field(default_factory=tuple)


def _get(obj: Obj | None, *path: str, default: Any = None) -> Any:
    cur: Any = obj
    for key in path:
        if not isinstance(cur, Mapping) or key not in cur:
            return default
        cur = cur[key]
    return cur


def _condition(obj: Obj | None, ctype: str) -> Obj | None:
    for cond in _get(obj, "status", "conditions", default=[]) or []:
        if cond.get("type") == ctype:
            return dict(cond)
    return None


def pod_problems(pods: Sequence[Obj]) -> list[Problem]:
    """Unschedulable pods and containers stuck waiting for a reason that needs a fix, by pod name."""
    problems: list[Problem] = []
    for pod in sorted(pods, key=lambda p: str(_get(p, "metadata", "name", default=""))):
        if _get(pod, "metadata", "deletionTimestamp") or _get(pod, "status", "phase") in ("Succeeded", "Failed"):
            continue
        name = _get(pod, "metadata", "name", default="?")
        scheduled = _condition(pod, "PodScheduled")
        if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            problems.append(Problem("Unschedulable", f"pod {name} cannot be scheduled: {scheduled.get('message', '')}"))
            continue
        statuses = [
            *(_get(pod, "status", "initContainerStatuses", default=[]) or []),
            *(_get(pod, "status", "containerStatuses", default=[]) or []),
        ]
        for cs in statuses:
            waiting = _get(cs, "state", "waiting") or {}
            reason = waiting.get("reason")
            if reason in BROKEN_WAITING_REASONS:
                detail = waiting.get("message") or ""
                image = cs.get("image", "")
                text = f"pod {name} container {cs.get('name', '?')}: {reason}"
                text += f" (image {image})" if image and reason != "CrashLoopBackOff" else ""
                text += f": {detail}" if detail else ""
                problems.append(Problem(reason, text))
                break
    return problems


def deployment_problems(deployment: Obj) -> list[Problem]:
    """Deployment-level failures: rollout deadline passed, ReplicaSet cannot create pods (quota, admission)."""
    problems = []
    progressing = _condition(deployment, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        problems.append(Problem("ProgressDeadlineExceeded", str(progressing.get("message", ""))))
    failure = _condition(deployment, "ReplicaFailure")
    if failure and failure.get("status") == "True":
        problems.append(Problem(str(failure.get("reason") or "ReplicaFailure"), str(failure.get("message", ""))))
    return problems


def rollout_complete(deployment: Obj, desired: int) -> bool:
    """The Deployment controller has seen the current spec and every replica is updated and ready."""
    generation = _get(deployment, "metadata", "generation", default=0)
    observed = _get(deployment, "status", "observedGeneration", default=0)
    status = _get(deployment, "status", default={}) or {}
    return bool(
        observed >= generation
        and status.get("updatedReplicas", 0) == desired
        and status.get("replicas", 0) == desired
        and status.get("readyReplicas", 0) == desired
    )


def _summarise(problems: Sequence[Problem]) -> Problem:
    first = problems[0]
    more = len(problems) - 1
    return Problem(first.reason, first.message + (f" (and {more} more problem(s))" if more else ""))


def _cond(ctype: str, status: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": ctype, "status": "True" if status else "False", "reason": reason, "message": message}


def compute_status(obs: Observed, *, now: str) -> dict[str, Any]:
    """The full status document (camelCase, as stored). ``now`` stamps only conditions that changed."""
    previous_generation = _get(obs.previous, "observedGeneration")
    desired = obs.desired_replicas
    dep = obs.deployment
    ready_replicas = int(_get(dep, "status", "readyReplicas", default=0) or 0) if dep else 0
    if obs.ready_replicas is not None:
        ready_replicas = obs.ready_replicas

    if obs.failure is not None:
        f = obs.failure
        phase = FAILED
        observed_generation: int | None = obs.generation
        conds = [
            _cond(COND_READY, False, f.reason, f.message),
            _cond(COND_PROGRESSING, False, f.reason, "not rolling out: the spec cannot be realised; fix it"),
            _cond(COND_DEGRADED, True, f.reason, f.message),
        ]
    elif dep is None or not obs.children_current:
        # Nothing applied for this generation yet (first create, or an edit not yet applied).
        phase = PENDING if dep is None else PROGRESSING
        observed_generation = previous_generation if dep is not None else None
        what = "creating the Deployment and Service" if dep is None else f"applying generation {obs.generation}"
        conds = [
            _cond(COND_READY, False, "Reconciling", what),
            _cond(COND_PROGRESSING, True, "Reconciling", what),
            _cond(COND_DEGRADED, False, "AsExpected", "no problems observed"),
        ]
    else:
        observed_generation = obs.generation
        problems = list(obs.problems) if obs.problems is not None else deployment_problems(dep) + pod_problems(obs.pods)
        problems = problems[:1] + list(obs.extra_problems) + problems[1:] if problems else list(obs.extra_problems)
        complete = obs.complete if obs.complete is not None else rollout_complete(dep, desired)
        problem = _summarise(problems) if problems else None
        degraded = (
            _cond(COND_DEGRADED, True, problem.reason, problem.message)
            if problem
            else _cond(COND_DEGRADED, False, "AsExpected", "no problems observed")
        )
        if complete and not obs.extra_problems:
            phase = READY
            if desired == 0:
                ready = _cond(COND_READY, True, "ScaledToZero", "scaled to zero replicas (spec.replicas is 0)")
            else:
                where = f"; serving at {obs.endpoint}" if obs.endpoint else ""
                ready = _cond(COND_READY, True, "AllReplicasReady", f"{ready_replicas}/{desired} replicas ready{where}")
            progressing = _cond(COND_PROGRESSING, False, "RolloutComplete", f"generation {obs.generation} rolled out")
        else:
            phase = DEGRADED if problem else PROGRESSING
            progress_text = f"{ready_replicas}/{desired} replicas ready"
            if problem:
                ready = _cond(COND_READY, False, problem.reason, f"{progress_text}; {problem.message}")
            else:
                ready = _cond(COND_READY, False, "RollingOut", f"{progress_text}; waiting for the rollout")
            stuck = problem is not None and problem.reason == "ProgressDeadlineExceeded"
            progressing = _cond(
                COND_PROGRESSING,
                not stuck,
                "ProgressDeadlineExceeded" if stuck else "RollingOut",
                problem.message if stuck and problem else f"rolling out generation {obs.generation}: {progress_text}",
            )
        conds = [ready, progressing, degraded]
    conds += kstatus_conditions(phase, conds)

    status: dict[str, Any] = {
        "phase": phase,
        "readyReplicas": ready_replicas,
        "replicas": int(_get(dep, "status", "replicas", default=0) or 0) if dep else 0,
        "conditions": stamp_conditions(conds, _get(obs.previous, "conditions", default=[]) or [], now, obs.generation),
    }
    if observed_generation is not None:
        status["observedGeneration"] = observed_generation
    if obs.failure is None and obs.endpoint:
        status["endpoint"] = obs.endpoint
    if selector := pod_selector(dep):
        status["selector"] = selector
    if obs.image:
        status["image"] = obs.image
    # The one line a user reads first (kubectl get -o wide, Argo CD): the Ready condition's explanation.
    status["message"] = conds[0]["message"]
    return status


def kstatus_conditions(phase: str, conds: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Reconciling (Pending, Progressing) and Stalled (Degraded, Failed), with the Ready condition's words."""
    ready = conds[0]
    reason, message = str(ready["reason"]), str(ready["message"])
    reconciling, stalled = phase in (PENDING, PROGRESSING), phase in (DEGRADED, FAILED)
    return [
        _cond(COND_RECONCILING, reconciling, reason if reconciling else "Reconciled", message if reconciling else ""),
        _cond(COND_STALLED, stalled, reason if stalled else "AsExpected", message if stalled else ""),
    ]


def pod_selector(deployment: Obj | None) -> str | None:
    """The Deployment's pod selector as a label-selector string (``k=v,...``), what /scale reports.

    Read from the live Deployment, not re-derived: it is immutable there, so it is exactly the set of
    pods an autoscaler must look at.
    """
    labels = _get(deployment, "spec", "selector", "matchLabels", default=None) or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or None


def stamp_conditions(
    conditions: Sequence[dict[str, Any]], previous: Sequence[Obj], now: str, generation: int
) -> list[dict[str, Any]]:
    """Keep ``lastTransitionTime`` when a condition's status did not change (metav1.Condition semantics)."""
    before = {c.get("type"): c for c in previous}
    out = []
    for cond in conditions:
        old = before.get(cond["type"])
        kept = old.get("lastTransitionTime") if old is not None and old.get("status") == cond["status"] else None
        stamped = dict(cond)
        stamped["lastTransitionTime"] = kept or now
        stamped["observedGeneration"] = generation
        out.append(stamped)
    return out


def condition_of(status: Obj, ctype: str) -> Obj | None:
    for cond in status.get("conditions", []) or []:
        if cond.get("type") == ctype:
            return dict(cond)
    return None


def status_differs(current: Obj, desired: Obj) -> bool:
    """Whether writing ``desired`` would change anything (only the keys the operator owns are compared)."""
    return any(current.get(key) != value for key, value in desired.items()) or any(
        key in current and key not in desired for key in OPTIONAL_KEYS
    )


# Status keys that may be absent; a merge patch must null them explicitly to remove them.
OPTIONAL_KEYS = ("observedGeneration", "endpoint", "image", "message", "selector")


def status_patch(current: Obj, desired: Obj) -> dict[str, Any]:
    """Merge patch turning ``current`` into ``desired`` (absent optional keys are deleted with null)."""
    patch: dict[str, Any] = dict(desired)
    for key in OPTIONAL_KEYS:
        if key in current and key not in desired:
            patch[key] = None
    return patch
