"""The one place tests build their inputs: ModelInstance documents and devices.yaml documents.

Every suite (unit, Kubernetes, Docker) uses these, so a change to the API shape is made here once.
devices.yaml edits go through parsed data (:func:`devices_doc`, :func:`chip_doc`, :func:`devices_text`),
never through text markers that break when the file is reformatted.

Defaults: chip ``ascend-910b``, count 4, name ``demo``, a hostPath source ``/data/models/<name>``, no
engine block (the API's default engine, vLLM). ``count=None`` leaves the count to the API default.
A suite with other habitual values binds them once with :func:`functools.partial`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from xw_operator.devices import DevicesConfig, parse_devices_config
from xw_operator.instance import API_VERSION, KIND, ModelInstance, parse_instance

REPO = Path(__file__).resolve().parents[1]
SHIPPED_DEVICES = REPO / "configs" / "devices.yaml"
SEED_DEVICES = REPO / "tests" / "fixtures" / "seed-devices.yaml"
SAMPLES = REPO / "configs" / "samples"


def spec_doc(
    chip: str = "ascend-910b",
    count: int | None = 4,
    *,
    source: dict[str, Any] | None = None,
    engine: dict[str, Any] | None = None,
    model_name: str | None = None,
    indices: list[int] | None = None,
    name: str = "demo",
    **spec: Any,
) -> dict[str, Any]:
    """A ModelInstance ``spec``; keyword arguments are further spec fields (camelCase) and win."""
    model: dict[str, Any] = {"source": source or {"hostPath": f"/data/models/{name}"}}
    if model_name is not None:
        model["name"] = model_name
    devices: dict[str, Any] = {"chip": chip}
    if count is not None:
        devices["count"] = count
    if indices is not None:
        devices["indices"] = indices
    out: dict[str, Any] = {"model": model, "devices": devices}
    if engine is not None:
        out["engine"] = engine
    return {**out, **spec}


def document(
    name: str,
    spec: dict[str, Any],
    *,
    namespace: str | None = None,
    uid: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ModelInstance document around ``spec``, as a user or the API server would hold it."""
    meta: dict[str, Any] = {"name": name, **(metadata or {})}
    if namespace:
        meta["namespace"] = namespace
    if uid:
        meta["uid"] = uid
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": spec}


def instance_doc(
    chip: str = "ascend-910b",
    count: int | None = 4,
    *,
    name: str = "demo",
    namespace: str | None = None,
    uid: str | None = None,
    metadata: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A ModelInstance document: :func:`spec_doc` wrapped by :func:`document`."""
    body = spec_doc(chip, count, name=name, **spec)
    return document(name, body, namespace=namespace, uid=uid, metadata=metadata)


def instance(chip: str = "ascend-910b", count: int | None = 4, **kwargs: Any) -> ModelInstance:
    """The parsed ModelInstance of :func:`instance_doc` with the same arguments."""
    return parse_instance(instance_doc(chip, count, **kwargs))


def write_yaml(path: Path, *docs: dict[str, Any]) -> Path:
    """Write documents as (multi-document) YAML, the way users hand them to ``xw`` or kubectl."""
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    return path


def devices_doc(path: Path = SHIPPED_DEVICES) -> dict[str, Any]:
    """A devices.yaml file as data, free to modify."""
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return copy.deepcopy(data)


def chip_doc(devices: dict[str, Any], key: str) -> dict[str, Any]:
    """The ``chip_models`` entry whose ``config_key`` is ``key`` (the same dict: edits change ``devices``)."""
    for vendor in devices["vendors"]:
        for chip in vendor["chip_models"]:
            if chip["config_key"] == key:
                found: dict[str, Any] = chip
                return found
    raise KeyError(f"no chip model {key!r} in the devices document")


def devices_text(devices: dict[str, Any]) -> str:
    return yaml.safe_dump(devices, sort_keys=False)


def devices_config(devices: dict[str, Any]) -> DevicesConfig:
    return parse_devices_config(devices_text(devices), source="test devices.yaml")
