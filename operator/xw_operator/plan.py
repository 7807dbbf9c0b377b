"""resolve(): ModelInstance + devices.yaml → Plan. Pure: no I/O, no clock, no randomness.

The Plan is the single place where device-sandbox semantics live (index-matched device nodes,
always-mounted control nodes, the visible-devices variable, engine blocks merged over the common block).
Both renderers consume it; neither re-reads devices.yaml.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from xw_operator.devices import ARCHES, DevicesConfig, KubernetesProfile, VolumeSpec
from xw_operator.engines import CONTAINER_PORT, MODEL_MOUNT_PATH, EngineContext, build_command
from xw_operator.errors import ImageNotAvailable, PolicyRefused, ResolveError
from xw_operator.instance import ModelInstance
from xw_operator.sandbox import DeviceNode, DeviceSandbox, SandboxRegistry, select_sandbox
from xw_operator.topology import best_indices


@dataclass(frozen=True)
class Plan:
    """Everything needed to run one replica of a ModelInstance, independent of the backend."""

    name: str
    namespace: str | None
    chip: str
    engine: str
    arch: str
    image: str
    command: tuple[str, ...] | None
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    device_count: int
    device_indices: tuple[int, ...]
    device_nodes: tuple[DeviceNode, ...]
    volumes: tuple[VolumeSpec, ...]
    privileged: bool
    capabilities: tuple[str, ...]
    shm_bytes: int
    runtime: str
    served_model_name: str
    model_source: str  # hostPath | pvc | huggingFace
    model_path: str  # what the engine is told to load
    container_port: int = CONTAINER_PORT
    port: int = CONTAINER_PORT
    device_env: str | None = None
    kubernetes: KubernetesProfile | None = None
    # Variables the allocation owns; a renderer in device-plugin mode drops them.
    device_visibility_env: tuple[str, ...] = field(default=())

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)


def choose_arch(supported: Sequence[str], preferred: str | None) -> str | None:
    """``preferred`` when the chip supports it, else the only/first supported architecture."""
    if preferred in supported:
        return preferred
    return supported[0] if supported else None


def resolve(
    instance: ModelInstance,
    config: DevicesConfig,
    *,
    arch: str | None = None,
    device_indices: Sequence[int] | None = None,
    registry: SandboxRegistry | None = None,
) -> Plan:
    """Resolve an instance against devices.yaml.

    ``arch=None`` picks the one architecture the chip has an image for (Kubernetes then pins the pod
    to it); an explicit ``arch`` (Docker mode: the host's own CPU) must have an image. ``device_indices``
    are host indices chosen by an allocator; without them ``spec.devices.indices`` or the
    topology-best set of an empty host is used.
    """
    spec = instance.spec
    chip_key, engine, count = spec.devices.chip, spec.engine.name, spec.devices.count
    if spec.model.source.host_path:
        refusal = config.policy.check_model_host_path(spec.model.source.host_path)
        if refusal:
            raise PolicyRefused(refusal, reason="HostPathNotAllowed")
    sandbox = select_sandbox(config, chip_key, engine, registry)

    capacity = sandbox.device_capacity()
    if capacity is not None and count > capacity:
        raise ResolveError(f"spec.devices.count is {count} but chip {chip_key} has {capacity} devices per host")
    indices = _indices(instance, config, sandbox, device_indices)

    image, chosen_arch = _image(instance, config, sandbox, arch)
    source = spec.model.source
    if source.hugging_face:
        model_path, revision = source.hugging_face.repo, source.hugging_face.revision
    else:
        model_path, revision = MODEL_MOUNT_PATH, None
    engine_cmd = build_command(
        engine,
        EngineContext(
            served_model_name=instance.served_model_name,
            model_path=model_path,
            revision=revision,
            device_count=count,
            user_args=tuple(spec.engine.args),
        ),
    )
    kube = sandbox.kubernetes()
    owned = tuple(
        dict.fromkeys([*([sandbox.device_env] if sandbox.device_env else []), *(kube.plugin_env if kube else [])])
    )
    env = _environment(instance, sandbox, engine_cmd.env, indices, owned)
    return Plan(
        name=instance.name,
        namespace=instance.metadata.namespace,
        chip=chip_key,
        engine=engine,
        arch=chosen_arch,
        image=image,
        command=engine_cmd.command,
        args=engine_cmd.args,
        env=tuple(env.items()),
        device_count=count,
        device_indices=indices,
        device_nodes=tuple(sandbox.device_nodes(indices)),
        volumes=tuple(sandbox.additional_mounts()),
        privileged=sandbox.privileged(),
        capabilities=tuple(sandbox.capabilities()),
        shm_bytes=sandbox.shm_size_bytes(),
        runtime=sandbox.runtime(),
        served_model_name=instance.served_model_name,
        model_source=source.kind,
        model_path=model_path,
        port=spec.port,
        device_env=sandbox.device_env,
        kubernetes=kube,
        device_visibility_env=owned,
    )


def _indices(
    instance: ModelInstance,
    config: DevicesConfig,
    sandbox: DeviceSandbox,
    given: Sequence[int] | None,
) -> tuple[int, ...]:
    count = instance.spec.devices.count
    chosen = given if given is not None else instance.spec.devices.indices
    capacity = sandbox.device_capacity()
    if chosen is not None:
        if len(chosen) != count:
            raise ResolveError(f"{len(chosen)} device indices given for spec.devices.count {count}")
        out_of_range = [i for i in chosen if capacity is not None and not 0 <= i < capacity]
        if out_of_range:
            raise ResolveError(
                f"device indices {out_of_range} do not exist on chip {instance.spec.devices.chip} "
                f"(indices 0-{capacity - 1 if capacity else 0})"
            )
        return tuple(chosen)
    ref = config.find_chip(instance.spec.devices.chip)
    if ref is not None and (ref.chip.device_capacity is not None or ref.chip.topology):
        return best_indices(ref.chip, count)
    return tuple(range(count))


def _image(
    instance: ModelInstance,
    config: DevicesConfig,
    sandbox: DeviceSandbox,
    arch: str | None,
) -> tuple[str, str]:
    chip_key, engine = instance.spec.devices.chip, instance.spec.engine.name
    if arch is not None and arch not in ARCHES:
        raise ResolveError(f"unknown CPU architecture {arch!r}; expected one of {', '.join(ARCHES)}")
    ref = config.find_chip(chip_key)

    def configured(a: str) -> str | None:
        # config > code: the chip's runtime_images win over a code sandbox's own default.
        if ref is not None and ref.chip.image_for(engine, a):
            return ref.chip.image_for(engine, a)
        return sandbox.default_image(a)

    supported = [a for a in ARCHES if configured(a)]
    override = instance.spec.engine.image
    if override:
        return override, (arch or choose_arch(supported, None) or ARCHES[0])
    chosen = arch or choose_arch(supported, None)
    image = configured(chosen) if chosen else None
    if not image:
        where = f"runtime_images.{engine}.{chosen or arch or '<arch>'}"
        raise ImageNotAvailable(
            f"chip {chip_key} has no {engine} image for {chosen or arch or 'any architecture'} "
            f"({where} is NONE or missing); supported architectures: {', '.join(supported) or 'none'}; "
            "set spec.engine.image to use your own"
        )
    return image, chosen  # type: ignore[return-value]


def _environment(
    instance: ModelInstance,
    sandbox: DeviceSandbox,
    engine_env: dict[str, str],
    indices: Sequence[int],
    owned: Sequence[str],
) -> dict[str, str]:
    """Sandbox static env < engine env < user env < device visibility (owned by the allocation).

    A user value for an allocation-owned variable is refused rather than silently ignored: it would
    either expose chips the instance does not hold or be overwritten without notice.
    """
    for i, var in enumerate(instance.spec.engine.env):
        if var.name in owned:
            raise ResolveError(f"spec.engine.env[{i}]: {var.name} is set by xw from the allocated devices; remove it")
    sandbox_env = sandbox.environment(indices)
    visibility = {k: v for k, v in sandbox_env.items() if k == sandbox.device_env}
    env = {k: v for k, v in sandbox_env.items() if k != sandbox.device_env}
    env.update(engine_env)
    env.update({v.name: v.value for v in instance.spec.engine.env})
    env.update(visibility)
    return env
