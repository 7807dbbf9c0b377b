"""resolve(): ModelInstance + devices.yaml → Profile; Profile.bind(indices) → Plan. Pure: no I/O, no clock.

Resolution has two steps because two different parties know two different things:

* :func:`resolve` knows the instance and the admin's devices.yaml: sandbox, image and architecture,
  command, static environment, mounts, the model source, privilege, shm, runtime, the Kubernetes
  profile and the device *count*. Everything that does not depend on which chips are used. It is also
  where the count is checked against what one host has (the only count check, see :func:`check_devices`).
* :meth:`Profile.bind` knows which chips: Docker mode binds the indices its allocator chose under the host
  lock; Kubernetes and ``xw render`` bind ``None``. Unbound, ``spec.devices.indices`` or else the
  topology-best set of an empty host is used. In device-plugin mode the Kubernetes renderer then drops
  those indices' nodes and visibility variables (the plugin picks and injects them); in host-device mode
  the pod mounts that set's nodes (and is the only such pod on its node, so the set is as good as any).

The Plan is the single place where device-sandbox semantics live (index-matched device nodes,
always-mounted control nodes, the visible-devices variable, engine blocks merged over the common block).
Both renderers consume it; neither re-reads devices.yaml nor the instance's model source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Literal

from xw_operator.catalog import expand
from xw_operator.devices import ARCHES, ChipModel, DevicesConfig, KubernetesProfile, VolumeSpec
from xw_operator.engines import (
    CONTAINER_PORT,
    DEFAULT_HEALTH_PATH,
    DEFAULT_READY_PATH,
    MODEL_MOUNT_PATH,
    EngineContext,
    MultiNodeContract,
    build_command,
    multi_node_engines,
    no_multi_node_contract,
)
from xw_operator.errors import ImageNotAvailable, PolicyRefused, ResolveError
from xw_operator.instance import ModelInstance
from xw_operator.policy import Backend, check_image, host_path_refusal, placement_refusal
from xw_operator.recipes import RecipeChoice
from xw_operator.sandbox import DeviceNode, DeviceSandbox, SandboxRegistry, select_sandbox
from xw_operator.topology import best_indices

SourceKind = Literal["hostPath", "pvc", "huggingFace"]


@dataclass(frozen=True)
class ModelSource:
    """Where the weights come from, as plain data for the renderers (exactly one kind is filled in)."""

    kind: SourceKind
    host_path: str | None = None
    pvc_claim: str | None = None
    pvc_sub_path: str | None = None
    hf_repo: str | None = None
    hf_revision: str | None = None
    # The Secret (in the instance's namespace) and key holding a Hugging Face token; never its value.
    hf_token_secret: str | None = None
    hf_token_key: str | None = None


@dataclass(frozen=True, kw_only=True)
class Resolved:
    """What a Profile and the Plans bound from it share: nothing here depends on which devices."""

    name: str
    namespace: str | None
    chip: str
    engine: str
    arch: str
    image: str
    command: tuple[str, ...] | None
    args: tuple[str, ...]
    device_count: int  # accelerators per node
    volumes: tuple[VolumeSpec, ...]
    privileged: bool
    capabilities: tuple[str, ...]
    shm_bytes: int
    runtime: str
    served_model_name: str
    model: ModelSource
    model_path: str  # what the engine is told to load: the mount path, or a hub repo id
    container_port: int = CONTAINER_PORT
    port: int = CONTAINER_PORT  # the Service port (Kubernetes)
    # Docker mode: the host port the user asked for (spec.port given explicitly); None lets `xw run`
    # pick a free one from XW_PORT_RANGE.
    requested_host_port: int | None = None
    kubernetes: KubernetesProfile | None = None
    # Variables the allocation owns; a renderer in device-plugin mode drops them.
    device_visibility_env: tuple[str, ...] = ()
    # devices.yaml policy.writable_host_mounts: how Kubernetes keeps writable host mounts per namespace.
    writable_host_mounts: str = "per-namespace"
    # From the engine definition (configs/engines.yaml or devices.yaml engines:): what the probes and the
    # Docker readiness wait ask, and a writable per-instance work directory when the engine needs one.
    health_path: str = DEFAULT_HEALTH_PATH
    ready_path: str = DEFAULT_READY_PATH
    ready_lists_model: bool = True
    work_dir: str | None = None
    engine_definition: str = ""
    recipe: str | None = None  # the runtime_params.yaml template applied (a catalog model), if any
    # Nodes per replica (spec.devices.nodes); above 1 the Kubernetes rendering is a LeaderWorkerSet.
    nodes: int = 1
    # (tensor, pipeline) parallel sizes after the API's defaults; devices.yaml vendor_name in lower case.
    parallel_sizes: tuple[int, int] = (1, 1)
    vendor: str = ""
    # The chosen engine definition's multi-node contract (before the vendor overlay); None: one node only.
    multi_node: MultiNodeContract | None = None

    @property
    def model_source(self) -> SourceKind:
        return self.model.kind


@dataclass(frozen=True, kw_only=True)
class Plan(Resolved):
    """Everything needed to run one replica of a ModelInstance on given devices, for any backend."""

    env: tuple[tuple[str, str], ...]  # precedence applied; the visibility variable last
    device_indices: tuple[int, ...]
    device_nodes: tuple[DeviceNode, ...]

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)


@dataclass(frozen=True, kw_only=True)
class Profile(Resolved):
    """A resolved instance before devices are chosen; :meth:`bind` turns it into a Plan."""

    env: tuple[tuple[str, str], ...]  # sandbox static < engine < user; no visibility variable yet
    device_capacity: int | None  # chips per host, when the chip profile says
    requested_indices: tuple[int, ...] | None  # spec.devices.indices
    sandbox: DeviceSandbox = field(repr=False, compare=False)
    chip_model: ChipModel | None = field(default=None, repr=False, compare=False)

    def default_indices(self) -> tuple[int, ...]:
        """Without an allocator: ``spec.devices.indices``, else the topology-best set of an empty host."""
        if self.requested_indices is not None:
            return self.requested_indices
        chip = self.chip_model
        if chip is not None and (chip.device_capacity is not None or chip.topology):
            return best_indices(chip, self.device_count)
        return tuple(range(self.device_count))

    def bind(self, indices: Sequence[int] | None = None) -> Plan:
        """The Plan for these host chip indices (Docker's allocation), or the default set for ``None``."""
        chosen = self.default_indices() if indices is None else tuple(indices)
        check_devices(self.chip, self.device_count, self.device_capacity, chosen)
        device_env = self.sandbox.device_env
        visibility = {k: v for k, v in self.sandbox.environment(chosen).items() if k == device_env}
        static = {f.name: getattr(self, f.name) for f in fields(Resolved)}
        return Plan(
            **static,
            env=tuple({**dict(self.env), **visibility}.items()),
            device_indices=chosen,
            device_nodes=tuple(self.sandbox.device_nodes(chosen)),
        )


def check_devices(chip: str, count: int, capacity: int | None, indices: Sequence[int] | None) -> None:
    """The one device-count check: ``count`` fits on one host, and ``indices`` are ``count`` chips that
    exist on it. :func:`resolve` calls it with ``spec.devices.indices`` (before anything is pulled or
    locked); :meth:`Profile.bind` with the indices it binds."""
    if capacity is not None and count > capacity:
        raise ResolveError(
            f"spec.devices.count is {count} but chip {chip} has {capacity} devices per host; "
            "spread a larger replica over several hosts with spec.devices.nodes (count is per node)"
        )
    if indices is None:
        return
    if len(indices) != count:
        raise ResolveError(f"{len(indices)} device indices given for spec.devices.count {count}")
    out_of_range = [i for i in indices if capacity is not None and not 0 <= i < capacity]
    if out_of_range:
        raise ResolveError(
            f"device indices {out_of_range} do not exist on chip {chip} (indices 0-{(capacity or 1) - 1})"
        )


def resolve(
    instance: ModelInstance,
    config: DevicesConfig,
    *,
    arch: str | None = None,
    registry: SandboxRegistry | None = None,
    backend: Backend = "kubernetes",
) -> Profile:
    """Resolve an instance against devices.yaml, for any devices.

    ``arch=None`` picks the one architecture the chip has an image for (Kubernetes then pins the pod
    to it); an explicit ``arch`` (Docker mode: the host's own CPU) must have an image. ``backend``
    selects the administrator's policy that applies (xw_operator.policy: a hostPath model source is
    judged differently on a shared cluster and on one's own Docker host; placement only on Kubernetes).
    An instance naming a catalog model (``spec.model.catalog``) is first completed from its recipe
    (:func:`catalog.expand`).
    """
    instance, recipe = expand(instance, config)
    spec = instance.spec
    chip_key, engine, count = spec.devices.chip, spec.engine.name, spec.devices.count
    source = _model_source(instance)
    sandbox = select_sandbox(config, chip_key, engine, registry)
    _check_policy(instance, config, sandbox, backend)
    capacity = sandbox.device_capacity()
    requested = tuple(spec.devices.indices) if spec.devices.indices is not None else None
    check_devices(chip_key, count, capacity, requested)

    image, chosen_arch = _image(instance, config, sandbox, arch, recipe)
    if spec.engine.image:
        check_image(
            spec.engine.image,
            configured=_configured_images(config, sandbox, chip_key, engine),
            prefixes=config.policy.allowed_image_prefixes,
            chip=chip_key,
            engine=engine,
        )
    model_path = source.hf_repo if source.hf_repo else MODEL_MOUNT_PATH
    engine_cmd = build_command(
        engine,
        EngineContext(
            served_model_name=instance.served_model_name,
            model_path=model_path,
            revision=source.hf_revision,
            device_count=count,
            user_args=tuple(spec.engine.args),
            tuned=recipe.tuned if recipe else (),
            sandbox_env=tuple(sandbox.environment(())),
            model_id=spec.model.catalog,
            image=image,
            tensor_parallel=spec.parallel_sizes[0],
            pipeline_parallel=spec.parallel_sizes[1],
        ),
        config.engines,
    )
    if spec.devices.nodes > 1 and engine_cmd.multi_node is None:
        raise no_multi_node_contract(
            engine, engine_cmd.definition, spec.devices.nodes, multi_node_engines(config.engines)
        )
    # The recipe's `envs` sit with the engine's variables but, like tuned ones, never replace the sandbox's.
    sandbox_env = sandbox.environment(())
    recipe_env = {k: v for k, v in (recipe.envs if recipe else {}).items() if k not in sandbox_env}
    kube = sandbox.kubernetes()
    owned = tuple(
        dict.fromkeys([*([sandbox.device_env] if sandbox.device_env else []), *(kube.plugin_env if kube else [])])
    )
    ref = config.find_chip(chip_key)
    return Profile(
        name=instance.name,
        namespace=instance.metadata.namespace,
        chip=chip_key,
        engine=engine,
        arch=chosen_arch,
        image=image,
        command=engine_cmd.command,
        args=engine_cmd.args,
        env=tuple(_environment(instance, sandbox, {**recipe_env, **engine_cmd.env}, owned).items()),
        device_count=count,
        volumes=tuple(sandbox.additional_mounts()),
        privileged=sandbox.privileged(),
        capabilities=tuple(sandbox.capabilities()),
        shm_bytes=sandbox.shm_size_bytes(),
        runtime=sandbox.runtime(),
        served_model_name=instance.served_model_name,
        model=source,
        model_path=model_path,
        container_port=engine_cmd.port,
        port=spec.port,
        requested_host_port=spec.port if "port" in spec.model_fields_set else None,
        kubernetes=kube,
        device_visibility_env=owned,
        writable_host_mounts=config.policy.writable_host_mounts,
        health_path=engine_cmd.health_path,
        ready_path=engine_cmd.ready_path,
        ready_lists_model=engine_cmd.ready_lists_model,
        work_dir=engine_cmd.work_dir,
        engine_definition=engine_cmd.definition,
        recipe=recipe.template if recipe else None,
        device_capacity=capacity,
        requested_indices=requested,
        sandbox=sandbox,
        chip_model=ref.chip if ref is not None else None,
        nodes=spec.devices.nodes,
        parallel_sizes=spec.parallel_sizes,
        vendor=ref.vendor.vendor_name.lower() if ref is not None else "",
        multi_node=engine_cmd.multi_node,
    )


def _check_policy(instance: ModelInstance, config: DevicesConfig, sandbox: DeviceSandbox, backend: Backend) -> None:
    """The administrator's policy (xw_operator.policy): host paths on both backends, placement on Kubernetes."""
    spec, policy = instance.spec, config.policy
    host_path = spec.model.source.host_path if spec.model.source is not None else None
    if host_path:
        refusal = host_path_refusal(
            host_path,
            allow=policy.allow_model_host_path,
            prefixes=policy.model_host_path_prefixes,
            backend=backend,
        )
        if refusal:
            raise PolicyRefused(refusal, reason="HostPathNotAllowed")
    if backend == "kubernetes":
        kube = sandbox.kubernetes()
        refusal = placement_refusal(
            spec.node_selector, spec.tolerations, spec.affinity, kube.node_selector if kube else {}, spec.devices.chip
        )
        if refusal:
            raise PolicyRefused(refusal, reason="PlacementNotAllowed")


def _configured_images(config: DevicesConfig, sandbox: DeviceSandbox, chip_key: str, engine: str) -> list[str]:
    """Every image devices.yaml (or the code sandbox) names for this chip and engine, any architecture."""
    ref = config.find_chip(chip_key)
    out = [ref.chip.image_for(engine, a) if ref else None for a in ARCHES]
    out += [sandbox.default_image(a) for a in ARCHES]
    return [i for i in out if i]


def _model_source(instance: ModelInstance) -> ModelSource:
    source = instance.spec.model.source
    if source is None:  # catalog.expand() fills it for catalog models; the API model requires one otherwise
        raise ResolveError("spec.model: set source or catalog")
    if source.pvc is not None:
        return ModelSource("pvc", pvc_claim=source.pvc.claim_name, pvc_sub_path=source.pvc.sub_path)
    hf = source.hugging_face
    if hf is not None:
        token = hf.token_secret_ref
        return ModelSource(
            "huggingFace",
            hf_repo=hf.repo,
            hf_revision=hf.revision,
            hf_token_secret=token.name if token else None,
            hf_token_key=token.key if token else None,
        )
    return ModelSource("hostPath", host_path=source.host_path)


def _image(
    instance: ModelInstance,
    config: DevicesConfig,
    sandbox: DeviceSandbox,
    arch: str | None,
    recipe: RecipeChoice | None = None,
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
    # Without an explicit arch: the first architecture the chip has an image for.
    chosen = arch or (supported[0] if supported else None)
    # spec.engine.image > the recipe's image= (xw-cli's order) > devices.yaml's runtime_images.
    override = instance.spec.engine.image or (recipe.image if recipe else None)
    if override:
        return override, chosen or ARCHES[0]
    image = configured(chosen) if chosen else None
    if not image or not chosen:
        where = f"runtime_images.{engine}.{chosen or '<arch>'}"
        raise ImageNotAvailable(
            f"chip {chip_key} has no {engine} image for {chosen or 'any architecture'} "
            f"({where} is NONE or missing); supported architectures: {', '.join(supported) or 'none'}; "
            "set spec.engine.image to an image the administrator allows (devices.yaml policy)"
        )
    return image, chosen


def _environment(
    instance: ModelInstance,
    sandbox: DeviceSandbox,
    engine_env: dict[str, str],
    owned: Sequence[str],
) -> dict[str, str]:
    """Sandbox static env < engine env < user env; :meth:`Profile.bind` adds device visibility last.

    A user value for an allocation-owned variable is refused rather than silently ignored: it would
    either expose chips the instance does not hold or be overwritten without notice.
    """
    for i, var in enumerate(instance.spec.engine.env):
        if var.name in owned:
            raise ResolveError(f"spec.engine.env[{i}]: {var.name} is set by xw from the allocated devices; remove it")
    env = {k: v for k, v in sandbox.environment(()).items() if k != sandbox.device_env}
    env.update(engine_env)
    env.update({v.name: v.value for v in instance.spec.engine.env})
    return env
