"""Multi-node engine contracts: how an engine's leader and workers start inside one LeaderWorkerSet group.

The contracts are data (``data/multinode.yaml``), shaped like the engine definitions of the
"engines as configuration" format so they can move into those definitions: per engine a ``multi_node``
block with an ``env`` for both roles, a ``leader`` and a ``worker`` part, and per-vendor overlays. This
module only loads that file and applies a contract to a :class:`~xw_operator.plan.Plan`; a new engine (or
a new vendor's variables) needs a YAML block, not code. Pure: no I/O beyond reading the packaged file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from xw_operator.engines import flag_name
from xw_operator.errors import ConfigError, ResolveError
from xw_operator.plan import Plan
from xw_operator.validation import describe

CONTRACTS_RESOURCE = "data/multinode.yaml"
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


class FieldRef(BaseModel):
    """An environment value from the downward API (e.g. ``status.podIP``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    field_ref: str = Field(alias="fieldRef", min_length=1)


EnvValue = str | FieldRef


class RoleContract(BaseModel):
    """One role's part of a contract (see the header of data/multinode.yaml)."""

    model_config = ConfigDict(extra="forbid")
    wrap: list[str] | None = None
    command: list[str] | None = None
    args: list[list[str]] = Field(default_factory=list)
    env: dict[str, EnvValue] = Field(default_factory=dict)
    serves: bool | None = None

    def over(self, base: RoleContract) -> RoleContract:
        """This overlay applied on ``base``: set keys replace, env merges."""
        return RoleContract(
            wrap=self.wrap if self.wrap is not None else base.wrap,
            command=self.command if self.command is not None else base.command,
            args=self.args or base.args,
            env={**base.env, **self.env},
            serves=self.serves if self.serves is not None else base.serves,
        )


class VendorOverlay(BaseModel):
    model_config = ConfigDict(extra="forbid")
    env: dict[str, EnvValue] = Field(default_factory=dict)
    leader: RoleContract = Field(default_factory=RoleContract)
    worker: RoleContract = Field(default_factory=RoleContract)


class MultiNodeContract(BaseModel):
    model_config = ConfigDict(extra="forbid")
    env: dict[str, EnvValue] = Field(default_factory=dict)
    leader: RoleContract = Field(default_factory=RoleContract)
    worker: RoleContract = Field(default_factory=RoleContract)
    vendors: dict[str, VendorOverlay] = Field(default_factory=dict)

    def for_vendor(self, vendor: str) -> MultiNodeContract:
        overlay = self.vendors.get(vendor.lower())
        if overlay is None:
            return self
        return MultiNodeContract(
            env={**self.env, **overlay.env},
            leader=overlay.leader.over(self.leader),
            worker=overlay.worker.over(self.worker),
        )


class EngineEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    multi_node: MultiNodeContract


class ContractsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str
    engines: dict[str, EngineEntry]


def parse_contracts(text: str, source: str) -> dict[str, MultiNodeContract]:
    try:
        data = ContractsFile.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        detail = describe(exc) if isinstance(exc, ValidationError) else str(exc)
        raise ConfigError(f"{source}: {detail}") from None
    return {name: entry.multi_node for name, entry in data.engines.items()}


@cache
def shipped_contracts() -> dict[str, MultiNodeContract]:
    text = resources.files("xw_operator").joinpath(CONTRACTS_RESOURCE).read_text(encoding="utf-8")
    return parse_contracts(text, f"xw_operator/{CONTRACTS_RESOURCE}")


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
    """``{name}`` of a known placeholder replaced; any other brace (JSON, shell) left as it is."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def contract_for(plan: Plan, contracts: dict[str, MultiNodeContract] | None = None) -> MultiNodeContract:
    table = shipped_contracts() if contracts is None else contracts
    contract = table.get(plan.engine)
    if contract is None:
        raise ResolveError(
            f"spec.devices.nodes is {plan.nodes} but engine {plan.engine} has no multi-node contract "
            f"(engines with one: {', '.join(sorted(table)) or 'none'}); use one of them or nodes: 1"
        )
    return contract.for_vendor(plan.vendor)


def role_spec(plan: Plan, role: str, contracts: dict[str, MultiNodeContract] | None = None) -> RoleSpec:
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
