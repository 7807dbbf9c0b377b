"""The validation layer every input passes (xw_operator.inputs): each documented limit, at its boundary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from xw_operator.devices import load_devices_config, packaged_devices_config_path, parse_devices_config
from xw_operator.errors import ConfigError, ManifestError
from xw_operator.inputs import MAX_DEPTH, MAX_DOCUMENT_BYTES, load_yaml
from xw_operator.instance import load_instances, parse_instance, parse_instances

HEAD = "apiVersion: xw.dev/v1alpha1\nkind: ModelInstance\nmetadata: {name: a}\n"


def _nested(levels: int) -> str:
    """A YAML mapping whose deepest value sits ``levels`` levels below the top."""
    return "".join("  " * i + f"k{i}:\n" for i in range(levels - 1)) + "  " * (levels - 1) + "leaf: 1\n"


def test_a_second_privileged_true_deep_in_devices_yaml_is_an_error_naming_both_lines() -> None:
    text = packaged_devices_config_path().read_text()
    marker = "privileged: false"
    assert marker in text
    indent = text[: text.index(marker)].rsplit("\n", 1)[1]
    line = text[: text.index(marker)].count("\n") + 1
    doubled = text.replace(marker, f"{marker}\n{indent}privileged: true", 1)
    with pytest.raises(ConfigError) as exc:
        parse_devices_config(doubled, "devices.yaml")
    assert str(exc.value) == (
        f"devices.yaml: line {line + 1} is not valid YAML: duplicate key 'privileged' (first set on line {line}); "
        "remove one of them"
    )


def test_merge_keys_and_anchors_of_the_shipped_file_still_load() -> None:
    load_devices_config(packaged_devices_config_path())  # uses &anchors and *aliases
    assert load_yaml("base: &b {x: 1}\nchild:\n  <<: *b\n  x: 2\n", "m.yaml", ConfigError)["child"] == {"x": 2}


def test_depth_limit_is_exactly_the_documented_one() -> None:
    assert load_yaml(_nested(MAX_DEPTH), "ok.yaml", ConfigError) is not None
    with pytest.raises(ConfigError, match=rf"deep\.yaml: line \d+ is not valid YAML: nested deeper than {MAX_DEPTH}"):
        load_yaml(_nested(MAX_DEPTH + 1), "deep.yaml", ConfigError)
    with pytest.raises(ManifestError, match="nested deeper than"):
        parse_instances("a: " + "[" * 5000 + "]" * 5000, "flow.yaml")


def test_cr_body_nested_10000_levels_is_a_manifest_error() -> None:
    doc: dict[str, Any] = {"apiVersion": "xw.dev/v1alpha1", "kind": "ModelInstance", "metadata": {"name": "a"}}
    node = doc.setdefault("spec", {})
    for _ in range(10_000):
        node = node.setdefault("affinity", {})
    with pytest.raises(ManifestError, match=r"^cr: ModelInstance a: spec\.affinity\.affinity.*nested deeper than 32"):
        parse_instance(doc, "cr")


@pytest.mark.parametrize("doc", [5, None, "x", [], {"metadata": []}, {"metadata": {"name": {}}}, {1: 2}, {"a": {1}}])
def test_parse_instance_takes_any_python_object(doc: Any) -> None:
    with pytest.raises(ManifestError):
        parse_instance(doc, "cr")


def test_alias_bomb_is_refused_quickly() -> None:
    rows = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        rows.append(f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [" + ", ".join([f"*{prev}"] * 10) + "]")
    with pytest.raises(ConfigError, match="more than 100000 values"):
        parse_devices_config("\n".join(rows), "bomb.yaml")


def test_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(HEAD + "# " + "x" * MAX_DOCUMENT_BYTES + "\n")
    with pytest.raises(ManifestError, match=rf"big\.yaml: \d+ bytes is larger than the limit of {MAX_DOCUMENT_BYTES}"):
        load_instances(path)


def test_non_utf8_names_line_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes((HEAD + "spec: {model: {name: caf\xe9}}\n").encode("latin-1"))
    with pytest.raises(ManifestError, match=r"latin1\.yaml: line 4 \(byte \d+\) is not UTF-8; save the file as UTF-8"):
        load_instances(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("spec: {1: x}", "spec: key 1 must be a string"),
        ("spec: {x: 2024-01-01}", "spec.x: 2024-01-01 was read as a date; quote it"),
        ("spec: !!set {a, b}", "spec: a value of type set is not allowed"),
        ("spec: !!binary aGk=", "spec: a value of type bytes is not allowed"),
        ("a: " + "9" * 5000, "is not valid YAML: ValueError"),
        ("a: 2024-13-45", "is not valid YAML: ValueError"),
        ("{[1]: 2}", "found an unhashable key"),
        ("a: 1\n---\nb: 2", "expected one YAML document, found 2"),
    ],
)
def test_values_json_cannot_carry_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_yaml(text, "t.yaml", ConfigError)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_a_chip_key_no_model_instance_can_name_is_a_config_error() -> None:
    text = packaged_devices_config_path().read_text().replace("config_key: nvidia-t4", "config_key: NVIDIA_T4")
    with pytest.raises(ConfigError, match=r"chip_models\[0\]\.config_key: String should match pattern"):
        parse_devices_config(text, "devices.yaml")
