"""The settings object: every environment variable xw reads, parsed once, bad values named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import builders
from xw_operator.cli import main
from xw_operator.errors import ConfigError
from xw_operator.settings import Settings, markdown_table


def test_defaults_without_environment() -> None:
    s = Settings.from_env({})
    assert (s.port_range, s.state_dir, s.sysfs_root, s.devices_config) == (
        (18000, 18999),
        Path("~/.xw"),
        Path("/sys"),
        None,
    )
    assert (s.config_poll_seconds, s.max_workers, s.pod_name) == (2.0, 32, None)


def test_values_are_parsed_and_empty_means_unset() -> None:
    s = Settings.from_env({"XW_PORT_RANGE": "20000-20010", "XW_MAX_WORKERS": "3", "XW_STATE_DIR": "", "OTHER": "x"})
    assert (s.port_range, s.max_workers, s.state_dir) == ((20000, 20010), 3, Path("~/.xw"))


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"XW_PORT_RANGE": "20010-20000"}, "environment: XW_PORT_RANGE: '20010-20000' is not a range of ports"),
        ({"XW_PORT_RANGE": "lots"}, "environment: XW_PORT_RANGE: 'lots' is not LOW-HIGH"),
        ({"XW_MAX_WORKERS": "0"}, "environment: XW_MAX_WORKERS: Input should be greater than or equal to 1"),
        ({"XW_CONFIG_POLL_SECONDS": "soon"}, "environment: XW_CONFIG_POLL_SECONDS: Input should be a valid number"),
    ],
)
def test_bad_value_is_one_line_naming_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env(environ)


def test_cli_reports_a_bad_variable_with_exit_2(tmp_path: Path) -> None:
    """Settings are read as a whole, so any command names a bad variable (not only the one that uses it)."""
    path = builders.write_yaml(tmp_path / "mi.yaml", builders.instance_doc())
    result = CliRunner().invoke(main, ["render", "-f", str(path)], env={"XW_MAX_WORKERS": "many"})
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        "error: environment: XW_MAX_WORKERS: Input should be a valid integer, unable to parse string as an integer"
    ]


def test_readme_documents_every_variable() -> None:
    readme = (builders.REPO / "README.md").read_text(encoding="utf-8")
    assert markdown_table() in readme, "README's environment table differs from xw_operator.settings.markdown_table()"


def test_no_module_reads_the_environment_directly() -> None:
    package = builders.REPO / "operator" / "xw_operator"
    readers = [
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if p.name != "settings.py" and re.search(r"os\.environ|getenv\(", p.read_text(encoding="utf-8"))
    ]
    assert readers == [], "read environment variables through xw_operator.settings (add a field there)"
