"""Multi-node engine contracts applied: how an engine's leader and workers start inside one LeaderWorkerSet group.

A contract is part of an engine definition (the ``multi_node`` block of engines.yaml or of devices.yaml's
``engines:``, modelled in :mod:`xw_operator.engines`): ``env`` for both roles, a ``leader`` and a ``worker``
part, per-vendor overlays. :func:`~xw_operator.plan.resolve` puts the chosen definition's contract on the
Plan (and refuses ``nodes`` > 1 without one); this module applies it for the Plan's vendor. A new engine, or
an administrator's change to a shipped contract, needs a YAML block, not code. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from xw_operator.engines import (
    CONTRACT_PLACEHOLDER,
    EnvValue,
    MultiNodeContract,
    flag_name,
    multi_node_engines,
    no_multi_node_contract,
    parse_engines,
)
from xw_operator.errors import ResolveError
from xw_operator.plan import Plan


def parse_contracts(text: str, source: str) -> dict[str, MultiNodeContract]:
    """The multi-node contracts of an engines document (engines.yaml's format), by engine name: for tools
    and tests that hold contracts apart from a Plan."""
    return {
        defn.engine or key: defn.multi_node
        for key, defn in parse_engines(text, source).items()
        if defn.multi_node is not None
    }


@dataclass(frozen=True)
class RoleSpec:
    """What one role's engine container runs: the result of applying a contract to a Plan."""

    command: tuple[str, ...] | None
    args: tuple[str, ...]
    env: tuple[tuple[str, EnvValue], ...]  # contract variables, in file order
    serves: bool


def placeholders(plan: Plan) -> dict[str, str]:
    tensor, pipeline = plan.parallel_sizes
    return {
        "nodes": str(plan.nodes),
        "device_count": str(plan.device_count),
        "world_size": str(plan.device_count * plan.nodes),
        "tensor_parallel_size": str(tensor),
        "pipeline_parallel_size": str(pipeline),
        "port": str(plan.container_port),
        "served_name": plan.served_model_name,
        "model_path": plan.model_path,
    }


def expand(text: str, values: dict[str, str]) -> str:
    """``{name}`` of a placeholder replaced (the definition's validation allowed only known ones); any other
    brace (JSON, shell) left as it is."""
    return CONTRACT_PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def contract_for(plan: Plan, contracts: Mapping[str, MultiNodeContract] | None = None) -> MultiNodeContract:
    """The Plan's contract (or, given ``contracts``, the one they hold for its engine) for its vendor."""
    if contracts is None:
        contract, known = plan.multi_node, multi_node_engines()
    else:
        contract, known = contracts.get(plan.engine), sorted(contracts)
    if contract is None:
        definition = plan.engine_definition if contracts is None else ""
        raise no_multi_node_contract(plan.engine, definition, plan.nodes, known)
    return contract.for_vendor(plan.vendor)


def role_spec(plan: Plan, role: str, contracts: Mapping[str, MultiNodeContract] | None = None) -> RoleSpec:
    """The leader's or a worker's command, arguments and contract variables for ``plan``."""
    contract = contract_for(plan, contracts)
    part = contract.leader if role == "leader" else contract.worker
    values = placeholders(plan)
    env = tuple(
        (name, expand(value, values) if isinstance(value, str) else value)
        for name, value in {**contract.env, **part.env}.items()
    )
    serves = role == "leader" or bool(part.serves)
    if part.command is not None:
        return RoleSpec(tuple(expand(c, values) for c in part.command), (), env, serves)
    present = {f for a in plan.args if (f := flag_name(a))}
    extra = [expand(a, values) for group in part.args if flag_name(group[0]) not in present for a in group]
    args = (*plan.args, *extra)
    if part.wrap is not None:
        if not plan.command:
            raise ResolveError(
                f"engine {plan.engine}: the multi-node {role} wraps the engine's command, but the engine "
                "starts the image's entrypoint; give the contract a full command instead"
            )
        wrapped = (*(expand(w, values) for w in part.wrap), *plan.command)
        return RoleSpec(wrapped, args, env, serves)
    return RoleSpec(plan.command, args, env, serves)


def refuse_multi_node_on_docker(nodes: int, where: str) -> None:
    """Docker mode runs on one host: a replica spread over several nodes has no meaning there."""
    if nodes > 1:
        raise MultiNodeNotSupported(
            f"{where}: spec.devices.nodes is {nodes}, but Docker mode runs on one host; use nodes: 1 "
            "(with at most the host's accelerators in count) or deploy it on Kubernetes"
        )


class MultiNodeNotSupported(ResolveError):
    """A multi-node instance where only one host exists (Docker mode)."""

    reason = "MultiNodeNotSupported"
