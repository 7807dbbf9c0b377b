"""Engine definitions: how an inference engine is started, as configuration.

An *engine definition* says, for one engine name (``spec.engine.name``: ``vllm``, ``mindie``, ...):
whether the image's own entrypoint runs or an explicit command replaces it, the argument and environment
templates with placeholders (``{model_path}``, ``{served_name}``, ``{tensor_parallel_size}``, ...), how the
tuned parameters of a model recipe reach the engine (as variables, as flags, or only via placeholders),
which placeholders user arguments may override, the engine's health and readiness paths, and, in a
``multi_node`` block, what the leader and the workers of a LeaderWorkerSet group run (applied by
:mod:`xw_operator.multinode`; it lives here so an administrator overrides it like the rest, from
devices.yaml). The format is documented in ``docs/engines.md``.

Where definitions come from, first match wins (the same **config > code > error** rule as sandboxes):

1. ``engines:`` at the top level of devices.yaml (an administrator's own definitions);
2. the shipped definitions (``data/engines.yaml``: ``vllm`` with an explicit ``vllm serve``,
   ``vllm-xw`` for xw-cli's env-driven vLLM images, ``mindie``, ``omni-infer``, ``mlguider``);
3. code engines (logic a template cannot express): installed packages advertise them in the entry-point
   group ``xw_operator.engines`` (see :func:`load_code_engines`), or a program embedding xw registers
   one with :func:`register_engine`;
4. otherwise a :class:`~xw_operator.errors.ResolveError` naming the engine and the known ones.

Several definitions may serve one engine name: those with ``images`` patterns are chosen when the
resolved image matches one (an image's launch contract belongs to the image: xw-cli's vLLM images read
``MODEL_PATH``/``TENSOR_PARALLEL`` from the environment, upstream vLLM images need ``vllm serve``); the
one without patterns is the fallback.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from xw_operator.errors import ConfigError, ResolveError
from xw_operator.inputs import load_yaml
from xw_operator.plugins import load_plugins
from xw_operator.validation import describe

MODEL_MOUNT_PATH = "/mnt/model"  # where hostPath/pvc weights appear inside the container (seed path)
CONTAINER_PORT = 8000
DEFAULT_HEALTH_PATH = "/health"
DEFAULT_READY_PATH = "/v1/models"

# Placeholders every definition may use; tuned parameters of a recipe add their own keys.
BUILTIN_PLACEHOLDERS = (
    "model_path",  # what the engine loads: the mount path of hostPath/pvc weights, or a hub repo id
    "model_id",  # the catalog model id (or the instance name without one)
    "served_name",  # the name clients ask for
    "revision",  # a hub revision (unset without one)
    "device_count",
    "tensor_parallel_size",  # the device count unless a tuned parameter or a user argument says otherwise
    "pipeline_parallel_size",
    "world_size",  # tensor_parallel_size x pipeline_parallel_size
    "port",  # the container port the engine listens on
    "work_dir",  # a writable per-instance scratch directory (only for definitions that ask for one)
)
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:\|([^{}]*))?\}")
_FLAG_ALIASES = {"-tp": "--tensor-parallel-size", "-pp": "--pipeline-parallel-size"}


# ------------------------------------------------------------------------------------------- templates


def placeholders(template: str) -> list[str]:
    return [m.group(1) for m in _PLACEHOLDER.finditer(template)]


def render_template(template: str, values: Mapping[str, str | None]) -> str | None:
    """Fill ``{name}`` / ``{name|default}``; None when a placeholder without default has no value."""
    missing = False

    def sub(match: re.Match[str]) -> str:
        nonlocal missing
        value = values.get(match.group(1))
        if value is None:
            if match.group(2) is None:
                missing = True
                return ""
            return match.group(2)
        return value

    text = _PLACEHOLDER.sub(sub, template)
    return None if missing else text


def env_var_name(key: str) -> str:
    """xw-cli's rule for tuned parameters as variables: ``max_model_len``/``maxModelLen`` → ``MAX_MODEL_LEN``."""
    out: list[str] = []
    for i, ch in enumerate(key):
        if ch == "-":
            out.append("_")
        elif ch.isupper():
            if i > 0 and key[i - 1] not in "-_":
                out.append("_")
            out.append(ch)
        else:
            out.append(ch)
    return "".join(out).upper()


# ------------------------------------------------------------------------------------------ the format


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _arg_group(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


ArgGroup = Annotated[list[str], BeforeValidator(_arg_group)]


class TunedParams(_Strict):
    """How a recipe's tuned parameters (runtime_params.yaml ``key=value``) reach the engine.

    Every tuned key is also a placeholder (``{max_model_len}``). Beyond that: keys in ``flags`` become
    ``--key-with-dashes=value``, keys in ``split`` are shell-quoted argument lists appended as they are
    (``extra_args``), and with ``env: rest`` every other key becomes a variable by xw-cli's rule
    (``max_model_len`` → ``MAX_MODEL_LEN``) unless the device sandbox already sets it.
    """

    flags: list[str] = Field(default_factory=list)
    split: list[str] = Field(default_factory=list)
    env: Literal["rest", "none"] = "rest"
    skip: list[str] = Field(default_factory=list, description="keys only used as placeholders")


# ------------------------------------------------------------------ multi-node contracts (LeaderWorkerSet)

# What a multi-node contract's templates may use: the group's shape, known for every engine (not the
# engine's own placeholders such as tuned keys, which a contract does not see). An unknown name would
# reach the pod as literal text, so it is refused when the definition loads.
MULTI_NODE_PLACEHOLDERS = (
    "nodes",  # pods per group (spec.devices.nodes)
    "device_count",  # accelerators per node
    "world_size",  # device_count x nodes
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "port",
    "served_name",
    "model_path",
)
# A contract's placeholder: a lower-case name in braces. `${NAME}` is the shell's and JSON's braces
# (`'{"NPU": 8}'`) are not names, so both stay as they are.
CONTRACT_PLACEHOLDER = re.compile(r"(?<!\$)\{([a-z_][a-z0-9_]*)(\|[^{}]*)?\}")

# Pod fields a contract variable may take from the downward API: the pod's identity and addresses, the
# ones multi-node engines bind to or report. Refused at load time rather than by the API server at pod
# creation (an unsupported path fails every pod of the group, long after the LeaderWorkerSet was accepted).
# Left out on purpose: annotations (device plugins and admission webhooks write arbitrary data there, and
# engines log their environment), labels (the LWS_* variables already carry the group's indices) and the
# ServiceAccount name (engine pods get no token).
FIELD_REFS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
)


class FieldRef(_Strict):
    """A contract variable's value from the downward API (``{fieldRef: status.podIP}``)."""

    model_config = ConfigDict(populate_by_name=True)
    field_ref: str = Field(alias="fieldRef")


def _contract_text(template: str) -> str:
    for match in CONTRACT_PLACEHOLDER.finditer(template):
        if match.group(1) not in MULTI_NODE_PLACEHOLDERS or match.group(2) is not None:
            raise ValueError(
                f"placeholder {match.group(0)} in {template!r}: a multi-node contract knows "
                f"{', '.join('{' + n + '}' for n in MULTI_NODE_PLACEHOLDERS)} (no defaults; a shell "
                "variable is written ${NAME})"
            )
    return template


ContractText = Annotated[str, AfterValidator(_contract_text)]
ContractArgGroup = Annotated[list[ContractText], BeforeValidator(_arg_group), Field(min_length=1)]


def _env_value(value: Any) -> Any:
    """A string template or ``{fieldRef: <allowed pod field>}``, with one message for each mistake (a plain
    union would report one failure per branch)."""
    if isinstance(value, FieldRef):
        return value
    if isinstance(value, str):
        return _contract_text(value)
    if isinstance(value, dict):
        if set(value) != {"fieldRef"} or not isinstance(value["fieldRef"], str):
            raise ValueError("a pod field is written {fieldRef: <field>}, e.g. {fieldRef: status.podIP}")
        if value["fieldRef"] not in FIELD_REFS:
            raise ValueError(f"fieldRef {value['fieldRef']!r} is not allowed; use one of: {', '.join(FIELD_REFS)}")
        return FieldRef(field_ref=value["fieldRef"])
    raise ValueError("expected a string (quote numbers and booleans) or {fieldRef: <pod field>}")


EnvValue = Annotated[str | FieldRef, BeforeValidator(_env_value)]


class RoleContract(_Strict):
    """One role's part of a multi-node contract (docs/engines.md, "Multi-node contracts")."""

    wrap: list[ContractText] | None = Field(
        None,
        min_length=1,
        description="leader only: a command that starts side services, then runs the engine's command line "
        'given to it as "$@"',
    )
    command: list[ContractText] | None = Field(
        None, min_length=1, description="the role's whole command (replaces the engine's)"
    )
    args: list[ContractArgGroup] = Field(
        default_factory=list,
        description="argument groups appended to the engine's arguments unless the user already gives the flag",
    )
    env: dict[str, EnvValue] = Field(default_factory=dict, description="variables added for this role")
    serves: bool | None = Field(
        None, description="worker only: whether workers serve the HTTP endpoint (ports, probes); default false"
    )

    @model_validator(mode="after")
    def _one_launch(self) -> RoleContract:
        if self.wrap is not None and self.command is not None:
            raise ValueError("give wrap (runs the engine's command line after it) or command (replaces it), not both")
        if self.command is not None and self.args:
            # A role's own command replaces the engine's whole command line; its args would be dropped.
            raise ValueError("a role with its own command takes no args; write them into the command")
        return self

    def over(self, base: Self) -> Self:
        """This overlay applied on ``base``: the keys it sets replace (``wrap`` and ``command`` together:
        both say how the role starts), ``env`` merges."""
        given = self.model_fields_set
        launch = self if given & {"wrap", "command"} else base
        return base.model_copy(
            update={
                "wrap": launch.wrap,
                "command": launch.command,
                "args": self.args if "args" in given else base.args,
                "env": {**base.env, **self.env},
                "serves": self.serves if "serves" in given else base.serves,
            }
        )


class LeaderContract(RoleContract):
    @field_validator("serves")
    @classmethod
    def _leader_serves(cls, value: bool | None) -> bool | None:
        if value is not None:
            raise ValueError(
                "the leader always serves the endpoint (the instance's Service selects it); "
                "only worker.serves can be set"
            )
        return value


class WorkerContract(RoleContract):
    @field_validator("wrap")
    @classmethod
    def _worker_wrap(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            raise ValueError("only the leader wraps the engine's command; give the worker a full command")
        return value


class VendorOverlay(_Strict):
    """What one vendor's chips change in a contract (``vendors.<vendor_name in lower case>``)."""

    env: dict[str, EnvValue] = Field(default_factory=dict, description="variables added for both roles")
    leader: LeaderContract = Field(default_factory=LeaderContract)
    worker: WorkerContract = Field(default_factory=WorkerContract)


class MultiNodeContract(VendorOverlay):
    """How an engine runs as one LeaderWorkerSet group (``spec.devices.nodes`` > 1): ``env`` for both
    roles, a ``leader`` and a ``worker`` part, and per-vendor overlays over them."""

    vendors: dict[str, VendorOverlay] = Field(
        default_factory=dict, description="overlays by devices.yaml vendor_name in lower case (huawei, nvidia, ...)"
    )

    @field_validator("vendors")
    @classmethod
    def _vendor_keys(cls, vendors: dict[str, VendorOverlay]) -> dict[str, VendorOverlay]:
        for key in vendors:
            if key != key.lower():
                raise ValueError(f"{key!r}: vendor keys are devices.yaml vendor_name in lower case ({key.lower()!r})")
        return vendors

    @model_validator(mode="after")
    def _overlays_keep_args(self) -> MultiNodeContract:
        # An overlay's args under the base's command (or the base's args under an overlay's command) would
        # be dropped, like args beside a command in one block.
        for key in self.vendors:
            merged = self.for_vendor(key)
            for role, part in (("leader", merged.leader), ("worker", merged.worker)):
                if part.command is not None and part.args:
                    raise ValueError(
                        f"vendors.{key}.{role}: with the overlay applied the {role} has its own command and args; "
                        "a role with its own command takes no args"
                    )
        return self

    def for_vendor(self, vendor: str) -> MultiNodeContract:
        """The contract for chips of ``vendor`` (devices.yaml vendor_name): its overlay applied, if any."""
        overlay = self.vendors.get(vendor.lower())
        if overlay is None:
            return self
        # Built from validated parts without validating again: the merge itself is checked once, when the
        # definition loads (_overlays_keep_args), and validation here would recurse into that check.
        return MultiNodeContract.model_construct(
            env={**self.env, **overlay.env},
            leader=overlay.leader.over(self.leader),
            worker=overlay.worker.over(self.worker),
        )

    def wraps(self) -> list[str]:
        """Where a leader ``wrap`` is given (it needs the definition's command)."""
        parts = [("", self)] + [(f"vendors.{k}.", v) for k, v in self.vendors.items()]
        return [f"multi_node.{prefix}leader.wrap" for prefix, part in parts if part.leader.wrap is not None]


class EngineDefinition(_Strict):
    """One way of starting an engine (see docs/engines.md)."""

    engine: str | None = Field(
        None, description="the spec.engine.name this definition serves; default: its own key in engines:"
    )
    description: str = ""
    images: list[str] = Field(
        default_factory=list,
        description="fnmatch patterns; when set, the definition is chosen only for a matching image",
    )
    command: list[str] | None = Field(
        None, description="an explicit command replacing the image's entrypoint; absent: the image's entrypoint"
    )
    args: list[ArgGroup] = Field(
        default_factory=list,
        description="argument templates; a list item is a group kept only when all its placeholders have values",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="variable templates; one whose placeholders have no value is left out"
    )
    tuned_params: TunedParams = Field(default_factory=TunedParams)
    overridable: list[str] = Field(
        default_factory=list,
        description="placeholders a user argument --name=value (or --name value) sets instead of being passed on",
    )
    user_args: Literal["merge", "append"] = Field(
        "merge",
        description="merge: a user flag replaces the default flag of the same name; "
        "append: user args follow as they are",
    )
    port: int = Field(CONTAINER_PORT, ge=1, le=65535)
    health_path: str = Field(DEFAULT_HEALTH_PATH, pattern=r"^/")
    ready_path: str = Field(DEFAULT_READY_PATH, pattern=r"^/")
    ready_lists_model: bool = Field(True, description="the ready path is an OpenAI model list naming the model")
    work_dir: str | None = Field(
        None, pattern=r"^/", description="a writable per-instance scratch directory mounted at this path"
    )
    multi_node: MultiNodeContract | None = Field(
        None,
        description="how the engine runs as one LeaderWorkerSet group (spec.devices.nodes > 1); "
        "absent: it runs on one node only",
    )

    @model_validator(mode="before")
    @classmethod
    def _retired_roles(cls, data: Any) -> Any:
        # `roles: {}` was a reserved, never used field that docs/engines.md showed in its example; files that
        # copied it keep loading (a refusal would also refuse the operator's persisted last good devices.yaml).
        if isinstance(data, dict) and "roles" in data:
            if data["roles"] != {}:
                raise ValueError(
                    "roles: was reserved and never used; multi-node contracts go under multi_node (docs/engines.md)"
                )
            data = {k: v for k, v in data.items() if k != "roles"}
        return data

    @model_validator(mode="after")
    def _known_placeholders(self) -> EngineDefinition:
        # Tuned keys are open-ended; only builtin names are checked against typos in their own spelling.
        for template in [*(self.command or []), *(a for g in self.args for a in g), *self.env.values()]:
            for name in placeholders(template):
                if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                    raise ValueError(f"placeholder {{{name}}} in {template!r}: use lower_snake_case names")
        if self.work_dir is None and any(
            "work_dir" in placeholders(t) for t in [*self.env.values(), *(a for g in self.args for a in g)]
        ):
            raise ValueError("{work_dir} is used but work_dir (its mount path) is not set")
        if self.command is None and self.multi_node is not None and (wraps := self.multi_node.wraps()):
            raise ValueError(
                f"{wraps[0]}: wraps the engine's command, but this definition starts the image's entrypoint "
                "(no command); give the leader a full command instead"
            )
        return self

    @field_validator("images")
    @classmethod
    def _patterns(cls, images: list[str]) -> list[str]:
        if any(not p for p in images):
            raise ValueError("image patterns must not be empty")
        return images


class EnginesFile(_Strict):
    """``engines.yaml``: the shipped definitions (the same format as devices.yaml's ``engines:``)."""

    version: str = "1"
    engines: dict[str, EngineDefinition]


def parse_engines(text: str, source: str) -> dict[str, EngineDefinition]:
    data = load_yaml(text, source, ConfigError)  # duplicate keys, depth, size, alias bombs (inputs.py)
    try:
        return EnginesFile.model_validate(data).engines
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe(exc)}") from None


def shipped_engines_path() -> Path:
    return Path(__file__).with_name("data") / "engines.yaml"


@cache
def shipped_engines() -> dict[str, EngineDefinition]:
    path = shipped_engines_path()
    return parse_engines(path.read_text(encoding="utf-8"), str(path))


# ----------------------------------------------------------------------------------- what comes out


@dataclass(frozen=True)
class EngineContext:
    served_model_name: str
    model_path: str  # a path inside the container, or a hub repo id the engine downloads
    revision: str | None
    device_count: int
    user_args: tuple[str, ...]
    tuned: tuple[tuple[str, str], ...] = ()  # runtime_params.yaml key=value pairs, in file order
    sandbox_env: tuple[str, ...] = ()  # variables the device sandbox sets (tuned env never replaces them)
    model_id: str | None = None
    image: str = ""
    # spec.parallelism after the API's defaults (tensor = devices per node, pipeline = nodes).
    tensor_parallel: int | None = None
    pipeline_parallel: int = 1


@dataclass(frozen=True)
class EngineCommand:
    command: tuple[str, ...] | None  # None: the image's entrypoint
    args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    health_path: str = DEFAULT_HEALTH_PATH
    ready_path: str = DEFAULT_READY_PATH
    ready_lists_model: bool = True
    port: int = CONTAINER_PORT
    work_dir: str | None = None
    definition: str = ""  # which definition produced it (shown by `xw render`, handy in bug reports)
    multi_node: MultiNodeContract | None = None  # how it runs across nodes; None: on one node only


EngineBuilder = Callable[[EngineContext], EngineCommand]
ENGINE_ENTRY_POINT_GROUP = "xw_operator.engines"
_CODE_ENGINES: dict[str, EngineBuilder] = {}


@dataclass(frozen=True)
class CodeEngine:
    """An engine whose launch needs logic a template cannot express, shipped as Python code.

    A vendor package advertises it without touching ours, in its pyproject.toml::

        [project.entry-points."xw_operator.engines"]
        acme-serve = "acme_xw.engine:make_engine"   # returns CodeEngine("acme-serve", build)
    """

    name: str
    build: EngineBuilder


def load_code_engines(group: str = ENGINE_ENTRY_POINT_GROUP) -> dict[str, EngineBuilder]:
    """Every code engine the installed distributions advertise under ``group`` (a broken one is a
    ConfigError naming it, like a broken code sandbox)."""
    return {engine.name: engine.build for engine in load_plugins(group, CodeEngine, "code engine")}


@cache
def installed_code_engines() -> dict[str, EngineBuilder]:
    """The installed code engines, loaded once per process on first need (only when no definition serves
    an engine: configured and shipped definitions never load them)."""
    return load_code_engines()


def register_engine(name: str, builder: EngineBuilder) -> EngineBuilder:
    """A code engine registered by a program that embeds xw; any configured definition still wins, and
    it wins over an installed one of the same name."""
    _CODE_ENGINES[name] = builder
    return builder


def _code_engine(engine: str) -> EngineBuilder | None:
    return _CODE_ENGINES.get(engine) or installed_code_engines().get(engine)


# --------------------------------------------------------------------------------------- flag helpers


def flag_name(arg: str) -> str | None:
    """The canonical flag of an argument (``--max_model_len=1`` → ``--max-model-len``), None for values."""
    if not arg.startswith("-") or arg == "-" or _is_number(arg):
        return None
    name = arg.split("=", 1)[0]
    name = _FLAG_ALIASES.get(name, name)
    return "--" + name.lstrip("-").replace("_", "-") if name.startswith("--") else name


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def merge_flags(defaults: Sequence[str], user: Sequence[str]) -> tuple[str, ...]:
    """Defaults followed by user args, dropping each default flag (and its value) the user also gives."""
    user_flags = {f for a in user if (f := flag_name(a))}
    kept: list[str] = []
    skip_value = False
    for arg in defaults:
        if skip_value and flag_name(arg) is None:
            skip_value = False
            continue
        skip_value = False
        name = flag_name(arg)
        if name in user_flags:
            skip_value = "=" not in arg
            continue
        kept.append(arg)
    return (*kept, *user)


def take_overrides(user: Sequence[str], names: Sequence[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """Split user args into placeholder overrides (``--max-model-len=4096`` for ``max_model_len``) and the rest."""
    wanted = {"--" + n.replace("_", "-"): n for n in names}
    overrides: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(user):
        arg = user[i]
        name = flag_name(arg)
        if name in wanted:
            if "=" in arg:
                overrides[wanted[name]] = arg.split("=", 1)[1]
            elif i + 1 < len(user) and flag_name(user[i + 1]) is None:
                overrides[wanted[name]] = user[i + 1]
                i += 1
            else:
                raise ResolveError(f"spec.engine.args: {arg} needs a value")
        else:
            rest.append(arg)
        i += 1
    return overrides, tuple(rest)


# ---------------------------------------------------------------------------------------- building


def _values(defn: EngineDefinition, ctx: EngineContext) -> dict[str, str | None]:
    tuned = dict(ctx.tuned)
    overrides, _ = take_overrides(ctx.user_args, defn.overridable)
    values: dict[str, str | None] = {k: v for k, v in tuned.items()}
    tp = overrides.get("tensor_parallel_size") or str(ctx.tensor_parallel or ctx.device_count)
    pp = overrides.get("pipeline_parallel_size") or str(ctx.pipeline_parallel)
    values.update(
        {
            "model_path": ctx.model_path,
            "model_id": ctx.model_id or ctx.served_model_name,
            "served_name": ctx.served_model_name,
            "revision": ctx.revision,
            "device_count": str(ctx.device_count),
            "tensor_parallel_size": tp,
            # No value at 1: an argument group naming it (vllm's --pipeline-parallel-size) is left out then.
            "pipeline_parallel_size": None if pp == "1" else pp,
            "world_size": str(int(tp) * int(pp)) if tp.isdigit() and pp.isdigit() else tp,
            "port": str(defn.port),
            "work_dir": defn.work_dir,
        }
    )
    values.update(overrides)
    return values


def build_from_definition(name: str, defn: EngineDefinition, ctx: EngineContext) -> EngineCommand:
    values = _values(defn, ctx)
    _, user = take_overrides(ctx.user_args, defn.overridable)
    command = None
    if defn.command is not None:
        rendered = [render_template(c, values) for c in defn.command]
        missing = [c for c, r in zip(defn.command, rendered, strict=True) if r is None]
        if missing:
            raise ResolveError(f"engine definition {name}: command part {missing[0]!r} has no value")
        command = tuple(r for r in rendered if r is not None)
    defaults: list[str] = []
    for group in defn.args:
        parts = [render_template(a, values) for a in group]
        if all(p is not None for p in parts):
            defaults.extend(p for p in parts if p is not None)
    overrides, _ = take_overrides(ctx.user_args, defn.overridable)
    # A user override of a tuned key replaces the recipe's value everywhere the key is used.
    tuned = {**dict(ctx.tuned), **{k: v for k, v in overrides.items() if k not in BUILTIN_PLACEHOLDERS}}
    env: dict[str, str] = {}
    rules = defn.tuned_params
    for key, value in tuned.items():
        if key in rules.skip:
            continue
        if key in rules.split:
            # xw-cli's images run these through a shell that knows $MODEL_PATH (recipes use it for chat
            # templates); an explicit command has no shell, so the path is filled in here.
            path = ctx.model_path
            defaults.extend(shlex.split(value.replace("${MODEL_PATH}", path).replace("$MODEL_PATH", path)))
        elif key in rules.flags:
            defaults.append(f"--{key.replace('_', '-')}={value}")
        elif rules.env == "rest" and (var := env_var_name(key)) not in ctx.sandbox_env:
            env[var] = value
    for var, template in defn.env.items():
        text = render_template(template, values)
        if text is not None:
            env[var] = text
    args = merge_flags(defaults, user) if defn.user_args == "merge" else (*defaults, *user)
    return EngineCommand(
        command=command,
        args=args,
        env=env,
        health_path=defn.health_path,
        ready_path=defn.ready_path,
        ready_lists_model=defn.ready_lists_model,
        port=defn.port,
        work_dir=defn.work_dir,
        definition=name,
        multi_node=defn.multi_node,
    )


def effective_definitions(configured: Mapping[str, EngineDefinition] | None = None) -> dict[str, EngineDefinition]:
    """Every definition by key: devices.yaml's ``engines:`` first, then the shipped ones it does not replace."""
    merged: dict[str, EngineDefinition] = dict(configured or {})
    for key, defn in shipped_engines().items():
        merged.setdefault(key, defn)
    return merged


def definitions_for(
    engine: str, configured: Mapping[str, EngineDefinition] | None = None
) -> list[tuple[str, EngineDefinition]]:
    """Definitions serving ``engine``: configured ones first, then shipped ones not overridden by key."""
    return [(k, d) for k, d in effective_definitions(configured).items() if (d.engine or k) == engine]


def known_engines(configured: Mapping[str, EngineDefinition] | None = None) -> list[str]:
    names = {d.engine or k for k, d in effective_definitions(configured).items()}
    return sorted(names | set(_CODE_ENGINES) | set(installed_code_engines()))


def multi_node_engines(configured: Mapping[str, EngineDefinition] | None = None) -> list[str]:
    """Engines with a definition that has a multi-node contract (for the refusal's list)."""
    return sorted({d.engine or k for k, d in effective_definitions(configured).items() if d.multi_node is not None})


def no_multi_node_contract(engine: str, definition: str, nodes: int, known: Sequence[str]) -> ResolveError:
    """The one refusal of ``nodes`` > 1 for an engine whose chosen definition has no multi-node contract."""
    if definition in ("", engine):
        return ResolveError(
            f"spec.devices.nodes is {nodes} but engine {engine} has no multi-node contract "
            f"(engines with one: {', '.join(known) or 'none'}); use one of them or nodes: 1"
        )
    return ResolveError(
        f"spec.devices.nodes is {nodes} but engine {engine} starts with definition {definition} (chosen by the "
        f"image), which has no multi-node contract; use an image another definition serves, give {definition} "
        "a multi_node block in devices.yaml engines:, or nodes: 1"
    )


def select_definition(
    engine: str, image: str, configured: Mapping[str, EngineDefinition] | None = None
) -> tuple[str, EngineDefinition] | None:
    """An image-matching definition, else the engine's definition without image patterns, else None."""
    candidates = definitions_for(engine, configured)
    for key, defn in candidates:
        if defn.images and any(fnmatchcase(image, p) for p in defn.images):
            return key, defn
    return next(((k, d) for k, d in candidates if not d.images), None)


def build_command(
    engine: str, ctx: EngineContext, configured: Mapping[str, EngineDefinition] | None = None
) -> EngineCommand:
    """Config > code > error: the definition for this engine and image, else a code engine."""
    chosen = select_definition(engine, ctx.image, configured)
    if chosen is not None:
        return build_from_definition(chosen[0], chosen[1], ctx)
    coded = _code_engine(engine)
    if coded is not None:
        return coded(ctx)
    raise ResolveError(
        f"engine {engine!r} has no definition (devices.yaml engines:, the shipped engines.yaml or code); "
        f"known engines: {', '.join(known_engines(configured))}"
    )
