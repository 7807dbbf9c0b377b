"""Engine command builders: how each inference engine is told what to serve.

An engine is a small function from the instance's facts to (command, args, env). ``vllm`` gets an explicit
``vllm serve`` command line; ``mindie`` images start their own entrypoint and read environment variables
(as the seed drove them); any other engine name passes ``spec.engine.args`` to the image's entrypoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

MODEL_MOUNT_PATH = "/mnt/model"  # where hostPath/pvc weights appear inside the container (seed path)
CONTAINER_PORT = 8000


@dataclass(frozen=True)
class EngineContext:
    served_model_name: str
    model_path: str  # a path inside the container, or a hub repo id the engine downloads
    revision: str | None
    device_count: int
    user_args: tuple[str, ...]


@dataclass(frozen=True)
class EngineCommand:
    command: tuple[str, ...] | None  # None: the image's entrypoint
    args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


EngineBuilder = Callable[[EngineContext], EngineCommand]

# Short spellings vLLM accepts for flags we set by default.
_VLLM_FLAG_ALIASES = {"-tp": "--tensor-parallel-size", "-pp": "--pipeline-parallel-size"}


def flag_name(arg: str) -> str | None:
    """The canonical flag of an argument (``--max_model_len=1`` → ``--max-model-len``), None for values."""
    if not arg.startswith("-") or arg == "-" or _is_number(arg):
        return None
    name = arg.split("=", 1)[0]
    name = _VLLM_FLAG_ALIASES.get(name, name)
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


def vllm(ctx: EngineContext) -> EngineCommand:
    defaults = [
        "--served-model-name", ctx.served_model_name,
        "--port", str(CONTAINER_PORT),
        "--tensor-parallel-size", str(ctx.device_count),
    ]  # fmt: skip
    if ctx.revision:
        defaults += ["--revision", ctx.revision]
    return EngineCommand(
        command=("vllm", "serve", ctx.model_path),
        args=merge_flags(defaults, ctx.user_args),
    )


def mindie(ctx: EngineContext) -> EngineCommand:
    """MindIE images read their settings from the environment (the seed's contract with them)."""
    return EngineCommand(
        command=None,
        args=ctx.user_args,
        env={
            "MODEL_PATH": ctx.model_path,
            "MODEL_NAME": ctx.served_model_name,
            "SERVER_PORT": str(CONTAINER_PORT),
            "WORLD_SIZE": str(ctx.device_count),
            "TENSOR_PARALLEL": str(ctx.device_count),
        },
    )


def generic(ctx: EngineContext) -> EngineCommand:
    return EngineCommand(command=None, args=ctx.user_args)


ENGINE_BUILDERS: dict[str, EngineBuilder] = {"vllm": vllm, "mindie": mindie}


def build_command(engine: str, ctx: EngineContext) -> EngineCommand:
    return ENGINE_BUILDERS.get(engine, generic)(ctx)
