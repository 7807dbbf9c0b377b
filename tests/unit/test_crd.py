"""The ModelInstance CRD: generated from the API models, committed unchanged, structural and well-formed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from xw_operator.cli import main
from xw_operator.crd import CRD_FILE, SchemaError, crd_manifest, crd_yaml, openapi_schema
from xw_operator.instance import ModelInstanceSpec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return crd_manifest()


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    versions = crd["spec"]["versions"]
    assert len(versions) == 1
    return dict(versions[0])


@pytest.fixture(scope="module")
def spec_schema(version: dict[str, Any]) -> dict[str, Any]:
    return dict(version["schema"]["openAPIV3Schema"]["properties"]["spec"])


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_committed_crd_matches_the_generated_one() -> None:
    committed = (REPO / CRD_FILE).read_text(encoding="utf-8")
    assert committed == crd_yaml(), f"{CRD_FILE} drifted from the API models; regenerate: xw crds -o {CRD_FILE}"


def test_xw_crds_prints_the_generated_crd(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["crds"])
    assert result.exit_code == 0, result.output
    assert result.stdout == crd_yaml()
    out = tmp_path / "crd.yaml"
    assert CliRunner().invoke(main, ["crds", "-o", str(out)]).exit_code == 0
    assert out.read_text() == crd_yaml()


def test_names_scope_and_version(crd: dict[str, Any], version: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == "modelinstances.xw.dev"
    spec = crd["spec"]
    assert spec["group"] == "xw.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "ModelInstance"
    assert spec["names"]["plural"] == "modelinstances"
    assert spec["names"]["shortNames"] == ["mi"]
    assert version["name"] == "v1alpha1"
    assert version["served"] is True and version["storage"] is True
    assert version["subresources"] == {
        "status": {},
        # kubectl scale / HPA / KEDA: current replicas are the pods that exist, the selector finds them.
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }


def test_scale_paths_exist_in_the_schema(version: dict[str, Any]) -> None:
    props = version["schema"]["openAPIV3Schema"]["properties"]
    for path in version["subresources"]["scale"].values():
        top, field = path.lstrip(".").split(".")
        assert field in props[top]["properties"], f"{path} is not in the CRD schema"
    assert props["status"]["properties"]["selector"]["type"] == "string"


def test_printer_columns(version: dict[str, Any]) -> None:
    columns = [(c["name"], c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert columns == [
        ("Chip", "string", ".spec.devices.chip"),
        ("Devices", "integer", ".spec.devices.count"),
        ("Nodes", "integer", ".spec.devices.nodes"),  # -o wide only (priority 1)
        ("Replicas", "integer", ".spec.replicas"),
        ("Ready", "integer", ".status.readyReplicas"),
        ("Phase", "string", ".status.phase"),
        ("Endpoint", "string", ".status.endpoint"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]


def test_schema_is_structural(version: dict[str, Any]) -> None:
    root = version["schema"]["openAPIV3Schema"]
    for path, node in walk(root):
        for banned in ("$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title", "nullable"):
            assert banned not in node, f"{path}: {banned}"
        assert node.get("additionalProperties") is not False, path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path}: no type"
        assert not ("properties" in node and "additionalProperties" in node), path


def test_no_unknown_fields_are_kept_anywhere(version: dict[str, Any]) -> None:
    """spec.affinity is typed (core/v1 Affinity): the API server refuses or prunes what it does not know."""
    root = version["schema"]["openAPIV3Schema"]
    preserved = [p for p, n in walk(root) if n.get("x-kubernetes-preserve-unknown-fields")]
    assert preserved == []
    affinity = root["properties"]["spec"]["properties"]["affinity"]["properties"]
    term = affinity["podAntiAffinity"]["properties"]["requiredDuringSchedulingIgnoredDuringExecution"]["items"]
    assert term["required"] == ["topologyKey"]
    node = affinity["nodeAffinity"]["properties"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert node["properties"]["nodeSelectorTerms"]["items"]["properties"]["matchExpressions"]["items"]["properties"][
        "operator"
    ]["enum"] == ["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]


def test_crd_fits_client_side_apply() -> None:
    """kubectl apply (client-side) stores the whole object in an annotation limited to 256 KiB."""
    assert len(crd_yaml().encode()) < 128 * 1024


def test_every_spec_and_status_field_is_described(version: dict[str, Any]) -> None:
    root = version["schema"]["openAPIV3Schema"]
    for section in ("spec", "status"):
        for path, node in walk(root["properties"][section], f".{section}"):
            if path.endswith("{}") or (path.endswith("[]") and node.get("type") != "object"):
                continue
            assert node.get("description"), f"{path} has no description for kubectl explain"


def test_validation_rules(spec_schema: dict[str, Any]) -> None:
    props = spec_schema["properties"]
    source = props["model"]["properties"]["source"]
    assert source["x-kubernetes-validations"] == [
        {
            "rule": "[has(self.hostPath), has(self.pvc), has(self.huggingFace)].filter(x, x).size() == 1",
            "message": "exactly one of hostPath, pvc, huggingFace must be set",
        }
    ]
    devices = props["devices"]["properties"]
    assert devices["count"]["minimum"] == 1
    assert devices["chip"]["pattern"] == "^[a-z0-9][a-z0-9.-]*$"
    assert devices["indices"]["x-kubernetes-list-type"] == "set"
    assert "size(self.indices) == self.count" in props["devices"]["x-kubernetes-validations"][0]["rule"]
    assert props["replicas"]["minimum"] == 0
    assert (props["port"]["minimum"], props["port"]["maximum"]) == (1, 65535)
    assert props["engine"]["properties"]["args"]["items"] == {"type": "string"}
    assert spec_schema["required"] == ["model", "devices"]


def test_defaults_match_the_python_model(spec_schema: dict[str, Any]) -> None:
    props = spec_schema["properties"]
    defaults = ModelInstanceSpec.model_validate({"model": {"source": {"hostPath": "/m"}}, "devices": {"chip": "x"}})
    assert props["replicas"]["default"] == defaults.replicas
    assert props["port"]["default"] == defaults.port
    assert props["strategy"]["default"] == defaults.strategy
    assert props["devices"]["properties"]["count"]["default"] == defaults.devices.count
    assert props["engine"]["properties"]["name"]["default"] == defaults.engine.name


def test_quantities_are_int_or_string(spec_schema: dict[str, Any]) -> None:
    limits = spec_schema["properties"]["resources"]["properties"]["limits"]
    assert limits["additionalProperties"] == {"x-kubernetes-int-or-string": True}


def test_status_conditions_are_a_map_keyed_by_type(version: dict[str, Any]) -> None:
    conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert conditions["items"]["required"] == ["type", "status"]


def test_crd_is_small() -> None:
    assert len(crd_yaml().encode()) < 256 * 1024  # client-side apply stores it in an annotation


def test_committed_file_is_valid_yaml_of_one_document() -> None:
    docs = list(yaml.safe_load_all((REPO / CRD_FILE).read_text()))
    assert len(docs) == 1 and docs[0]["kind"] == "CustomResourceDefinition"


def test_unsupported_union_is_a_clear_error() -> None:
    from pydantic import BaseModel

    class Bad(BaseModel):
        value: int | list[str]

    with pytest.raises(SchemaError, match=r"Bad\.value: a union of 2 types has no structural form"):
        openapi_schema(Bad)
