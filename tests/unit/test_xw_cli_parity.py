"""Parity with xw-cli: every shipped xw-cli config, rendered by us, gives the Docker parameters xw-cli's
own code gives, except the differences README lists on purpose ("Differences from xw-cli").

The reference below is an independent re-statement of xw-cli's Go code (TsingmaoAI/xw-cli at
0732580d8fb3, ``internal/runtime/{vllm,mindie,omni-infer,mlguider}-docker/runtime.go``, ``ext_sandbox.go``,
``docker_base.go``, ``params_utils.go``, ``config/sandbox_config.go``, ``runtime/manager.go``), written
from reading it, over the raw YAML as Go's loader sees it. It shares no code with the operator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from xw_operator.devices import DevicesConfig, load_devices_config
from xw_operator.instance import parse_instance
from xw_operator.plan import resolve
from xw_operator.render_docker import render_docker

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "xw-cli"
VERSIONS = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
GIB = 1024**3
MODEL_HOST_PATH = "/data/models/m"
WORK_HOST_DIR = "/var/lib/xw/work/m"
XW_CLI_DATA_DIR = "/root/.xw/data"


# ------------------------------------------------------------------------------- xw-cli, restated


def _go_env_name(key: str) -> str:
    """params_utils.go convertToEnvVarName."""
    out = ""
    for i, ch in enumerate(key):
        if ch == "-":
            out += "_"
        elif "A" <= ch <= "Z":
            if i > 0 and key[i - 1] not in "-_":
                out += "_"
            out += ch
        else:
            out += ch
    return out.upper()


def _writable_mindie(path: str) -> bool:
    return path in ("/var/log/npu/slog", "/var/log/npu/profiling", "/var/log/npu/dump", "/usr/slog", "/root/.cache")


def xw_cli_params(
    raw: dict[str, Any],
    chip_key: str,
    engine: str,
    indices: list[int],
    arch: str,
    *,
    model_name: str,
    model_id: str,
    template: list[str] | None = None,
) -> dict[str, Any]:
    chip = next(c for v in raw["vendors"] for c in v["chip_models"] if c["config_key"] == chip_key)
    ext = chip["ext_sandboxes"]
    block = ext[engine]
    # sandbox_config.go: Go type assertions silently drop values of other types.
    env_cfg = {k: v for k, v in (block.get("environment") or {}).items() if isinstance(v, str)}
    privileged = block.get("privileged") is True
    shm_gb = block.get("shm_size_gb") if type(block.get("shm_size_gb")) is int else 0
    caps = [c for c in block.get("capabilities") or [] if isinstance(c, str)]
    devices = [*(ext.get("devices") or []), *(block.get("devices") or [])]
    volumes = [*(ext.get("volumes") or []), *(block.get("volumes") or [])]
    runtime = block.get("runtime") or ext.get("runtime") or ""
    # ext_sandbox.go PrepareEnvironment
    env = dict(env_cfg)
    if block.get("device_env"):
        env[block["device_env"]] = ",".join(str(i) for i in indices)
    # manager.go: image= leaves the template for ExtraConfig; docker_base.go ApplyTemplateParams never
    # replaces a variable already set.
    image_override = None
    for param in template or []:
        if param.startswith("image="):
            image_override = param.removeprefix("image=")
            continue
        key, _, value = param.partition("=")
        name = _go_env_name(key.strip())
        env.setdefault(name, value.strip())
    n = str(len(indices))  # devices given: TP = WORLD_SIZE = device count (manager.go Create)
    work = f"{XW_CLI_DATA_DIR}/tmp/{model_id}"
    if engine == "vllm":
        env.update(TENSOR_PARALLEL=n, WORLD_SIZE=n, MODEL_PATH="/mnt/model", MODEL_NAME=model_name)
    elif engine == "mindie":
        env.update(MODEL_PATH="/mnt/model", MODEL_NAME=model_name, SERVER_PORT="8000", WORLD_SIZE=n, TENSOR_PARALLEL=n)
    elif engine == "omni-infer":
        env.update(MODEL_PATH="/mnt/model", MODEL_NAME=model_name, TENSOR_PARALLEL_SIZE=n, SERVER_PORT="8000")
    elif engine == "mlguider":
        env.update(
            ORIGIN_MODEL_PATH=MODEL_HOST_PATH,
            MODEL_PATH=work,
            MAX_MODEL_LEN="8192",
            TENSOR_PARALLEL=n,
            WORLD_SIZE=n,
            API_PORT="8000",
            MODEL_NAME=model_name,
        )
    # GetDeviceMounts: a trailing number means an indexed node.
    nodes = []
    for path in devices:
        m = re.search(r"(\d+)$", path)
        if m is None or int(m.group(1)) in indices:
            nodes.append(path)
    # GetAdditionalMounts: host -> container, split on the first colon.
    extra: dict[str, str] = {}
    for v in volumes:
        host, sep, container = v.partition(":")
        extra[host] = container if sep else host
    mounts: dict[str, tuple[str, bool]] = {}  # container -> (host, read_only)
    if engine == "mlguider":
        mounts[MODEL_HOST_PATH] = (MODEL_HOST_PATH, True)
        mounts[work] = (work, False)
    else:
        mounts["/mnt/model"] = (MODEL_HOST_PATH, True)
    for host, container in extra.items():
        if engine in ("vllm", "mlguider"):
            ro = container != "/root/.cache"
        elif engine == "mindie":
            ro = not _writable_mindie(container)
        else:  # omni-infer looks for ":ro" on the host part, which the split above never leaves there
            ro = host.endswith(":ro")
        mounts[container] = (host, ro)
    configured = (chip.get("runtime_images") or {}).get(engine, {}).get(arch)
    image = configured if engine == "omni-infer" or not image_override else image_override
    return {
        "image": image,
        "env": env,
        "devices": nodes,
        "mounts": mounts,
        "privileged": True if engine == "mlguider" else privileged,
        "cap_add": caps if engine == "omni-infer" else [],
        "runtime": "" if engine == "mlguider" else (runtime or "runc"),
        "shm": shm_gb * GIB if shm_gb > 0 else 16 * GIB,
    }


# ------------------------------------------------------------------------------------ the matrix


@dataclass(frozen=True)
class Case:
    version: str
    chip: str
    engine: str
    count: int
    arch: str
    model: str | None  # a catalog model with a runtime_params template for chip x engine, or None

    def __str__(self) -> str:
        return f"{self.version}-{self.chip}-{self.engine}-x{self.count}-{self.arch}-{self.model or 'plain'}"


@cache
def _raw(version: str, name: str) -> Any:
    return yaml.safe_load((FIXTURES / version / name).read_text(encoding="utf-8"))


def _cases() -> list[Case]:
    cases = []
    for version in VERSIONS:
        raw, models, params = (
            _raw(version, "devices.yaml"),
            _raw(version, "models.yaml"),
            _raw(version, "runtime_params.yaml"),
        )
        names = {t["name"] for t in params["templates"]}
        for vendor in raw["vendors"]:
            for chip in vendor["chip_models"]:
                ext = chip.get("ext_sandboxes") or {}
                capacity = len({i for b in (chip.get("topology") or {}).get("boxes", []) for i in b["devices"]}) or 8
                for engine, images in (chip.get("runtime_images") or {}).items():
                    if engine not in ext:
                        continue
                    recipe = next(
                        (
                            m["model_id"]
                            for m in models["models"]
                            if f"{chip['config_key']}_{m['model_id']}_{engine}" in names
                            and f"{engine}:docker" in m["supported_devices"].get(chip["config_key"], [])
                        ),
                        None,
                    )
                    for arch, image in images.items():
                        if image in (None, "", "NONE"):
                            continue
                        for count in (c for c in (1, 2, 4, 8) if c <= capacity):
                            for model in (None, recipe) if recipe else (None,):
                                cases.append(Case(version, chip["config_key"], engine, count, arch, model))
    return cases


CASES = _cases()


def _ours(case: Case, config: DevicesConfig, indices: list[int]) -> dict[str, Any]:
    model: dict[str, Any] = {"source": {"hostPath": MODEL_HOST_PATH}}
    model.update({"catalog": case.model} if case.model else {"name": "m"})
    instance = parse_instance(
        {
            "apiVersion": "xw.dev/v1alpha1",
            "kind": "ModelInstance",
            "metadata": {"name": "m"},
            "spec": {
                "model": model,
                "engine": {"name": case.engine},
                "devices": {"chip": case.chip, "count": case.count},
            },
        }
    )
    plan = resolve(instance, config, arch=case.arch, backend="docker").bind(indices)
    return render_docker(plan, server_name="s", host_port=18000, work_host_dir=WORK_HOST_DIR)


@pytest.fixture(scope="module")
def configs() -> dict[str, DevicesConfig]:
    return {v: load_devices_config(FIXTURES / v / "devices.yaml") for v in VERSIONS}


def test_every_version_chip_engine_count_and_arch_is_covered() -> None:
    assert VERSIONS == ["0.0.1", "0.0.2", "0.0.3", "0.0.4", "0.0.5"]
    engines = {c.engine for c in CASES}
    assert engines == {"vllm", "mindie", "omni-infer", "mlguider"}
    assert {c.chip for c in CASES if c.version == "0.0.5"} == {
        "ascend-910b",
        "ascend-910c",
        "ascend-310p",
        "metax-c550",
        "intel-gpu",
    }
    assert any(c.model for c in CASES if c.engine == "mlguider")
    assert len(CASES) > 150


@pytest.mark.parametrize("case", CASES, ids=str)
def test_docker_parameters_equal_xw_cli(case: Case, configs: dict[str, DevicesConfig]) -> None:
    config = configs[case.version]
    raw = _raw(case.version, "devices.yaml")
    capacity = config.find_chip(case.chip).chip.device_capacity or 8  # type: ignore[union-attr]
    indices = list(range(capacity - case.count, capacity))  # the last chips: index matching matters
    template: list[str] | None = None
    envs: dict[str, Any] = {}
    model_name = model_id = "m"
    if case.model:
        entry = next(
            t
            for t in _raw(case.version, "runtime_params.yaml")["templates"]
            if t["name"] == f"{case.chip}_{case.model}_{case.engine}"
        )
        template, envs, model_name, model_id = (
            entry.get("params") or [],
            entry.get("envs") or {},
            case.model,
            case.model,
        )
    ref = xw_cli_params(
        raw, case.chip, case.engine, indices, case.arch, model_name=model_name, model_id=model_id, template=template
    )
    ours = _ours(case, config, indices)

    # --- identical ---
    assert ours["image"] == ref["image"]
    assert ours["devices"] == [f"{d}:{d}:rwm" for d in dict.fromkeys(ref["devices"])]
    assert ours["privileged"] is ref["privileged"]
    assert ours["shm_size"] == ref["shm"]
    assert ours["runtime"] == (ref["runtime"] or "runc")  # Docker's default runtime is runc
    assert ours["ports"] == {"8000/tcp": ("127.0.0.1", 18000)}

    # --- environment: equal, with the listed differences ---
    expected_env = dict(ref["env"])
    if case.engine == "mlguider":
        # Difference 4: the weights are at /mnt/model and the work copy at /mnt/work (a per-instance dir);
        # MAX_MODEL_LEN follows the recipe's max_model_len (xw-cli overwrites it with 8192).
        expected_env["ORIGIN_MODEL_PATH"] = "/mnt/model"
        expected_env["MODEL_PATH"] = "/mnt/work"
        tuned = dict(p.split("=", 1) for p in template or [])
        expected_env["MAX_MODEL_LEN"] = tuned.get("max_model_len", "8192").strip()
    for key, value in envs.items():  # difference 5: runtime_params.yaml `envs` are applied
        expected_env.setdefault(key, str(value))
    assert ours["environment"] == expected_env

    # --- volumes: the same mounts; modes by the one read-only rule (difference 1) ---
    ours_mounts = {}
    for text in ours["volumes"]:
        host, container, mode = text.rsplit(":", 2)
        ours_mounts[container] = (host, mode == "ro")
    expected_mounts = dict(ref["mounts"])
    if case.engine == "mlguider":
        expected_mounts.pop(MODEL_HOST_PATH)
        expected_mounts.pop(f"{XW_CLI_DATA_DIR}/tmp/{model_id}")
        expected_mounts["/mnt/model"] = (MODEL_HOST_PATH, True)
        expected_mounts["/mnt/work"] = (WORK_HOST_DIR, False)
    assert {c: h for c, (h, _) in ours_mounts.items()} == {c: h for c, (h, _) in expected_mounts.items()}
    for container, (_, read_only) in ours_mounts.items():
        is_cache = container.rstrip("/").endswith(".cache") or container == "/mnt/work"
        assert read_only is not is_cache, container
        if case.engine != "omni-infer":  # xw-cli's omni-infer mounts everything writable (difference 1)
            assert read_only is expected_mounts[container][1], container

    # --- capabilities: the sandbox's, for every engine (difference 2; xw-cli adds them for omni-infer only) ---
    sandbox_caps = [c.upper().removeprefix("CAP_") for c in raw_caps(raw, case.chip, case.engine)]
    assert ours["cap_add"] == list(dict.fromkeys(sandbox_caps))
    if ref["cap_add"]:
        assert ours["cap_add"] == ref["cap_add"]


def raw_caps(raw: dict[str, Any], chip_key: str, engine: str) -> list[str]:
    chip = next(c for v in raw["vendors"] for c in v["chip_models"] if c["config_key"] == chip_key)
    return list(chip["ext_sandboxes"][engine].get("capabilities") or [])


def test_tuned_parameters_reach_an_xw_cli_vllm_image_as_variables(configs: dict[str, DevicesConfig]) -> None:
    """The recipe qwen3-8b on ascend-910b: GPU_MEMORY_UTILIZATION, MAX_MODEL_LEN, EXTRA_ARGS as xw-cli sets them."""
    case = Case("0.0.5", "ascend-910b", "vllm", 1, "arm64", "qwen3-8b")
    env = _ours(case, configs["0.0.5"], [0])["environment"]
    assert env["GPU_MEMORY_UTILIZATION"] == "0.9"
    assert env["MAX_MODEL_LEN"] == "32768"
    assert env["EXTRA_ARGS"] == "--enable-auto-tool-choice --tool-call-parser hermes --reasoning-parser qwen3"
    assert env["MODEL_NAME"] == "qwen3-8b" and env["TENSOR_PARALLEL"] == "1"
