"""Code sandboxes and code engines come from entry-point groups (``xw_operator.sandboxes``,
``xw_operator.engines``): ours and other packages'."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from builders import instance
from xw_operator.code_sandboxes import CambriconMluSandbox
from xw_operator.devices import DevicesConfig
from xw_operator.engines import (
    ENGINE_ENTRY_POINT_GROUP,
    EngineContext,
    build_command,
    installed_code_engines,
    known_engines,
    load_code_engines,
)
from xw_operator.errors import ConfigError
from xw_operator.plan import resolve
from xw_operator.sandbox import ENTRY_POINT_GROUP, load_registry, select_sandbox


def install_dist(root: Path, name: str, module: str, source: str, entry: str, group: str = ENTRY_POINT_GROUP) -> None:
    """A minimal installed distribution (a module plus its .dist-info) that importlib.metadata finds."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{entry}\n")


ACME = """
    from dataclasses import dataclass

    from xw_operator.code_sandboxes import CambriconMluSandbox


    @dataclass(frozen=True)
    class AcmeSandbox(CambriconMluSandbox):
        chip_key: str = "acme-x1"
        chips_per_host: int = 4

        def default_image(self, arch: str) -> str | None:
            return "acme/vllm:1" if arch == "amd64" else None
"""


def test_shipped_sandbox_is_registered_through_the_entry_point() -> None:
    found = load_registry().find("cambricon-mlu370", "vllm")
    assert isinstance(found, CambriconMluSandbox)


def test_sandbox_from_another_distribution_is_found_and_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shipped_config: DevicesConfig
) -> None:
    install_dist(tmp_path, "acme-xw", "acme_xw_sandbox", ACME, "acme-x1-vllm = acme_xw_sandbox:AcmeSandbox")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_registry()
    assert registry.chip_keys() == {"acme-x1", "cambricon-mlu370"}
    assert type(select_sandbox(shipped_config, "acme-x1", "vllm", registry)).__name__ == "AcmeSandbox"
    plan = resolve(instance(chip="acme-x1", count=2), shipped_config, registry=registry).bind()
    assert plan.image == "acme/vllm:1"
    assert "/dev/cambricon_dev1" in [n.host for n in plan.device_nodes]


@pytest.mark.parametrize(
    ("source", "entry", "message"),
    [
        ("raise ImportError('no driver')\n", "bad = acme_broken:Nope", r"bad = acme_broken:Nope .*failed to load: "),
        ("def make():\n    return 42\n", "odd = acme_broken:make", r"odd = acme_broken:make .*returned int, not a"),
    ],
)
def test_broken_entry_point_is_a_config_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, entry: str, message: str
) -> None:
    monkeypatch.delitem(sys.modules, "acme_broken", raising=False)
    install_dist(tmp_path, "acme-broken", "acme_broken", source, entry)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=message):
        load_registry()


def test_sandbox_module_does_not_import_the_shipped_sandboxes() -> None:
    """No import cycle: registration is by entry point, not by importing code_sandboxes for its side effect."""
    code = "import sys, xw_operator.sandbox; print('xw_operator.code_sandboxes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


ACME_ENGINE = """
    from xw_operator.engines import CodeEngine, EngineCommand


    def make_engine():
        return CodeEngine("acme-serve", lambda c: EngineCommand(("acme-serve",), ("--tp", str(c.device_count))))
"""


@pytest.fixture
def fresh_code_engines() -> Iterator[None]:
    installed_code_engines.cache_clear()
    yield
    installed_code_engines.cache_clear()


def test_code_engine_from_another_distribution_is_found_and_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_code_engines: None
) -> None:
    install_dist(
        tmp_path,
        "acme-engine",
        "acme_xw_engine",
        ACME_ENGINE,
        "acme = acme_xw_engine:make_engine",
        ENGINE_ENTRY_POINT_GROUP,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert set(load_code_engines()) == {"acme-serve"}
    assert "acme-serve" in known_engines()
    cmd = build_command("acme-serve", EngineContext("q", "/mnt/model", None, 4, ()))
    assert (cmd.command, cmd.args) == (("acme-serve",), ("--tp", "4"))


def test_broken_code_engine_is_a_config_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_code_engines: None
) -> None:
    monkeypatch.delitem(sys.modules, "acme_bad_engine", raising=False)
    install_dist(
        tmp_path, "acme-bad", "acme_bad_engine", "X = 1\n", "bad = acme_bad_engine:X", ENGINE_ENTRY_POINT_GROUP
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"code engine entry point bad = acme_bad_engine:X .*failed to load"):
        load_code_engines()
