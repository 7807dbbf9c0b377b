"""The ModelInstance API (``xw.dev/v1alpha1``): what users write, for Kubernetes and Docker mode alike.

A ModelInstance author picks a chip profile *by name* and a device count. There is deliberately no field
for host paths (other than the model source), device nodes, privilege or capabilities: those come only
from devices.yaml, which cluster administrators control.

These models are the single source of the CRD (:mod:`xw_operator.crd` generates its schema from them), so
field descriptions are written for ``kubectl explain`` and every cross-field rule enforced here in Python
is mirrored by a CEL rule (``x-kubernetes-validations``) with the same message, which the API server
enforces before the operator ever sees the object.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from xw_operator.affinity import Affinity
from xw_operator.errors import ManifestError
from xw_operator.inputs import check_tree, decode, load_yaml_documents
from xw_operator.policy import CONTROL_PLANE_PREFIX, MSG_CONTROL_PLANE, MSG_TOLERATE_ALL
from xw_operator.validation import list_field, optional_text, validate_mapping

GROUP = "xw.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelInstance"
PLURAL = "modelinstances"
SINGULAR = "modelinstance"
SHORT_NAMES = ("mi",)
CHIP_NAME_PATTERN = r"^[a-z0-9][a-z0-9.-]*$"
# DNS-1035: the instance name becomes a Service name, which must start with a letter.
DNS_LABEL_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
# Kubernetes' resource.Quantity syntax (e.g. 500m, 16Gi, 1.5).
QUANTITY_PATTERN = (
    r"^[+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
MAX_DEVICES = 1024
# Nodes per replica (one LeaderWorkerSet group): 64 x 16 accelerators covers today's largest deployments.
MAX_NODES = 64

# Messages shared by the Python validators and the CRD's CEL rules, so both paths say the same thing.
MSG_SOURCE_OR_CATALOG = "set model.source (hostPath, pvc or huggingFace) or model.catalog (a models.yaml id)"
MSG_ONE_SOURCE = "exactly one of hostPath, pvc, huggingFace must be set"
MSG_INDICES_COUNT = "indices must have exactly count entries"
MSG_NO_BACKTRACK = "must not contain a '..' path element"
MSG_SUBPATH_RELATIVE = "must be a relative path without '..' elements"
MSG_RESOURCE_KEYS = (
    "only cpu, memory, ephemeral-storage and hugepages-* may be set; accelerators come from spec.devices"
)
MSG_PARALLELISM = (
    "parallelism.tensor x parallelism.pipeline must equal devices.count x devices.nodes (every accelerator "
    "of a replica is used once); a size set alone must divide devices.count x devices.nodes"
)
MSG_TOPOLOGY_SINGLE = "devices.topologyKey applies to multi-node instances only (devices.nodes > 1)"
MSG_NODES_SWITCH = (
    "devices.nodes cannot change between 1 and more than 1: a Deployment does not turn into a "
    "LeaderWorkerSet in place (the old one would keep its accelerators); create a new ModelInstance"
)
MSG_NAME = (
    "metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter, "
    "at most 63 characters): it names the Service"
)

_BACKTRACK_CEL = "!self.matches('(^|/)[.][.](/|$)')"


def _cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    out: JsonDict = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


def _has_backtracking(path: str) -> bool:
    return ".." in path.split("/")


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
    )


class PvcSource(ApiModel):
    """A PersistentVolumeClaim holding the weights; mounted read-only."""

    claim_name: str = Field(
        min_length=1, max_length=253, description="Name of a PersistentVolumeClaim in the same namespace."
    )
    sub_path: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="Directory inside the volume that holds the model (relative, no '..').",
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(f"!self.startsWith('/') && {_BACKTRACK_CEL}", f"subPath {MSG_SUBPATH_RELATIVE}")
            ]
        },
    )

    @field_validator("sub_path")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("/") or _has_backtracking(value)):
            raise ValueError(f"subPath {MSG_SUBPATH_RELATIVE}")
        return value


class SecretKeySelector(ApiModel):
    """A key of a Secret in the instance's namespace; the value is never copied into the rendered objects."""

    name: str = Field(min_length=1, max_length=253, description="Secret name in the same namespace.")
    key: str = Field("token", min_length=1, max_length=253, description="Key inside the Secret.")


class HuggingFaceSource(ApiModel):
    """The engine downloads the weights from Hugging Face when it starts."""

    repo: str = Field(min_length=1, max_length=256, description="Hugging Face repository id, e.g. Qwen/Qwen3-8B.")
    revision: str | None = Field(
        None, min_length=1, max_length=256, description="Branch, tag or commit; the repository default if unset."
    )
    token_secret_ref: SecretKeySelector | None = Field(
        None,
        description="Secret key holding a Hugging Face token for gated repositories; passed to the engine "
        "as HF_TOKEN (key defaults to 'token').",
    )


class ModelSource(ApiModel):
    """Where the weights come from. Exactly one of hostPath, pvc, huggingFace."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "[has(self.hostPath), has(self.pvc), has(self.huggingFace)].filter(x, x).size() == 1",
                    MSG_ONE_SOURCE,
                )
            ]
        }
    )

    host_path: str | None = Field(
        None,
        pattern=r"^/",
        max_length=4096,
        description="Absolute directory on the node holding the weights; mounted read-only. "
        "Administrators can disable this source.",
        json_schema_extra={"x-kubernetes-validations": [_cel(_BACKTRACK_CEL, f"hostPath {MSG_NO_BACKTRACK}")]},
    )
    pvc: PvcSource | None = Field(None, description="A PersistentVolumeClaim holding the weights.")
    hugging_face: HuggingFaceSource | None = Field(
        None, description="Download from Hugging Face at start-up (the engine does the download)."
    )

    @field_validator("host_path")
    @classmethod
    def _no_backtracking(cls, value: str | None) -> str | None:
        if value is not None and _has_backtracking(value):
            raise ValueError(f"hostPath {MSG_NO_BACKTRACK}")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        given = [
            n for n, v in (("hostPath", self.host_path), ("pvc", self.pvc), ("huggingFace", self.hugging_face)) if v
        ]
        if len(given) != 1:
            raise ValueError(f"{MSG_ONE_SOURCE} (got {', '.join(given) or 'none'})")
        return self

    @property
    def kind(self) -> Literal["hostPath", "pvc", "huggingFace"]:
        if self.host_path:
            return "hostPath"
        return "pvc" if self.pvc else "huggingFace"


class ModelSpec(ApiModel):
    """The model to serve: its public name and where its weights are (or a catalog model that says both)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [_cel("has(self.source) || has(self.catalog)", MSG_SOURCE_OR_CATALOG)]
        }
    )

    name: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="Name clients ask for (vLLM's served model name). Default: the catalog model id, else "
        "metadata.name.",
    )
    catalog: str | None = optional_text(
        128,
        r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        "A model id of the catalog (models.yaml, e.g. qwen3-8b): its source, engine, device count and "
        "tuned parameters for the chip (runtime_params.yaml) fill in whatever this spec does not set.",
    )
    source: ModelSource | None = Field(
        None, description="Where the model weights come from; exactly one kind. Optional with catalog."
    )

    @model_validator(mode="after")
    def _source_or_catalog(self) -> ModelSpec:
        if self.source is None and self.catalog is None:
            raise ValueError(MSG_SOURCE_OR_CATALOG)
        return self


class EnvVar(ApiModel):
    """One environment variable with a literal value (secrets go through apiKeySecretRef/tokenSecretRef)."""

    name: str = Field(pattern=ENV_NAME_PATTERN, max_length=256, description="Environment variable name.")
    value: str = Field("", description="Value (a string; YAML numbers must be quoted).")


class EngineSpec(ApiModel):
    """The inference engine and what is passed to it."""

    name: str = Field(
        "vllm",
        pattern=CHIP_NAME_PATTERN,
        max_length=63,
        description="Inference engine: the key of an engine block in devices.yaml (vllm, mindie, ...).",
    )
    image: str | None = Field(
        None, min_length=1, max_length=1024, description="Override of the image devices.yaml configures."
    )
    args: list[str] = list_field(
        "Extra engine arguments (strings), e.g. --max-model-len=8192. A flag given here replaces "
        "the operator's default for the same flag. Passed literally: $(VAR) is not expanded.",
    )
    env: list[EnvVar] = list_field(
        "Extra environment. Order of precedence: chip profile's static environment < engine "
        "defaults < these < device-visibility variables, which belong to the allocation and are refused here.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @field_validator("env")
    @classmethod
    def _unique_env(cls, env: list[EnvVar]) -> list[EnvVar]:
        names = [v.name for v in env]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(f"{', '.join(dups)} set more than once")
        return env


class DevicesSpec(ApiModel):
    """Which accelerators each replica gets."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("!has(self.indices) || size(self.indices) == self.count", MSG_INDICES_COUNT, ".indices")
            ]
        }
    )

    chip: str = Field(
        pattern=CHIP_NAME_PATTERN,
        max_length=63,
        description="Chip profile: a config_key or variant_key of devices.yaml, e.g. ascend-910b.",
    )
    count: int = Field(
        1,
        ge=1,
        le=MAX_DEVICES,
        description="Accelerators per node (per replica when nodes is 1); at most what one host of the chip "
        "has. The tensor parallel size defaults to it.",
    )
    nodes: int = Field(
        1,
        ge=1,
        le=MAX_NODES,
        description="Nodes per replica, each with `count` accelerators (default 1). Above 1 a replica is a "
        "LeaderWorkerSet group (sigs.k8s.io/lws, its controller must be installed): one leader pod, which "
        "serves the endpoint, and nodes-1 worker pods, each on its own node; the group is scheduled, "
        "restarted and scaled as a unit. The pipeline parallel size defaults to it. Kubernetes only.",
    )
    topology_key: str | None = optional_text(
        316,
        r"^([a-z0-9.-]+/)?[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$",
        "Multi-node only: a node label key (e.g. a rack or switch label, or "
        "topology.kubernetes.io/zone); all pods of one group land on nodes with the same value of it.",
    )
    indices: list[int] | None = Field(
        None,
        max_length=MAX_DEVICES,
        description="Docker mode only: the exact chip indices to use (distinct, >= 0); their number must "
        "equal count. Ignored on Kubernetes, where the device plugin chooses.",
        json_schema_extra={"x-kubernetes-list-type": "set", "items": {"type": "integer", "minimum": 0}},
    )

    @model_validator(mode="after")
    def _indices_match_count(self) -> DevicesSpec:
        if self.indices is not None:
            if len(self.indices) != self.count:
                raise ValueError(f"indices has {len(self.indices)} entries but count is {self.count}")
            if len(set(self.indices)) != len(self.indices):
                raise ValueError(f"indices {self.indices} repeat a device")
            if any(i < 0 for i in self.indices):
                raise ValueError("indices must be >= 0")
        return self


def _parallel_size(description: str) -> Any:
    """A parallel size: at most every accelerator of a replica (count x nodes at their maxima)."""
    return Field(None, ge=1, le=MAX_DEVICES * MAX_NODES, description=description)


class ParallelismSpec(ApiModel):
    """How the engine splits the model over a replica's accelerators (devices.count x devices.nodes)."""

    tensor: int | None = _parallel_size(
        "Tensor parallel size. Default: devices.count (or the accelerators of a replica divided "
        "by pipeline, when only pipeline is set).",
    )
    pipeline: int | None = _parallel_size(
        "Pipeline parallel size. Default: devices.nodes (or the accelerators of a replica divided "
        "by tensor, when only tensor is set).",
    )


def parallel_sizes(devices: DevicesSpec, parallelism: ParallelismSpec | None) -> tuple[int, int]:
    """(tensor, pipeline) for a replica: tensor within a node, pipeline across nodes unless set.

    The defaults follow vLLM's multi-node guidance (tensor parallel inside a node, pipeline parallel
    across nodes); either size may be given, and a size given alone fixes the other.
    """
    world = devices.count * devices.nodes
    tensor = parallelism.tensor if parallelism else None
    pipeline = parallelism.pipeline if parallelism else None
    if tensor is None and pipeline is None:
        return devices.count, devices.nodes
    if tensor is None:
        assert pipeline is not None
        return world // pipeline, pipeline
    if pipeline is None:
        return tensor, world // tensor
    return tensor, pipeline


class SecretKeyRef(ApiModel):
    """The Secret key holding the API key clients must present."""

    name: str = Field(min_length=1, max_length=253, description="Secret name in the same namespace.")
    key: str = Field("api-key", min_length=1, max_length=253, description="Key inside the Secret.")


class ProbeSpec(ApiModel):
    """Health probe tuning."""

    startup_timeout_seconds: int = Field(
        3600,
        ge=60,
        le=86400,
        description="How long the engine may take to load the model before it is restarted (default 1 h: "
        "large models take tens of minutes).",
    )


Quantity = int | str


def _check_quantities(values: dict[str, Quantity]) -> dict[str, Quantity]:
    for key, value in values.items():
        if not (key in CONTAINER_RESOURCES or key.startswith("hugepages-")):
            raise ValueError(f"{key}: {MSG_RESOURCE_KEYS}")
        if isinstance(value, str) and not re.match(QUANTITY_PATTERN, value):
            raise ValueError(f"{key}: {value!r} is not a quantity such as 500m, 4, 16Gi")
    return values


_RESOURCE_MAP_SCHEMA: JsonDict = {
    "maxProperties": 8,
    "x-kubernetes-validations": [
        _cel(
            "self.all(k, k in ['cpu', 'memory', 'ephemeral-storage'] || k.startsWith('hugepages-'))",
            MSG_RESOURCE_KEYS,
        )
    ],
}


class ResourceRequirements(ApiModel):
    """CPU and memory for the engine container; accelerators are requested from spec.devices."""

    limits: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Limits, e.g. {cpu: 16, memory: 128Gi}.",
        json_schema_extra=_RESOURCE_MAP_SCHEMA,
    )
    requests: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Requests, e.g. {cpu: 8, memory: 64Gi}.",
        json_schema_extra=_RESOURCE_MAP_SCHEMA,
    )

    @field_validator("limits", "requests")
    @classmethod
    def _quantities(cls, values: dict[str, Quantity]) -> dict[str, Quantity]:
        return _check_quantities(values)


class Toleration(ApiModel):
    """A Kubernetes toleration (core/v1 Toleration). Tolerating every taint (operator Exists without a
    key) or a control-plane taint is refused here and by the CRD (policy.py has the messages)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!(has(self.operator) && self.operator == 'Exists' && (!has(self.key) || self.key == ''))",
                    MSG_TOLERATE_ALL,
                ),
                _cel(f"!has(self.key) || !self.key.startsWith('{CONTROL_PLANE_PREFIX}')", MSG_CONTROL_PLANE),
            ]
        }
    )

    key: str | None = Field(None, max_length=316, description="Taint key; empty with operator Exists matches all.")
    operator: Literal["Exists", "Equal"] | None = Field(None, description="Exists or Equal (default Equal).")
    value: str | None = Field(None, max_length=63, description="Taint value for operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; empty matches all."
    )
    toleration_seconds: int | None = Field(
        None, description="NoExecute only: how long the pod stays bound after the taint appears."
    )

    @model_validator(mode="after")
    def _not_everything(self) -> Toleration:
        if self.operator == "Exists" and not self.key:
            raise ValueError(MSG_TOLERATE_ALL)
        if self.key and self.key.startswith(CONTROL_PLANE_PREFIX):
            raise ValueError(MSG_CONTROL_PLANE)
        return self


_WORLD_CEL = "self.devices.count * self.devices.nodes"
_PARALLELISM_CEL = (
    "!has(self.parallelism) || ("
    "has(self.parallelism.tensor) && has(self.parallelism.pipeline) "
    f"? self.parallelism.tensor * self.parallelism.pipeline == {_WORLD_CEL} "
    f": (has(self.parallelism.tensor) ? ({_WORLD_CEL}) % self.parallelism.tensor == 0 "
    f": (!has(self.parallelism.pipeline) || ({_WORLD_CEL}) % self.parallelism.pipeline == 0)))"
)


class ModelInstanceSpec(ApiModel):
    """The desired state: one model served by an engine on a chip profile, behind one endpoint."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(_PARALLELISM_CEL, MSG_PARALLELISM, ".parallelism"),
                _cel("!has(self.devices.topologyKey) || self.devices.nodes > 1", MSG_TOPOLOGY_SINGLE, ".devices"),
                # A transition rule (oldSelf): only the API server sees the previous object.
                _cel("(self.devices.nodes > 1) == (oldSelf.devices.nodes > 1)", MSG_NODES_SWITCH, ".devices.nodes"),
            ]
        }
    )

    model: ModelSpec = Field(description="The model to serve.")
    engine: EngineSpec = Field(default_factory=EngineSpec, description="The inference engine.")
    devices: DevicesSpec = Field(description="Which accelerators, how many per node and how many nodes per replica.")
    parallelism: ParallelismSpec | None = Field(
        None,
        description="Tensor and pipeline parallel sizes; their product is devices.count x devices.nodes. "
        "Default: tensor = devices.count, pipeline = devices.nodes.",
    )
    replicas: int = Field(1, ge=0, le=1000, description="Number of engine replicas (Kubernetes).")
    port: int = Field(8000, ge=1, le=65535, description="Service port (Kubernetes) or host port (Docker).")
    strategy: Literal["Recreate", "RollingUpdate"] = Field(
        "Recreate",
        description="Recreate (default) frees the devices before a new pod needs them; RollingUpdate "
        "needs spare accelerators.",
    )
    resources: ResourceRequirements | None = Field(None, description="CPU and memory for the engine container.")
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels the pods require, added to the chip profile's (which they may not contradict; "
        "control-plane labels are refused).",
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(f"self.all(k, !k.startsWith('{CONTROL_PLANE_PREFIX}'))", MSG_CONTROL_PLANE),
            ]
        },
    )

    @field_validator("node_selector")
    @classmethod
    def _no_control_plane(cls, selector: dict[str, str]) -> dict[str, str]:
        if any(k.startswith(CONTROL_PLANE_PREFIX) for k in selector):
            raise ValueError(MSG_CONTROL_PLANE)
        return selector

    tolerations: list[Toleration] = Field(default_factory=list, description="Added to the chip profile's.")
    affinity: Affinity | None = Field(
        None, description="Pod scheduling constraints (core/v1 Affinity: nodeAffinity, podAffinity, podAntiAffinity)."
    )
    api_key_secret_ref: SecretKeyRef | None = Field(
        None,
        description="Secret key holding the API key the engine requires from clients (key defaults to "
        "'api-key'); reaches the engine as an environment variable from the Secret, never inlined.",
    )
    probes: ProbeSpec = Field(default_factory=ProbeSpec, description="Health probe tuning.")

    @model_validator(mode="after")
    def _parallelism_covers_devices(self) -> ModelInstanceSpec:
        world = self.devices.count * self.devices.nodes
        p = self.parallelism
        if p is not None:
            tensor, pipeline = p.tensor, p.pipeline
            ok = (
                tensor * pipeline == world
                if tensor is not None and pipeline is not None
                else world % (tensor or pipeline or 1) == 0
            )
            if not ok:
                raise ValueError(
                    f"{MSG_PARALLELISM} (tensor={tensor}, pipeline={pipeline}, "
                    f"count x nodes = {self.devices.count} x {self.devices.nodes} = {world})"
                )
        if self.devices.topology_key is not None and self.devices.nodes == 1:
            raise ValueError(MSG_TOPOLOGY_SINGLE)
        return self

    @property
    def multi_node(self) -> bool:
        return self.devices.nodes > 1

    @property
    def parallel_sizes(self) -> tuple[int, int]:
        """(tensor, pipeline) parallel sizes after defaults."""
        return parallel_sizes(self.devices, self.parallelism)


class StatusModel(BaseModel):
    """Status is written by the operator; reading is lenient so an older operator's extra keys never
    make a valid spec unreadable."""

    model_config = ConfigDict(
        extra="ignore",
        populate_by_name=True,
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
    )


class Condition(StatusModel):
    """One aspect of the instance's state (metav1.Condition shape)."""

    type: str = Field(max_length=316, description="Condition type, e.g. Ready, Progressing, Degraded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str | None = Field(None, max_length=1024, description="CamelCase reason for the last transition.")
    message: str | None = Field(None, max_length=32768, description="Human-readable details.")
    last_transition_time: str | None = Field(
        None,
        description="When the status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation the condition was computed for."
    )


Phase = Literal["Pending", "Progressing", "Ready", "Degraded", "Failed"]


class ModelInstanceStatus(StatusModel):
    """The observed state, maintained by the operator."""

    phase: Phase | None = Field(
        None,
        description="Pending (nothing running yet), Progressing (rolling out or loading the model), "
        "Ready (all replicas serve), Degraded (some replicas serve), Failed (cannot run: see message).",
    )
    observed_generation: int | None = Field(None, ge=0, description="metadata.generation the operator last acted on.")
    ready_replicas: int | None = Field(None, ge=0, description="Replicas whose engine answers its readiness probe.")
    replicas: int | None = Field(
        None,
        ge=0,
        description="Engine pods that exist (the Deployment's status.replicas): the scale subresource's "
        "current replicas, which an HorizontalPodAutoscaler or KEDA compares with spec.replicas.",
    )
    selector: str | None = Field(
        None,
        description="Label selector of the engine pods (e.g. xw.dev/model-instance=qwen3-8b): the scale "
        "subresource's selector, which an autoscaler uses to find the pods whose metrics it reads.",
    )
    endpoint: str | None = Field(
        None, description="OpenAI-compatible base URL inside the cluster: http://<name>.<namespace>.svc:<port>/v1."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Progressing, Degraded with reasons.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    image: str | None = Field(None, description="Engine image the pods run.")
    message: str | None = Field(None, description="Why the instance is not Ready, in words a user can act on.")


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _dns_1035(cls, value: str) -> str:
        if len(value) > 63 or not re.match(DNS_LABEL_PATTERN, value):
            raise ValueError(f"{value!r}: {MSG_NAME}")
        return value


class ModelInstance(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    api_version: Literal["xw.dev/v1alpha1"] = Field("xw.dev/v1alpha1", alias="apiVersion")
    kind: Literal["ModelInstance"] = "ModelInstance"
    metadata: ObjectMeta
    spec: ModelInstanceSpec
    status: ModelInstanceStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def served_model_name(self) -> str:
        return self.spec.model.name or self.spec.model.catalog or self.metadata.name


def _name_of(doc: Any) -> str | None:
    """metadata.name when it is there and a string (the document may be anything)."""
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) and name else None


def parse_instance(doc: Any, source: str = "manifest") -> ModelInstance:
    """Validate one document (a dict, e.g. a custom resource body) into a ModelInstance.

    Any Python object is accepted and anything invalid becomes a ManifestError: the structural limits of
    :mod:`xw_operator.inputs` first (depth, size, key and value types), then the schema.
    """
    name = _name_of(doc)
    where = f"{source}: ModelInstance {name}" if name else source
    check_tree(doc, where, ManifestError)
    expected = f"expected a mapping (apiVersion, kind, metadata, spec), got {type(doc).__name__}"
    return validate_mapping(doc, where, ModelInstance, ManifestError, expected)


def parse_instances(text: str, source: str = "manifest") -> list[ModelInstance]:
    """All ModelInstance documents of a multi-document YAML text.

    Documents of other kinds are skipped (users keep Namespaces beside their instances); a wrong
    apiVersion for ModelInstance is an error, and so is a text with no ModelInstance at all.
    """
    docs = [d for d in load_yaml_documents(text, source, ManifestError) if d is not None]
    instances = []
    for number, doc in enumerate(docs, start=1):
        if not isinstance(doc, dict):
            raise ManifestError(f"{source}: document {number} is not a mapping")
        if doc.get("kind") != KIND:
            continue
        if doc.get("apiVersion") != API_VERSION:
            raise ManifestError(
                f"{source}: document {number}: apiVersion must be {API_VERSION}, got {doc.get('apiVersion')!r}"
            )
        instances.append(parse_instance(doc, f"{source} (document {number})"))
    if not instances:
        raise ManifestError(f"{source}: no {API_VERSION} {KIND} document found")
    names = [f"{i.metadata.namespace}/{i.name}" if i.metadata.namespace else i.name for i in instances]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ManifestError(f"{source}: ModelInstance name(s) {', '.join(dups)} appear more than once")
    return instances


def load_instances(path: str | Path) -> list[ModelInstance]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_instances(decode(data, str(path), ManifestError), source=str(path))
