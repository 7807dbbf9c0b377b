"""Property tests: mutated ModelInstances and devices.yaml documents never crash anything.

Starting from the shipped samples and configs, hypothesis changes types at any depth, deletes, adds and
duplicates keys, nests deeply, inserts odd unicode and damages the YAML text, then pushes the result
through the in-process API (parse, resolve, render both backends), the CR-body path (``parse_instance`` on
a dict) and the CLI (``xw render`` via click's runner; a few real subprocesses). The property: success, or
the project's bad-input error (CLI: exit 2 with one ``error:`` line on stderr) -- never a traceback.

Profiles (``XW_HYPOTHESIS_PROFILE``): ``fast`` (default, deterministic, a few hundred examples per test:
``make test``) and ``fuzz`` (10,000 per test, random: ``make fuzz``, not run by CI).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from xw_operator.cli import main, render_instance_docker, render_instance_kubernetes
from xw_operator.devices import DevicesConfig, load_devices_config, packaged_devices_config_path, parse_devices_config
from xw_operator.errors import XwError
from xw_operator.instance import ModelInstance, parse_instance, parse_instances

REPO = Path(__file__).resolve().parents[2]
XW = str(Path(sys.executable).with_name("xw"))

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("fast", max_examples=150, derandomize=True, database=None, **_COMMON)
settings.register_profile("fuzz", max_examples=10_000, **_COMMON)
PROFILE = os.environ.get("XW_HYPOTHESIS_PROFILE", "fast")
settings.load_profile(PROFILE)

RICH_INSTANCE: dict[str, Any] = {
    "apiVersion": "xw.dev/v1alpha1",
    "kind": "ModelInstance",
    "metadata": {"name": "rich", "namespace": "llm", "labels": {"team": "a"}},
    "spec": {
        "model": {"name": "org/model", "source": {"huggingFace": {"repo": "org/m", "tokenSecretRef": {"name": "hf"}}}},
        "engine": {"name": "vllm", "args": ["--max-model-len=8192"], "env": [{"name": "A", "value": "1"}]},
        "devices": {"chip": "nvidia-t4", "count": 2, "indices": [0, 1]},
        "replicas": 2,
        "port": 8000,
        "strategy": "RollingUpdate",
        "resources": {"limits": {"cpu": 4, "memory": "16Gi"}, "requests": {"cpu": "500m"}},
        "nodeSelector": {"zone": "a"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "k", "operator": "In", "values": ["v"]}]}]
                },
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 5, "preference": {"matchExpressions": [{"key": "g", "operator": "Gt", "values": ["3"]}]}}
                ],
            },
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 10,
                        "podAffinityTerm": {
                            "labelSelector": {"matchLabels": {"app": "x"}},
                            "topologyKey": "kubernetes.io/hostname",
                        },
                    }
                ]
            },
        },
        "apiKeySecretRef": {"name": "keys"},
        "probes": {"startupTimeoutSeconds": 600},
    },
}


def _samples() -> list[dict[str, Any]]:
    docs = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "configs" / "samples").glob("*.yaml"))]
    return [*docs, RICH_INSTANCE]


INSTANCE_SEEDS = _samples()
CONFIG_SEEDS = [
    yaml.safe_load(packaged_devices_config_path().read_text()),
    yaml.safe_load((REPO / "tests" / "fixtures" / "seed-devices.yaml").read_text()),
]
SHIPPED = load_devices_config(packaged_devices_config_path())

ODD_TEXT = st.sampled_from(
    ["", " ", "..", "/", "../../etc", "/dev/", "NONE", "Exists", "In", "0x19e5", "1e400", "x" * 300, "é", "\u2028",
     "\u202e", "\x85", "\t", "a\nb", "日本", "🤖", "null", "true", "-1", "kubernetes.io/hostname"]
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    ODD_TEXT,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _nest(value: Any, levels: int, as_list: bool) -> Any:
    for _ in range(levels):
        value = [value] if as_list else {"k": value}
    return value


@st.composite
def mutated(draw: st.DrawFn, seeds: list[dict[str, Any]]) -> Any:
    """A seed document with 1-4 structural mutations at random paths."""
    doc: Any = copy.deepcopy(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "delete", "add", "nest", "type", "duplicate"]))
        target = _get(doc, path)
        if op == "replace" or not path:
            new = draw(VALUES)
            if not path:
                doc = new if draw(st.booleans()) else doc
                continue
        elif op == "delete":
            parent = _get(doc, path[:-1])
            del parent[path[-1]]
            continue
        elif op == "add":
            if isinstance(target, dict):
                target[draw(st.sampled_from(["privileged", "extra", "x", "metadata"]))] = draw(VALUES)
            elif isinstance(target, list):
                target.append(draw(VALUES))
            continue
        elif op == "nest":
            new = _nest(target, draw(st.integers(1, 45)), draw(st.booleans()))
        elif op == "type":  # the same content as another container type / scalar
            if isinstance(target, dict):
                new = list(target.values()) if draw(st.booleans()) else list(target.items())
            elif isinstance(target, list):
                new = {str(i): v for i, v in enumerate(target)} if draw(st.booleans()) else draw(SCALARS)
            else:
                new = draw(st.sampled_from([[target], {"v": target}, str(target), 5, None]))
        else:  # duplicate a list element
            parent = _get(doc, path[:-1])
            if isinstance(parent, list):
                parent.append(copy.deepcopy(target))
            continue
        _get(doc, path[:-1])[path[-1]] = new
    return doc


@st.composite
def mutated_text(draw: st.DrawFn, seeds: list[dict[str, Any]]) -> str:
    """YAML text of a mutated document, sometimes damaged further line by line (duplicate keys, odd unicode)."""
    doc = draw(mutated(seeds))
    try:
        text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    except (yaml.YAMLError, RecursionError):
        text = "{}"
    lines = text.splitlines()
    for _ in range(draw(st.integers(0, 3))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["dup", "del", "char", "truncate", "anchor"]))
        if op == "dup":  # the same key twice in one mapping
            lines.insert(i, lines[i])
        elif op == "del":
            del lines[i]
        elif op == "char":
            pos = draw(st.integers(0, len(lines[i])))
            odd = draw(st.sampled_from(["\u2028", "\x85", "\ufeff", "🤖", ":", "&a", "*a", "{", "-", "\t"]))
            lines[i] = lines[i][:pos] + odd + lines[i][pos:]
        elif op == "truncate":
            lines = lines[: i + 1]
        else:
            lines.append("bomb: &b [" + ",".join(["*b"] if draw(st.booleans()) else ["1"] * 9) + "]")
    return "\n".join(lines) + "\n"


ARCH = st.sampled_from([None, "amd64", "arm64"])


def _render_all(instances: list[ModelInstance], config: DevicesConfig, arch: str | None) -> None:
    for instance in instances:
        with contextlib.suppress(XwError):
            render_instance_kubernetes(instance, config, arch)
        with contextlib.suppress(XwError):
            render_instance_docker(instance, config, arch, "fuzz")


@given(mutated(INSTANCE_SEEDS), ARCH)
def test_any_cr_body_is_a_manifest_error_or_renders(doc: Any, arch: str | None) -> None:
    """The operator's path: a dict from the API server, any shape."""
    try:
        instance = parse_instance(doc, "cr")
    except XwError:
        event("refused: ManifestError")
        return
    event("valid: rendered")
    _render_all([instance], SHIPPED, arch)


@given(mutated_text(INSTANCE_SEEDS), ARCH)
def test_any_manifest_text_is_a_manifest_error_or_renders(text: str, arch: str | None) -> None:
    try:
        instances = parse_instances(text, "mi.yaml")
    except XwError:
        event("refused: ManifestError")
        return
    event("valid: rendered")
    _render_all(instances, SHIPPED, arch)


def _instances_for(config: DevicesConfig, engine: str) -> list[ModelInstance]:
    out = []
    for key in config.chip_keys:
        doc = copy.deepcopy(RICH_INSTANCE)
        doc["spec"]["devices"] = {"chip": key, "count": 1}
        doc["spec"]["engine"] = {"name": engine}
        doc["spec"]["model"]["source"] = {"hostPath": "/models/m"}
        with contextlib.suppress(XwError):  # e.g. an engine name no ModelInstance can write
            out.append(parse_instance(doc))
    return out


@given(mutated_text(CONFIG_SEEDS), ARCH, st.sampled_from(["vllm", "mindie", "omni-infer"]))
def test_any_devices_yaml_is_a_config_error_or_renders(text: str, arch: str | None, engine: str) -> None:
    try:
        config = parse_devices_config(text, "devices.yaml")
    except XwError:
        event("refused: ConfigError")
        return
    event("valid: rendered every chip")
    _render_all(_instances_for(config, engine), config, arch)


def _assert_clean_exit(result: Any) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code in (0, 2), (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr
    if result.exit_code == 2:
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert result.stdout == ""


@given(
    mutated_text(INSTANCE_SEEDS),
    mutated_text(CONFIG_SEEDS),
    st.booleans(),
    st.sampled_from(["kubernetes", "docker"]),
    st.binary(max_size=3),
)
@settings(max_examples=60 if PROFILE == "fast" else settings().max_examples)  # each parses devices.yaml twice
def test_xw_render_exits_0_or_2_with_one_line(
    tmp_path_factory: pytest.TempPathFactory, mi: str, cfg: str, own_cfg: bool, backend: str, junk: bytes
) -> None:
    tmp = tmp_path_factory.mktemp("render")
    mi_path, cfg_path = tmp / "mi.yaml", tmp / "devices.yaml"
    data = mi.encode()
    if junk and junk[0] % 4 == 0:  # sometimes not UTF-8 at all
        data = data[: len(data) // 2] + b"\xff\xfe" + junk + data[len(data) // 2 :]
    mi_path.write_bytes(data)
    cfg_path.write_text(cfg)
    args = ["render", "-f", str(mi_path), "--backend", backend]
    if own_cfg:
        args += ["--devices-config", str(cfg_path)]
    result = CliRunner().invoke(main, args)
    event(f"exit {result.exit_code}")
    _assert_clean_exit(result)


# Real processes, a handful: the crashes the issue reported, as a user would hit them.
REPORTED = {
    "metadata-list": "apiVersion: xw.dev/v1alpha1\nkind: ModelInstance\nmetadata: []\nspec: {}\n",
    "affinity-string": (
        "apiVersion: xw.dev/v1alpha1\nkind: ModelInstance\nmetadata: {name: a}\nspec:\n"
        "  model: {source: {hostPath: /m}}\n  devices: {chip: nvidia-t4, count: 1}\n"
        "  affinity: {podAntiAffinity: {requiredDuringSchedulingIgnoredDuringExecution: oops}}\n"
    ),
    "deep": "a: " + "[" * 1000 + "]" * 1000 + "\n",
    "duplicate": "apiVersion: xw.dev/v1alpha1\nkind: ModelInstance\nmetadata: {name: a}\nmetadata: {name: b}\n",
    "not-utf8": "apiVersion: xw.dev/v1alpha1\nkind: ModelInstance\nmetadata: {name: \udcff}\n",
}


@pytest.mark.parametrize("case", sorted(REPORTED))
def test_reported_crashes_exit_2_in_a_real_process(tmp_path: Path, case: str) -> None:
    path = tmp_path / "mi.yaml"
    path.write_bytes(REPORTED[case].encode("utf-8", errors="surrogateescape"))
    result = subprocess.run([XW, "render", "-f", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: "), result.stderr
    assert str(path) in result.stderr


def test_device_entry_that_is_a_number_is_a_config_error(tmp_path: Path) -> None:
    doc = copy.deepcopy(CONFIG_SEEDS[0])
    doc["vendors"][0]["chip_models"][0]["ext_sandboxes"]["devices"].append(5)
    path = tmp_path / "devices.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(XwError, match=r"ext_sandboxes\.devices\[\d+\]: .*device path must be a string"):
        load_devices_config(path)


def test_math_nan_is_a_clean_error() -> None:
    doc = copy.deepcopy(RICH_INSTANCE)
    doc["spec"]["replicas"] = math.nan
    with pytest.raises(XwError, match=r"spec\.replicas"):
        parse_instance(doc)
