"""The ModelInstance API (``xw.dev/v1alpha1``): what users write, for Kubernetes and Docker mode alike.

A ModelInstance author picks a chip profile *by name* and a device count. There is deliberately no field
for host paths (other than the model source), device nodes, privilege or capabilities: those come only
from devices.yaml, which cluster administrators control.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from xw_operator.errors import ManifestError
from xw_operator.validation import describe

GROUP = "xw.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelInstance"
PLURAL = "modelinstances"
CHIP_NAME_PATTERN = r"^[a-z0-9][a-z0-9.-]*$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
    )


class PvcSource(ApiModel):
    claim_name: str = Field(min_length=1, description="Name of a PersistentVolumeClaim in the same namespace.")
    sub_path: str | None = Field(None, description="Directory inside the volume that holds the model.")


class HuggingFaceSource(ApiModel):
    repo: str = Field(min_length=1, description="Hugging Face repository id, e.g. Qwen/Qwen3-8B.")
    revision: str | None = Field(None, description="Branch, tag or commit; the repository default if unset.")


class ModelSource(ApiModel):
    """Where the weights come from. Exactly one of hostPath, pvc, huggingFace."""

    host_path: str | None = Field(
        None,
        pattern=r"^/",
        description="Absolute directory on the node holding the weights; mounted read-only. "
        "Administrators can disable this source.",
    )
    pvc: PvcSource | None = Field(None, description="A PersistentVolumeClaim holding the weights.")
    hugging_face: HuggingFaceSource | None = Field(
        None, description="Download from Hugging Face at start-up (the engine does the download)."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        given = [
            n for n, v in (("hostPath", self.host_path), ("pvc", self.pvc), ("huggingFace", self.hugging_face)) if v
        ]
        if len(given) != 1:
            raise ValueError(
                f"exactly one of hostPath, pvc, huggingFace must be set (got {', '.join(given) or 'none'})"
            )
        return self

    @property
    def kind(self) -> Literal["hostPath", "pvc", "huggingFace"]:
        if self.host_path:
            return "hostPath"
        return "pvc" if self.pvc else "huggingFace"


class ModelSpec(ApiModel):
    name: str | None = Field(
        None, min_length=1, description="Name clients ask for (vLLM's served model name). Default: metadata.name."
    )
    source: ModelSource = Field(description="Where the model weights come from.")


class EnvVar(ApiModel):
    name: str = Field(pattern=ENV_NAME_PATTERN, description="Environment variable name.")
    value: str = Field("", description="Value (a string).")


class EngineSpec(ApiModel):
    name: str = Field(
        "vllm",
        pattern=CHIP_NAME_PATTERN,
        description="Inference engine: the key of an engine block in devices.yaml (vllm, mindie, ...).",
    )
    image: str | None = Field(None, min_length=1, description="Override of the image devices.yaml configures.")
    args: list[str] = Field(
        default_factory=list,
        description="Extra engine arguments, e.g. --max-model-len=8192. A flag given here replaces the "
        "operator's default for the same flag.",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        description="Extra environment. Overrides the chip profile's static environment; the "
        "device-visibility variables are owned by the allocation and cannot be set here.",
    )


class DevicesSpec(ApiModel):
    chip: str = Field(
        pattern=CHIP_NAME_PATTERN,
        max_length=63,
        description="Chip profile: a config_key or variant_key of devices.yaml, e.g. ascend-910b.",
    )
    count: int = Field(1, ge=1, le=1024, description="Accelerators per replica; tensor parallel size defaults to it.")
    indices: list[int] | None = Field(
        None,
        description="Docker mode only: the exact chip indices to use; their number must equal count.",
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


class SecretKeyRef(ApiModel):
    name: str = Field(min_length=1, description="Secret name in the same namespace.")
    key: str = Field("api-key", min_length=1, description="Key inside the Secret.")


class ProbeSpec(ApiModel):
    startup_timeout_seconds: int = Field(
        3600,
        ge=60,
        description="How long the engine may take to load the model before it is restarted (default 1 h: "
        "large models take tens of minutes).",
    )


class ResourceRequirements(ApiModel):
    limits: dict[str, int | str] = Field(default_factory=dict, description="cpu/memory limits.")
    requests: dict[str, int | str] = Field(default_factory=dict, description="cpu/memory requests.")


class ModelInstanceSpec(ApiModel):
    model: ModelSpec = Field(description="The model to serve.")
    engine: EngineSpec = Field(default_factory=EngineSpec, description="The inference engine.")
    devices: DevicesSpec = Field(description="Which accelerators and how many per replica.")
    replicas: int = Field(1, ge=0, le=1000, description="Number of engine replicas (Kubernetes).")
    port: int = Field(8000, ge=1, le=65535, description="Service port (Kubernetes) or host port (Docker).")
    strategy: Literal["Recreate", "RollingUpdate"] = Field(
        "Recreate",
        description="Recreate (default) frees the devices before a new pod needs them; RollingUpdate "
        "needs spare accelerators.",
    )
    resources: ResourceRequirements | None = Field(None, description="CPU and memory for the engine container.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Added to the chip profile's.")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="Added to the chip profile's.")
    affinity: dict[str, Any] | None = Field(None, description="Pod affinity rules.")
    api_key_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret holding the API key the engine requires from clients."
    )
    probes: ProbeSpec = Field(default_factory=ProbeSpec, description="Health probe tuning.")


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63)
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ModelInstance(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    api_version: Literal["xw.dev/v1alpha1"] = Field("xw.dev/v1alpha1", alias="apiVersion")
    kind: Literal["ModelInstance"] = "ModelInstance"
    metadata: ObjectMeta
    spec: ModelInstanceSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def served_model_name(self) -> str:
        return self.spec.model.name or self.metadata.name


def parse_instance(doc: Any, source: str = "manifest") -> ModelInstance:
    """Validate one document (a dict, e.g. a custom resource body) into a ModelInstance."""
    try:
        return ModelInstance.model_validate(doc)
    except ValidationError as exc:
        name = doc.get("metadata", {}).get("name") if isinstance(doc, dict) else None
        where = f"{source}: ModelInstance {name}" if name else source
        raise ManifestError(f"{where}: {describe(exc)}") from None


def parse_instances(text: str, source: str = "manifest") -> list[ModelInstance]:
    """All ModelInstance documents of a multi-document YAML text.

    Documents of other kinds are skipped (users keep Namespaces beside their instances); a wrong
    apiVersion for ModelInstance is an error, and so is a text with no ModelInstance at all.
    """
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ManifestError(f"{source}:{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
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
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_instances(text, source=str(path))
